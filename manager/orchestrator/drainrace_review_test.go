package orchestrator

import (
	"context"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// A live task another writer creates on a node that is draining or down
// — a rebalance move whose target began draining after the rebalance loop
// read it, after that node's own pass — is drained (orphaned) by the next
// pass, as a task placed there by the scheduler is: its creation makes the
// node's pass due. Before, only the service's pass was, which keeps the
// task, so it ran on the draining node until the next full pass (found by
// the convergence check of TestSettledSlotsRandomEvents, seed 1).
func TestTaskCreatedOnUnusableNodeIsDrained(t *testing.T) {
	for _, tc := range []struct {
		name  string
		node  nodeOpt
		check func(*shoalv1.Task) bool // the foreign task as the pass left it
	}{
		{"draining", drain(), func(tk *shoalv1.Task) bool { return tk.GetDesiredState() == stateShutdown }},
		{"down", down(), func(tk *shoalv1.Task) bool { return tk.GetStatus().GetState() == stateOrphaned }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			create(t, s, mkService("a", 1, noRestartDelay()), mkNode("n1"), mkNode("n2", tc.node))
			o := newOrchestrator(s, testLogger())
			r := newReconciler(o)
			r.resync()
			ctx := context.Background()
			passAll := func() {
				t.Helper()
				for i := 0; r.full || len(r.services) > 0 || len(r.nodes) > 0 || r.globals; i++ {
					if i > 10 {
						t.Fatal("passes do not settle")
					}
					if _, err := r.pass(ctx, o.now()); err != nil {
						t.Fatal(err)
					}
				}
			}
			passAll()
			live := liveOf(tasksOf(s, "a"))
			if len(live) != 1 || live[0].GetNodeId() != "n1" {
				t.Fatalf("first pass: live tasks %v", live)
			}
			// Running on n1; then another writer's task of slot 1 on n2.
			t1 := cloneTask(live[0])
			t1.Status = &shoalv1.TaskStatus{State: stateRunning}
			write(t, s, func(tx raftstore.WriteTx) error { return tx.Update(cloneTask(t1)) })
			stored, _ := raftstore.Get[*shoalv1.Task](s.View(), t1.GetMeta().GetId())
			r.observe(&shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_UPDATE, Object: raftstore.Wrap(stored)})
			svc, _ := raftstore.Get[*shoalv1.Service](s.View(), "a")
			t2 := newTask(svc, 1, "n2", o.now())
			t2.Status = &shoalv1.TaskStatus{State: stateRunning}
			create(t, s, t2)
			stored, _ = raftstore.Get[*shoalv1.Task](s.View(), t2.GetMeta().GetId())
			r.observe(&shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_CREATE, Object: raftstore.Wrap(stored)})
			passAll()
			got, _ := raftstore.Get[*shoalv1.Task](s.View(), t2.GetMeta().GetId())
			if !tc.check(got) {
				t.Fatalf("the task created on %s n2: desired %v, state %v", tc.name, got.GetDesiredState(), got.GetStatus().GetState())
			}
			live = liveOf(tasksOf(s, "a"))
			if len(live) != 1 || live[0].GetNodeId() != "n1" {
				t.Fatalf("live tasks after the pass: %v", live)
			}
		})
	}
}
