package controlapi

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestRollbackService: a service never updated has no previous spec
// (FailedPrecondition); after an update, a rollback swaps the specs back,
// bumps spec_version and marks the rollout ROLLBACK_STARTED; an update
// that changes the task spec starts a rollout (UPDATING) and one that
// does not leaves the status alone (a new update config resumes a paused
// one); --force
// (task.force_update) is a change.
func TestRollbackService(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	spec := func(image string) *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Name: "web", Replicas: 2,
			Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: image}}}
	}
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec("demo:1")})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetService().GetMeta().GetId()
	if r := created.GetService().GetSpec().GetRollback(); r.GetParallelism() != 1 || r.GetFailureAction() != "pause" || r.GetMonitorMs() != 5000 {
		t.Fatalf("rollback defaults: %v", r)
	}
	_, err = s.RollbackService(ctx, &shoalv1.RollbackServiceRequest{ServiceId: "web"})
	wantCode(t, err, codes.FailedPrecondition, "service web has no previous spec")
	_, err = s.RollbackService(ctx, &shoalv1.RollbackServiceRequest{})
	wantCode(t, err, codes.InvalidArgument, "service_id: required")
	_, err = s.RollbackService(ctx, &shoalv1.RollbackServiceRequest{ServiceId: "nope"})
	wantCode(t, err, codes.NotFound, "")

	get := func() *shoalv1.Service {
		v, _ := raftstore.Get[*shoalv1.Service](st.View(), id)
		return v
	}
	update := func(sp *shoalv1.ServiceSpec) *shoalv1.Service {
		t.Helper()
		r, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, IgnoreVersion: true, Spec: sp})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetService()
	}
	up := update(spec("demo:2"))
	if up.GetSpecVersion() != 2 || up.GetUpdateStatus().GetState() != shoalv1.UpdateState_UPDATE_STATE_UPDATING || up.GetUpdateStatus().GetStartedAt() == nil {
		t.Fatalf("after an image change: spec_version %d, status %v", up.GetSpecVersion(), up.GetUpdateStatus())
	}
	// The orchestrator pauses it; a scale leaves the status alone.
	paused := &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_PAUSED, Message: "update paused: x"}
	if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
		v := proto.Clone(get()).(*shoalv1.Service)
		v.UpdateStatus = paused
		return tx.Update(v)
	}); err != nil {
		t.Fatal(err)
	}
	scaled := spec("demo:2")
	scaled.Replicas = 3
	if got := update(scaled); got.GetUpdateStatus().GetState() != shoalv1.UpdateState_UPDATE_STATE_PAUSED || got.GetSpecVersion() != 2 {
		t.Fatalf("a scale changed the rollout: spec_version %d, status %v", got.GetSpecVersion(), got.GetUpdateStatus())
	}
	// A change of the update config resumes a paused rollout (same
	// spec_version).
	resumed := spec("demo:2")
	resumed.Replicas = 3
	resumed.Update = &shoalv1.UpdateConfig{Parallelism: 1, FailureAction: "continue"}
	if got := update(resumed); got.GetUpdateStatus().GetState() != shoalv1.UpdateState_UPDATE_STATE_UPDATING || got.GetSpecVersion() != 2 {
		t.Fatalf("a config change did not resume the paused rollout: spec_version %d, status %v", got.GetSpecVersion(), got.GetUpdateStatus())
	}
	forced := spec("demo:2")
	forced.Update = resumed.Update
	forced.Replicas = 3
	forced.Task.ForceUpdate = 1
	if got := update(forced); got.GetUpdateStatus().GetState() != shoalv1.UpdateState_UPDATE_STATE_UPDATING || got.GetSpecVersion() != 3 {
		t.Fatalf("--force: spec_version %d, status %v", got.GetSpecVersion(), got.GetUpdateStatus())
	}

	rb, err := s.RollbackService(ctx, &shoalv1.RollbackServiceRequest{ServiceId: "web"})
	if err != nil {
		t.Fatal(err)
	}
	v := get()
	if v.GetSpec().GetTask().GetForceUpdate() != 0 || v.GetPreviousSpec().GetTask().GetForceUpdate() != 1 {
		t.Fatalf("specs not swapped: %v / %v", v.GetSpec(), v.GetPreviousSpec())
	}
	if v.GetSpecVersion() != 4 || v.GetUpdateStatus().GetState() != shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_STARTED {
		t.Fatalf("after rollback: spec_version %d, status %v", v.GetSpecVersion(), v.GetUpdateStatus())
	}
	if rb.GetService().GetMeta().GetVersion() != v.GetMeta().GetVersion() {
		t.Fatalf("response version %d, stored %d", rb.GetService().GetMeta().GetVersion(), v.GetMeta().GetVersion())
	}
}
