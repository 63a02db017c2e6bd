package controlapi

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func int64p(v int64) *int64 { return &v }

// normalized is a stored service without what two stores tell apart by
// its random id, time or raft index alone: meta, the rollout's and the
// job run's clock readings.
func normalized(svc *shoalv1.Service) *shoalv1.Service {
	c := proto.Clone(svc).(*shoalv1.Service)
	c.Meta = nil
	if c.UpdateStatus != nil {
		c.UpdateStatus.StartedAt, c.UpdateStatus.CompletedAt = nil, nil
	}
	if c.JobStatus != nil {
		c.JobStatus.LastExecution, c.JobStatus.NextExecution = nil, nil
	}
	return c
}

// patchTestSpec is the spec the table's services start from.
func patchTestSpec(mode shoalv1.ServiceMode) *shoalv1.ServiceSpec {
	spec := &shoalv1.ServiceSpec{Name: "web", Mode: mode, Labels: map[string]string{"keep": "1", "gone": "2"},
		Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest"}}}
	if mode == shoalv1.ServiceMode_SERVICE_MODE_REPLICATED {
		spec.Replicas = 2
	}
	if mode == shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB {
		spec.Job = &shoalv1.JobConfig{Completions: 2}
	}
	return spec
}

// TestPatchServiceIsUpdateServiceOfThePatchedSpec: for every patch, the
// service stored after PatchService, its watch event and the checked-task
// memo are what an UpdateService sending the stored spec with the patch
// applied leaves (on a second store in the same state), times and raft
// indexes aside.
func TestPatchServiceIsUpdateServiceOfThePatchedSpec(t *testing.T) {
	ctx := context.Background()
	type state struct {
		name string
		mode shoalv1.ServiceMode
		// tweak changes the created service in the store (nil: as created).
		tweak func(svc *shoalv1.Service)
		// memo: the service's version stays in the memo (false: another
		// leader's write, as after a failover).
		memo bool
	}
	states := []state{
		{"replicated, as created", shoalv1.ServiceMode_SERVICE_MODE_REPLICATED, nil, true},
		{"replicated, unknown to the memo", shoalv1.ServiceMode_SERVICE_MODE_REPLICATED, nil, false},
		{"replicated, rollout under way", shoalv1.ServiceMode_SERVICE_MODE_REPLICATED, func(svc *shoalv1.Service) {
			prev := proto.Clone(svc.GetSpec()).(*shoalv1.ServiceSpec)
			prev.Task.Container.Image = "demo:old"
			svc.PreviousSpec, svc.SpecVersion = prev, 2
			svc.UpdateStatus = &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_UPDATING, Message: "update in progress"}
		}, true},
		{"replicated, rollout paused", shoalv1.ServiceMode_SERVICE_MODE_REPLICATED, func(svc *shoalv1.Service) {
			svc.UpdateStatus = &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_PAUSED, Failed: 1}
		}, true},
		{"global", shoalv1.ServiceMode_SERVICE_MODE_GLOBAL, nil, true},
		{"one-off job", shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, nil, true},
	}
	patches := []*shoalv1.PatchServiceRequest{
		{LabelsAdd: map[string]string{"bench": strings.Repeat("x", 100)}},
		{LabelsAdd: map[string]string{"keep": "changed"}, LabelsRm: []string{"gone", "absent"}},
		{LabelsRm: []string{"keep", "gone"}},
		{Replicas: int64p(6)},
		{Replicas: int64p(0), LabelsAdd: map[string]string{"scaled": "down"}},
	}
	for _, st0 := range states {
		for _, p := range patches {
			if p.Replicas != nil && st0.mode != shoalv1.ServiceMode_SERVICE_MODE_REPLICATED {
				continue // refused: TestPatchServiceRefuses
			}
			name := st0.name + "/" + strings.TrimSpace(strings.ReplaceAll(p.String(), "x", ""))
			var got [2]*shoalv1.Service
			var events [2]*shoalv1.WatchEvent
			var memo [2][2]bool
			for i := range 2 {
				s, st := newServer(t)
				created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: patchTestSpec(st0.mode)})
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				id := created.GetService().GetMeta().GetId()
				if st0.tweak != nil || !st0.memo {
					if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
						cur, _ := raftstore.Get[*shoalv1.Service](tx, id)
						c := proto.Clone(cur).(*shoalv1.Service)
						if st0.tweak != nil {
							st0.tweak(c)
						}
						return tx.Update(c)
					}); err != nil {
						t.Fatal(err)
					}
				}
				cur, _ := raftstore.Get[*shoalv1.Service](st.View(), id)
				if st0.memo {
					s.checked.add(id, cur.GetMeta().GetVersion())
				}
				sub, err := st.Watch(ctx, 0, raftstore.KindService)
				if err != nil {
					t.Fatal(err)
				}
				var version uint64
				if i == 0 {
					req := proto.Clone(p).(*shoalv1.PatchServiceRequest)
					req.ServiceId, req.Version = id, cur.GetMeta().GetVersion()
					resp, err := s.PatchService(ctx, req)
					if err != nil {
						t.Fatalf("%s: patch: %v", name, err)
					}
					version = resp.GetService().GetMeta().GetVersion()
				} else {
					spec := proto.Clone(cur.GetSpec()).(*shoalv1.ServiceSpec)
					if spec.Labels == nil {
						spec.Labels = map[string]string{}
					}
					for _, k := range p.GetLabelsRm() {
						delete(spec.Labels, k)
					}
					for k, v := range p.GetLabelsAdd() {
						spec.Labels[k] = v
					}
					if p.Replicas != nil {
						spec.Replicas = p.GetReplicas()
					}
					resp, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, Version: cur.GetMeta().GetVersion(), Spec: spec})
					if err != nil {
						t.Fatalf("%s: update: %v", name, err)
					}
					version = resp.GetService().GetMeta().GetVersion()
				}
				events[i] = <-sub.C()
				sub.Close()
				stored, _ := raftstore.Get[*shoalv1.Service](st.View(), id)
				got[i] = stored
				enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(stored.GetSpec().GetTask())
				if err != nil {
					t.Fatal(err)
				}
				known, same := s.checked.sameEncoding(id, version, enc)
				memo[i] = [2]bool{s.checked.has(id, version), known && same}
				if events[i].GetIndex() != version {
					t.Fatalf("%s: event at %d, write at %d", name, events[i].GetIndex(), version)
				}
			}
			if !proto.Equal(normalized(got[0]), normalized(got[1])) {
				t.Errorf("%s: patched\n%v\nupdated\n%v", name, normalized(got[0]), normalized(got[1]))
			}
			if events[0].GetAction() != events[1].GetAction() || !proto.Equal(normalized(events[0].GetObject().GetService()), normalized(events[1].GetObject().GetService())) {
				t.Errorf("%s: events differ:\n%v\n%v", name, events[0], events[1])
			}
			if memo[0] != memo[1] {
				t.Errorf("%s: memo after the patch (checked, encoding) %v, after the update %v", name, memo[0], memo[1])
			}
		}
	}
}

