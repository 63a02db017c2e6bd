package orchestrator

import (
	"context"
	"fmt"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestRebalanceLoopSettleAndFlap drives the rebalance loop by hand (events
// in, passes at chosen times of a fake clock) over a real store: a node
// that joins gets tasks only once it has been ready for the settle period,
// and a node that flaps starts its period again — it gets nothing until
// it has stayed.
func TestRebalanceLoopSettleAndFlap(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	auto := func(svc *shoalv1.Service) { svc.Spec.AutoRebalance = true }
	create(t, s, mkNode("n1"), mkNode("n2"), mkNode("n3", down()), mkService("web", 4, auto, parallelism(1)))
	create(t, s,
		mkTask("t1", "web", 1, onNode("n1")), mkTask("t2", "web", 2, onNode("n1")),
		mkTask("t3", "web", 3, onNode("n2")), mkTask("t4", "web", 4, onNode("n2")))

	now := t0
	o := newOrchestrator(s, testLogger())
	o.now = func() time.Time { return now }
	r := newRebalanceLoop(o)
	nodeEvent := func(id string, fn func(*shoalv1.Node)) {
		t.Helper()
		changeNode(t, s, id, fn)
		n, _ := raftstore.Get[*shoalv1.Node](s.View(), id)
		r.observe(&shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_UPDATE, Object: raftstore.Wrap(n)})
	}
	ready := func(n *shoalv1.Node) { n.Status.State = shoalv1.NodeState_NODE_STATE_READY }
	isDown := func(n *shoalv1.Node) { n.Status.State = shoalv1.NodeState_NODE_STATE_DOWN }
	pass := func(at time.Duration) time.Time {
		t.Helper()
		now = t0.Add(at)
		wake, err := r.pass(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		return wake
	}
	onN3 := func() int {
		n := 0
		for _, tk := range liveOf(tasksOf(s, "web")) {
			if tk.GetNodeId() == "n3" {
				n++
			}
		}
		return n
	}

	r.resync()
	pass(0)
	nodeEvent("n3", ready) // joins at 0
	if wake := pass(0); !wake.Equal(t0.Add(RebalanceSettle)) || onN3() != 0 {
		t.Fatalf("on join: wake %v, %d tasks on n3; want a wake at the settle time and none", wake, onN3())
	}
	now = t0.Add(10 * time.Second)
	nodeEvent("n3", isDown)
	nodeEvent("n3", ready) // back at 10 s: its period starts again
	if wake := pass(35 * time.Second); onN3() != 0 || !wake.Equal(t0.Add(40*time.Second)) {
		t.Fatalf("at 35 s (25 s after the flap): %d tasks on n3, wake %v; want none and a wake at 40 s", onN3(), wake)
	}
	pass(40 * time.Second)
	if got := onN3(); got != 1 {
		t.Fatalf("at 40 s, settled: %d tasks moving to n3, want 1 (parallelism 1, 2-2-0 → 2-1-1)\n%s", got, brief(tasksOf(s, "web")))
	}
	// The move's new task shares a slot with a task of n1 or n2, and the
	// old one keeps running meanwhile.
	slots := map[uint64]int{}
	for _, tk := range liveOf(tasksOf(s, "web")) {
		slots[tk.GetSlot()]++
	}
	if len(slots) != 4 {
		t.Fatalf("slots %v", slots)
	}
}

// TestRebalanceRequested runs the whole orchestrator: a service on two
// nodes, a third joins; `service rebalance` (rebalance_requested) moves
// tasks to it, start-first, and the flag is cleared once even.
func TestRebalanceRequested(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"), mkNode("n2"))
	startOrchestrator(t, s)
	create(t, s, mkService("web", 6, noRestartDelay(), parallelism(2)))
	// agents plays the nodes: assigned tasks run, stopped ones end.
	agents := func() {
		report(t, s, func(tk *shoalv1.Task) bool {
			return tk.GetStatus().GetState() == tsAssigned && tk.GetDesiredState() == tsRunning
		}, tsRunning)
		report(t, s, func(tk *shoalv1.Task) bool {
			return tk.GetDesiredState() >= tsShutdown && tk.GetStatus().GetState() < tsComplete && tk.GetStatus().GetState() >= tsAssigned
		}, tsShutdown)
	}
	eventually(t, "6 running, 3 per node", func() error {
		agents()
		ts := liveOf(tasksOf(s, "web"))
		if c := perNode(ts); len(ts) != 6 || c["n1"] != 3 || c["n2"] != 3 {
			return fmt.Errorf("spread %v: %s", c, brief(ts))
		}
		for _, tk := range ts {
			if tk.GetStatus().GetState() != tsRunning {
				return fmt.Errorf("not running: %s", brief(ts))
			}
		}
		return nil
	})
	create(t, s, mkNode("n3"))
	changeService(t, s, "web", func(svc *shoalv1.Service) { svc.RebalanceRequested = true })
	eventually(t, "2 per node and the request cleared", func() error {
		agents()
		ts := liveOf(tasksOf(s, "web"))
		c := perNode(ts)
		if len(ts) != 6 || c["n1"] != 2 || c["n2"] != 2 || c["n3"] != 2 {
			return fmt.Errorf("spread %v: %s", c, brief(ts))
		}
		svc, _ := raftstore.Get[*shoalv1.Service](s.View(), "web")
		if svc.GetRebalanceRequested() {
			return fmt.Errorf("rebalance_requested still set")
		}
		return nil
	})
}

// TestRebalanceLoopBoundedEntry: a rebalance of many moves at once
// (parallelism 0) writes them in entries within the pass budget, asking
// for the next pass at once, and the passes together make every move.
func TestRebalanceLoopBoundedEntry(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	create(t, s, mkNode("n1"), mkNode("n2"), mkService("web", 40, parallelism(0), func(svc *shoalv1.Service) { svc.RebalanceRequested = true }))
	var ts []raftstore.Object
	for i := range 40 {
		ts = append(ts, mkTask(fmt.Sprintf("t%02d", i+1), "web", uint64(i+1), onNode("n1")))
	}
	create(t, s, ts...)
	o := newOrchestrator(s, testLogger())
	o.now = func() time.Time { return t0 }
	o.maxEntryOps = 10
	r := newRebalanceLoop(o)
	r.resync()
	onN2 := func() int {
		n := 0
		for _, tk := range liveOf(tasksOf(s, "web")) {
			if tk.GetNodeId() == "n2" {
				n++
			}
		}
		return n
	}
	for pass, last := 1, 0; ; pass++ {
		wake, err := r.pass(ctx, t0)
		if err != nil {
			t.Fatal(err)
		}
		got := onN2()
		if got-last > 10 {
			t.Fatalf("pass %d wrote %d moves in one entry, budget 10 ops", pass, got-last)
		}
		if got == 20 {
			break
		}
		if !wake.Equal(t0) || pass > 5 {
			t.Fatalf("pass %d: %d of 20 moves made, wake %v (want the next pass at once)", pass, got, wake)
		}
		last = got
	}
}
