package orchestrator

import (
	"context"
	"fmt"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// taskEvents records every task event's action and state, by task.
func taskEvents(t *testing.T, s *raftstore.Store) func() map[string][]string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	sub, err := s.Watch(ctx, s.View().Index()+1, raftstore.KindTask)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *shoalv1.WatchEvent, 1<<16)
	go func() {
		for ev := range sub.C() {
			got <- ev
		}
	}()
	seen := map[string][]string{}
	return func() map[string][]string {
		for {
			select {
			case ev := <-got:
				tk := raftstore.Unwrap(ev.GetObject()).(*shoalv1.Task)
				seen[tk.GetMeta().GetId()] = append(seen[tk.GetMeta().GetId()],
					fmt.Sprintf("%s %s %s", ev.GetAction().String(), short(tk.GetStatus().GetState()), tk.GetNodeId()))
			default:
				return seen
			}
		}
	}
}

// TestCreatedTasksArePlacedInTheirEntry: a replicated service's tasks are
// created already ASSIGNED to a node, in the entry that creates them: no
// task is ever stored PENDING and none is written a second time to be
// assigned; spread holds (3 nodes, 30 tasks: 10 each).
func TestCreatedTasksArePlacedInTheirEntry(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"), mkNode("n2"), mkNode("n3"))
	events := taskEvents(t, s)
	startOrchestrator(t, s)
	create(t, s, mkService("web", 30, noRestartDelay()))
	eventually(t, "30 tasks assigned", func() error { return allAssigned(tasksOf(s, "web"), 30) })
	if c := perNode(tasksOf(s, "web")); c["n1"] != 10 || c["n2"] != 10 || c["n3"] != 10 {
		t.Fatalf("tasks per node %v, want 10 each", c)
	}
	var seen map[string][]string
	eventually(t, "an event per task", func() error {
		if seen = events(); len(seen) != 30 {
			return fmt.Errorf("%d tasks seen", len(seen))
		}
		return nil
	})
	for id, evs := range seen {
		tk, _ := raftstore.Get[*shoalv1.Task](s.View(), id)
		if want := fmt.Sprintf("%s assigned %s", shoalv1.WatchAction_WATCH_ACTION_CREATE.String(), tk.GetNodeId()); len(evs) != 1 || evs[0] != want {
			t.Errorf("task %s: events %q, want one creation %q", id, evs, want)
		}
	}
}

// TestPlacementAtCreationLeavesTheRestPending: tasks the reconciler cannot
// place (no memory left) and tasks waiting for the allocator (on a
// network) are created PENDING; the scheduler loop records why the first
// cannot be placed; the reconciler's placements and the scheduler loop's
// count each other's: no node is given more than its memory.
func TestPlacementAtCreationLeavesTheRestPending(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1", memory(1<<30)), mkNode("n2", memory(1<<30)))
	startOrchestrator(t, s)
	quarter := func(svc *shoalv1.Service) {
		svc.Spec.Task.Resources = &shoalv1.ResourceRequirements{Reservations: &shoalv1.Resources{MemoryBytes: 256 << 20}}
	}
	create(t, s, mkService("a", 6, noRestartDelay(), quarter))
	eventually(t, "6 tasks assigned", func() error { return allAssigned(tasksOf(s, "a"), 6) })
	// 10 more: 2 fit, 8 do not.
	create(t, s, mkService("b", 10, noRestartDelay(), quarter))
	eventually(t, "2 of b placed, 8 pending with the reason", func() error {
		var placed, why int
		for _, tk := range tasksOf(s, "b") {
			switch {
			case tk.GetNodeId() != "":
				placed++
			case tk.GetStatus().GetState() == tsPending && tk.GetStatus().GetMessage() != msgPending:
				why++
			}
		}
		if placed != 2 || why != 8 {
			return fmt.Errorf("%d placed, %d pending with a reason: %s", placed, why, brief(tasksOf(s, "b")))
		}
		return nil
	})
	used := map[string]int64{}
	for _, svc := range []string{"a", "b"} {
		for _, tk := range liveOf(tasksOf(s, svc)) {
			used[tk.GetNodeId()] += tk.GetSpec().GetResources().GetReservations().GetMemoryBytes()
		}
	}
	if used["n1"] > 1<<30 || used["n2"] > 1<<30 {
		t.Fatalf("memory reserved per node %v, above 1 GiB", used)
	}
	// A task on a network waits for its addresses: created PENDING.
	create(t, s, mkService("c", 1, noRestartDelay(), func(svc *shoalv1.Service) {
		svc.Spec.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "net1"}}
	}))
	eventually(t, "c's task created", func() error {
		if ts := tasksOf(s, "c"); len(ts) != 1 {
			return fmt.Errorf("%d tasks", len(ts))
		}
		return nil
	})
	if tk := tasksOf(s, "c")[0]; tk.GetNodeId() != "" || tk.GetStatus().GetState() != tsPending {
		t.Fatalf("a task waiting for its network's addresses was placed: %s", brief([]*shoalv1.Task{tk}))
	}
}