// TestPatchServiceRefuses: what is wrong is named by its field path, and
// nothing is written.
func TestPatchServiceRefuses(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	web, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: patchTestSpec(shoalv1.ServiceMode_SERVICE_MODE_REPLICATED)})
	if err != nil {
		t.Fatal(err)
	}
	glob := patchTestSpec(shoalv1.ServiceMode_SERVICE_MODE_GLOBAL)
	glob.Name = "glob"
	if _, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: glob}); err != nil {
		t.Fatal(err)
	}
	id, version := web.GetService().GetMeta().GetId(), web.GetService().GetMeta().GetVersion()
	many := map[string]string{}
	for i := range 63 {
		many["k"+strings.Repeat("x", i)] = "v"
	}
	for _, tc := range []struct {
		name string
		req  *shoalv1.PatchServiceRequest
		code codes.Code
		want string
	}{
		{"empty", &shoalv1.PatchServiceRequest{ServiceId: id}, codes.InvalidArgument, "changes nothing"},
		{"no service", &shoalv1.PatchServiceRequest{Replicas: int64p(1)}, codes.InvalidArgument, "service_id: required"},
		{"bad key", &shoalv1.PatchServiceRequest{ServiceId: id, LabelsAdd: map[string]string{"-x": "1"}}, codes.InvalidArgument, `labels_add["-x"]: invalid label key`},
		{"long value", &shoalv1.PatchServiceRequest{ServiceId: id, LabelsAdd: map[string]string{"k": strings.Repeat("v", 5000)}}, codes.InvalidArgument, `labels_add["k"]: value is 5000 bytes long`},
		{"add and remove", &shoalv1.PatchServiceRequest{ServiceId: id, LabelsAdd: map[string]string{"k": "v"}, LabelsRm: []string{"a", "k"}}, codes.InvalidArgument, `labels_rm[1]: "k" is in labels_add too`},
		{"negative replicas", &shoalv1.PatchServiceRequest{ServiceId: id, Replicas: int64p(-1)}, codes.InvalidArgument, "replicas: must be >= 0, got -1"},
		{"too many labels", &shoalv1.PatchServiceRequest{ServiceId: id, LabelsAdd: many}, codes.InvalidArgument, "labels_add: the service would have 65 labels, at most 64"},
		{"above max_replicas", &shoalv1.PatchServiceRequest{ServiceId: id, Replicas: int64p(DefaultMaxReplicas + 1)}, codes.InvalidArgument, fmt.Sprintf("replicas: %d is above the cluster setting max-replicas = %d", DefaultMaxReplicas+1, DefaultMaxReplicas)},
		{"global scaled", &shoalv1.PatchServiceRequest{ServiceId: "glob", Replicas: int64p(3)}, codes.InvalidArgument, "replicas: only for replicated services, not global"},
		{"stale version", &shoalv1.PatchServiceRequest{ServiceId: id, Version: version - 1, Replicas: int64p(3)}, codes.Aborted, "version conflict"},
		{"unknown service", &shoalv1.PatchServiceRequest{ServiceId: "nope", Replicas: int64p(3)}, codes.NotFound, "nope"},
		{"unknown view", &shoalv1.PatchServiceRequest{ServiceId: id, Replicas: int64p(3), View: 9}, codes.InvalidArgument, "view: unknown value 9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := st.AppliedIndex()
			_, err := s.PatchService(ctx, tc.req)
			wantCode(t, err, tc.code, tc.want)
			if after := st.AppliedIndex(); after != before {
				t.Fatalf("applied index moved %d -> %d", before, after)
			}
		})
	}
}

