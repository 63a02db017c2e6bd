package scheduler

import (
	"reflect"
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
