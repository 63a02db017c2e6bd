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

// A change that leaves the task alone (a scale, a new update config to
// resume a paused rollout) while a rollout is under way keeps the task the
// rollout started from as the previous one: a rollback then still undoes
// the rollout (and keeps the scale). Before, previous_spec became the
// rollout's own spec, and a rollback (manual, or the failure action's)
// went "back" to the very image that was failing.
func TestRollbackAfterScaleMidRollout(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	spec := func(image string, replicas int64) *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Name: "web", Replicas: replicas,
			Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: image}}}
	}
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec("demo:1", 3)})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetService().GetMeta().GetId()
	update := func(sp *shoalv1.ServiceSpec) *shoalv1.Service {
		t.Helper()
		r, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, IgnoreVersion: true, Spec: sp})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetService()
	}
	update(spec("demo:2", 3)) // UPDATING
	got := update(spec("demo:2", 5))
	if img := got.GetPreviousSpec().GetTask().GetContainer().GetImage(); img != "demo:1" || got.GetPreviousSpec().GetReplicas() != 5 {
		t.Fatalf("scale mid-rollout: previous spec image %q replicas %d, want demo:1 (the rollout's start) and 5", img, got.GetPreviousSpec().GetReplicas())
	}
	rb, err := s.RollbackService(ctx, &shoalv1.RollbackServiceRequest{ServiceId: id})
	if err != nil {
		t.Fatal(err)
	}
	if sp := rb.GetService().GetSpec(); sp.GetTask().GetContainer().GetImage() != "demo:1" || sp.GetReplicas() != 5 || rb.GetService().GetSpecVersion() != 3 {
		t.Fatalf("rollback after the scale: image %q replicas %d spec_version %d; want demo:1, 5, 3",
			sp.GetTask().GetContainer().GetImage(), sp.GetReplicas(), rb.GetService().GetSpecVersion())
	}

	// Once a rollout completed, a scale is an update like any other (as
	// in swarm mode): previous_spec is the spec it replaced.
	if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
		v, _ := raftstore.Get[*shoalv1.Service](tx, id)
		v = proto.Clone(v).(*shoalv1.Service)
		v.UpdateStatus = &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_COMPLETED}
		return tx.Update(v)
	}); err != nil {
		t.Fatal(err)
	}
	got = update(spec("demo:1", 4))
	if img := got.GetPreviousSpec().GetTask().GetContainer().GetImage(); img != "demo:1" || got.GetPreviousSpec().GetReplicas() != 5 {
		t.Fatalf("scale after the rollout: previous spec %q/%d, want demo:1/5", img, got.GetPreviousSpec().GetReplicas())
	}
}