// TestPatchServiceByNameAndUnconditional: the service is named as
// GetService names it, version 0 patches whatever is stored, the brief
// view drops the specs, and the stored spec is the patched one.
func TestPatchServiceByNameAndUnconditional(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: patchTestSpec(shoalv1.ServiceMode_SERVICE_MODE_REPLICATED)})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetService().GetMeta().GetId()
	for _, ref := range []string{"web", id, id[:6]} {
		resp, err := s.PatchService(ctx, &shoalv1.PatchServiceRequest{ServiceId: ref, LabelsAdd: map[string]string{"ref": ref}, View: shoalv1.ServiceView_SERVICE_VIEW_BRIEF})
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if resp.GetService().GetSpec() != nil || resp.GetService().GetMeta().GetVersion() != st.AppliedIndex() {
			t.Fatalf("%s: brief reply %v", ref, resp.GetService())
		}
		stored, _ := raftstore.Get[*shoalv1.Service](st.View(), id)
		if stored.GetSpec().GetLabels()["ref"] != ref || stored.GetSpec().GetLabels()["keep"] != "1" || stored.GetSpec().GetReplicas() != 2 {
			t.Fatalf("%s: stored %v", ref, stored.GetSpec())
		}
	}
	full, err := s.PatchService(ctx, &shoalv1.PatchServiceRequest{ServiceId: "web", Replicas: int64p(5)})
	if err != nil {
		t.Fatal(err)
	}
	if full.GetService().GetSpec().GetReplicas() != 5 || full.GetService().GetPreviousSpec().GetReplicas() != 2 {
		t.Fatalf("full reply %v", full.GetService())
	}
}

// The reply is the caller's: changing its meta (or dropping its specs, as
// the brief view does) leaves the stored service as it was.
func TestPatchServiceReplySharesNoMetaWithTheStore(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	created, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: patchTestSpec(shoalv1.ServiceMode_SERVICE_MODE_REPLICATED)})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetService().GetMeta().GetId()
	resp, err := s.PatchService(ctx, &shoalv1.PatchServiceRequest{ServiceId: id, Version: created.GetService().GetMeta().GetVersion(),
		LabelsAdd: map[string]string{"new": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := raftstore.Get[*shoalv1.Service](st.View(), id)
	if got := resp.GetService().GetMeta(); got.GetVersion() != stored.GetMeta().GetVersion() || got == stored.GetMeta() {
		t.Fatalf("reply meta %v (%p), stored %v (%p)", got, got, stored.GetMeta(), stored.GetMeta())
	}
	before := proto.Clone(stored)
	resp.Service.Meta.Version, resp.Service.Meta.Id = 1, "changed"
	resp.Service.Spec, resp.Service.PreviousSpec = nil, nil
	if now, _ := raftstore.Get[*shoalv1.Service](st.View(), id); !proto.Equal(now, before) {
		t.Fatalf("changing the reply changed the store: %v", now)
	}
}
