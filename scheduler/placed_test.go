package scheduler

import (
	"fmt"
	"maps"
	"math/rand"
	"reflect"
	"slices"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// usage is a Placed's per-node accounting, for comparing.
func usage(p *Placed) map[string]nodeUsage {
	out := map[string]nodeUsage{}
	for id, u := range p.nodes {
		out[id] = *u
	}
	return out
}

// A Placed kept up to date by the task changes it sees, in any order that
// ends with each task's newest state, counts what a Placed built from the
// final tasks counts: a task counts only from ASSIGNED up to COMPLETE on a
// node, a move or new reservations replace what it counted, and seeing a
// state again counts nothing twice (a batch's own assignments are recorded
// at commit and then seen again as events).
func TestPlacedObserve(t *testing.T) {
	const (
		assigned = shoalv1.TaskState_TASK_STATE_ASSIGNED
		run      = shoalv1.TaskState_TASK_STATE_RUNNING
		done     = shoalv1.TaskState_TASK_STATE_COMPLETE
		pending  = shoalv1.TaskState_TASK_STATE_PENDING
	)
	tests := []struct {
		name  string
		seen  []*shoalv1.Task
		forgo []string // forgotten after the observations
		final []*shoalv1.Task
	}{
		{
			name:  "assigned, then the same again, then running",
			seen:  []*shoalv1.Task{mkTask("a", "s1", 1, on("n1"), taskState(assigned), reserve(cpu1, gib)), mkTask("a", "s1", 1, on("n1"), taskState(assigned), reserve(cpu1, gib)), mkTask("a", "s1", 1, on("n1"), running(), reserve(cpu1, gib))},
			final: []*shoalv1.Task{mkTask("a", "s1", 1, on("n1"), running(), reserve(cpu1, gib))},
		},
		{
			name:  "ended tasks free their node",
			seen:  []*shoalv1.Task{mkTask("a", "s1", 1, on("n1"), running(), reserve(cpu1, gib)), mkTask("b", "s1", 2, on("n1"), running()), mkTask("a", "s1", 1, on("n1"), taskState(done), reserve(cpu1, gib))},
			final: []*shoalv1.Task{mkTask("b", "s1", 2, on("n1"), running())},
		},
		{
			name:  "a move counts on the new node only",
			seen:  []*shoalv1.Task{mkTask("a", "s1", 1, on("n1"), running(), reserve(0, gib)), mkTask("a", "s1", 1, on("n2"), taskState(assigned), reserve(0, 2*gib))},
			final: []*shoalv1.Task{mkTask("a", "s1", 1, on("n2"), taskState(assigned), reserve(0, 2*gib))},
		},
		{
			name:  "pending and nodeless tasks count nowhere",
			seen:  []*shoalv1.Task{mkTask("a", "s1", 1, on("n1"), taskState(pending)), mkTask("b", "s1", 2, running()), mkTask("c", "s2", 1, on("n1"), running()), mkTask("c", "s2", 1, on("n1"), taskState(pending))},
			final: nil,
		},
		{
			name:  "deleted tasks are forgotten",
			seen:  []*shoalv1.Task{mkTask("a", "s1", 1, on("n1"), running()), mkTask("b", "s2", 1, on("n1"), running())},
			forgo: []string{"a", "zz"},
			final: []*shoalv1.Task{mkTask("b", "s2", 1, on("n1"), running())},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPlaced()
			for _, task := range tt.seen {
				p.Observe(task)
			}
			for _, id := range tt.forgo {
				p.Forget(id)
			}
			want := PlacedOf(tt.final)
			if got, w := usage(p), usage(want); !reflect.DeepEqual(got, w) {
				t.Errorf("usage %+v, want %+v", got, w)
			}
			if p.Len() != want.Len() {
				t.Errorf("%d tasks counted, want %d", p.Len(), want.Len())
			}
		})
	}
}

// Scheduling against a Placed kept across batches places like scheduling
// against the tasks themselves: batch after batch, the assignments of one
// recorded into the Placed, spread and reservations hold.
func TestSchedulePlacedAcrossBatches(t *testing.T) {
	nodes := []*shoalv1.Node{mkNode("n1", capacity(0, 4*gib)), mkNode("n2", capacity(0, 4*gib)), mkNode("n3", capacity(0, 2*gib))}
	all := replicas("s1", 9, reserve(0, gib))
	placed := NewPlaced()
	var existing []*shoalv1.Task
	for start := 0; start < len(all); start += 4 {
		batch := all[start:min(start+4, len(all))]
		got, gotFail := SchedulePlaced(nodes, placed, batch)
		want, wantFail := Schedule(nodes, existing, batch)
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gotFail, wantFail) {
			t.Fatalf("batch at %d: SchedulePlaced %v %v, Schedule %v %v", start, got, gotFail, want, wantFail)
		}
		byID := map[string]*shoalv1.Task{}
		for _, task := range batch {
			byID[task.GetMeta().GetId()] = task
		}
		for _, a := range got {
			task := mkTask(a.TaskID, "s1", byID[a.TaskID].GetSlot(), on(a.NodeID), taskState(shoalv1.TaskState_TASK_STATE_ASSIGNED), reserve(0, gib))
			placed.Observe(task)
			existing = append(existing, task)
		}
	}
	// 10 GiB of room for 9 tasks of 1 GiB, n3 holding at most 2.
	if u := usage(placed); placed.Len() != 9 || u["n3"].tasks != 2 || u["n1"].tasks+u["n2"].tasks != 7 {
		t.Errorf("placed %d tasks: %+v", placed.Len(), u)
	}
}

