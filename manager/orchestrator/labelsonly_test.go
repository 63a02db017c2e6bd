package orchestrator

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// relabeled is svc at version v with its spec's labels changed, sharing
// every other field of the spec (as PatchService stores it) and svc's
// spec as previous_spec.
func relabeled(svc *shoalv1.Service, v uint64) *shoalv1.Service {
	c := proto.Clone(svc).(*shoalv1.Service)
	o := svc.Spec
	c.Spec = &shoalv1.ServiceSpec{Name: o.Name, Labels: map[string]string{"bench": fmt.Sprint(v)}, Mode: o.Mode, Replicas: o.Replicas,
		Task: o.Task, Update: o.Update, Rollback: o.Rollback, Endpoint: o.Endpoint, Job: o.Job, AutoRebalance: o.AutoRebalance}
	c.PreviousSpec = o
	c.Meta.Version = v
	return c
}

// A service update that changes only its labels (and, outside a rollout,
// its previous spec) makes no pass due and keeps its settled slots; any
// other change does, as does a labels change of a service rolling out or
// the first event after a resync.
func TestLabelsOnlyServiceUpdateIsNoPass(t *testing.T) {
	s := openStore(t)
	r := newReconciler(newOrchestrator(s, testLogger()))
	r.resync()
	ev := func(action shoalv1.WatchAction, o raftstore.Object) *shoalv1.WatchEvent {
		return &shoalv1.WatchEvent{Action: action, Object: raftstore.Wrap(o)}
	}
	update := shoalv1.WatchAction_WATCH_ACTION_UPDATE
	base := mkService("a", 3)
	if !r.observe(ev(update, base)) {
		t.Fatal("the first event of a service made no pass due")
	}
	for _, tc := range []struct {
		name string
		svc  func() *shoalv1.Service
		due  bool
	}{
		{"labels", func() *shoalv1.Service { return relabeled(base, 8) }, false},
		{"labels, the task a copy", func() *shoalv1.Service {
			c := relabeled(base, 8)
			c.Spec.Task = proto.Clone(base.Spec.Task).(*shoalv1.TaskSpec)
			return c
		}, false},
		{"replicas", func() *shoalv1.Service { c := relabeled(base, 8); c.Spec.Replicas = 4; return c }, true},
		{"image", func() *shoalv1.Service {
			c := relabeled(base, 8)
			c.Spec.Task = proto.Clone(base.Spec.Task).(*shoalv1.TaskSpec)
			c.Spec.Task.Container.Image = "other"
			return c
		}, true},
		{"spec version", func() *shoalv1.Service { c := relabeled(base, 8); c.SpecVersion = 2; return c }, true},
		{"update config", func() *shoalv1.Service {
			c := relabeled(base, 8)
			c.Spec.Update = &shoalv1.UpdateConfig{Parallelism: 2}
			return c
		}, true},
		{"rolling out", func() *shoalv1.Service {
			c := relabeled(base, 8)
			c.UpdateStatus = &shoalv1.UpdateStatus{State: updUpdating}
			return c
		}, true},
		{"rebalance", func() *shoalv1.Service { c := relabeled(base, 8); c.RebalanceRequested = true; return c }, true},
		{"vips", func() *shoalv1.Service {
			c := relabeled(base, 8)
			c.Vips = []*shoalv1.ServiceVIP{{NetworkId: "n", Address: "10.0.0.2/24"}}
			return c
		}, true},
		{"job status", func() *shoalv1.Service {
			c := relabeled(base, 8)
			c.JobStatus = &shoalv1.JobStatus{Iteration: 1}
			return c
		}, true},
	} {
		r.seen["a"] = base
		r.settled["a"] = settledSlots{svcVersion: 7, through: 3}
		clear(r.services)
		svc := tc.svc()
		if due := r.observe(ev(update, svc)); due != tc.due || r.services["a"] != tc.due {
			t.Errorf("%s: due %v (marked %v), want %v", tc.name, due, r.services["a"], tc.due)
		}
		if s, ok := r.settled["a"]; tc.due == ok || (ok && s.svcVersion != 8) {
			t.Errorf("%s: settled %v (%v), want kept at version 8: %v", tc.name, s, ok, !tc.due)
		}
	}
	// A labels change while rolling out is due (its previous spec is the
	// rollout's start).
	rolling := mkService("b", 3)
	rolling.UpdateStatus = &shoalv1.UpdateStatus{State: updUpdating}
	r.observe(ev(update, rolling))
	clear(r.services)
	if !r.observe(ev(update, relabeled(rolling, 8))) {
		t.Error("a labels change of a service rolling out made no pass due")
	}
	// After a resync the events before it are forgotten.
	r.seen["a"] = base
	r.resync()
	clear(r.services)
	if !r.observe(ev(update, relabeled(base, 9))) {
		t.Error("a labels change after a resync made no pass due")
	}
}

// The plan of a service and of the same service relabeled (its previous
// spec the one before) are the same, for tasks in every state a service
// outside a rollout can have.
func TestLabelsOnlyServicePlansAlike(t *testing.T) {
	running := func(from, to uint64, opts ...taskOpt) []*shoalv1.Task {
		var ts []*shoalv1.Task
		for slot := from; slot <= to; slot++ {
			ts = append(ts, mkTask(fmt.Sprintf("t%d", slot), "s", slot, opts...))
		}
		return ts
	}
	for _, c := range []struct {
		name  string
		svc   *shoalv1.Service
		tasks []*shoalv1.Task
	}{
		{"empty", mkService("s", 4), nil},
		{"settled", mkService("s", 4), running(1, 4)},
		{"pending", mkService("s", 4), running(1, 4, st(tsPending), onNode(""))},
		{"too many", mkService("s", 2), running(1, 4)},
		{"failed, restart delay", mkService("s", 3, restart(condAny, time.Minute, 0, 0)),
			append(running(1, 2), mkTask("f3", "s", 3, ended(tsFailed, ago(time.Second))))},
	} {
		now := t0
		want, wantThrough := reconcileReplicatedFrom(c.svc, c.tasks, now, nil, 0)
		got, gotThrough := reconcileReplicatedFrom(relabeled(c.svc, 8), c.tasks, now, nil, 0)
		if describe(got) != describe(want) || got.More != want.More || (got.Service == nil) != (want.Service == nil) || gotThrough != wantThrough {
			t.Errorf("%s: relabeled plans %s (through %d), before %s (through %d)", c.name, describe(got), gotThrough, describe(want), wantThrough)
		}
	}
}