// placedEvent is one observation in TestPlacedRandomEventOrders: a task
// state (nil task with forget: a delete).
type placedEvent struct {
	task   *shoalv1.Task
	forget string
}

// Random event sequences as the scheduler loop sees them: every task's
// states in order of their versions (raft indexes), interleaved across
// tasks, plus the loop's own assignments recorded as committed ahead of
// their events (so the events of older states, the task's creation
// above all, come after them). After every observation a Placed counts
// what one rebuilt from the newest state seen of each task counts, and
// at the end what one rebuilt from the store (every task's last state)
// counts. Without versions, a creation's PENDING event arriving after the
// recorded assignment took the task out and undercounted its node (a
// batch then could overcommit it) until the assignment's own event came.
func TestPlacedRandomEventOrders(t *testing.T) {
	const (
		pending  = shoalv1.TaskState_TASK_STATE_PENDING
		assigned = shoalv1.TaskState_TASK_STATE_ASSIGNED
		run      = shoalv1.TaskState_TASK_STATE_RUNNING
		failed   = shoalv1.TaskState_TASK_STATE_FAILED
	)
	nodes := []string{"n1", "n2", "n3"}
	for seed := int64(1); seed <= 300; seed++ {
		rng := rand.New(rand.NewSource(seed))
		var index uint64
		version := func(tk *shoalv1.Task) *shoalv1.Task {
			index++
			tk.Meta.Version = index
			return tk
		}
		// Each task's history, versions increasing across all of them
		// (tasks advance in random turns, as in one raft log).
		type hist struct {
			id    string
			steps int
		}
		var tasks []*hist
		for i := range 2 + rng.Intn(6) {
			tasks = append(tasks, &hist{id: fmt.Sprintf("t%d", i)})
		}
		var stream []placedEvent       // events in raft order
		early := map[int]placedEvent{} // own assignments: position in stream of their event
		store := map[string]*shoalv1.Task{}
		for len(tasks) > 0 {
			i := rng.Intn(len(tasks))
			h := tasks[i]
			svc := "s" + h.id[len(h.id)-1:]
			node := nodes[int(h.id[1])%len(nodes)]
			var tk *shoalv1.Task
			switch h.steps {
			case 0:
				tk = version(mkTask(h.id, svc, 1, taskState(pending), reserve(cpu1, gib)))
			case 1:
				tk = version(mkTask(h.id, svc, 1, on(node), taskState(assigned), reserve(cpu1, gib)))
				if rng.Intn(2) == 0 {
					early[len(stream)] = placedEvent{task: tk}
				}
			case 2:
				tk = version(mkTask(h.id, svc, 1, on(node), taskState(run), reserve(cpu1, gib)))
			case 3:
				tk = version(mkTask(h.id, svc, 1, on(node), taskState(failed), reserve(cpu1, gib)))
			}
			h.steps++
			if tk != nil {
				stream = append(stream, placedEvent{task: tk})
				store[h.id] = tk
			}
			if h.steps == 4 || (h.steps > 1 && rng.Intn(4) == 0) {
				if rng.Intn(2) == 0 {
					index++
					stream = append(stream, placedEvent{forget: h.id})
					delete(store, h.id)
				}
				tasks = append(tasks[:i], tasks[i+1:]...)
			}
		}
		// Each own assignment goes in at a random place before its event.
		var seq []placedEvent
		at := map[int][]placedEvent{}
		for pos, ev := range early {
			p := rng.Intn(pos + 1)
			at[p] = append(at[p], ev)
		}
		for pos, ev := range stream {
			seq = append(seq, at[pos]...)
			seq = append(seq, ev)
		}

		p := NewPlaced()
		newest := map[string]*shoalv1.Task{}
		deleted := map[string]bool{}
		for step, ev := range seq {
			if ev.task == nil {
				p.Forget(ev.forget)
				deleted[ev.forget] = true
			} else {
				p.Observe(ev.task)
				id := ev.task.GetMeta().GetId()
				if cur := newest[id]; cur == nil || cur.GetMeta().GetVersion() < ev.task.GetMeta().GetVersion() {
					newest[id] = ev.task
				}
			}
			var seen []*shoalv1.Task
			for id, tk := range newest {
				if !deleted[id] {
					seen = append(seen, tk)
				}
			}
			if got, want := usage(p), usage(PlacedOf(seen)); !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d, step %d (%v): counts %+v, the newest states seen %+v", seed, step, ev.task.GetStatus().GetState(), got, want)
			}
		}
		final := slices.Collect(maps.Values(store))
		if got, want := usage(p), usage(PlacedOf(final)); !reflect.DeepEqual(got, want) {
			t.Fatalf("seed %d: at the end counts %+v, the store %+v", seed, got, want)
		}
		if p.Len() != PlacedOf(final).Len() {
			t.Fatalf("seed %d: %d tasks counted, the store places %d", seed, p.Len(), PlacedOf(final).Len())
		}
	}
}
