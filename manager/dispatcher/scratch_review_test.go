package dispatcher

import (
	"context"
	"fmt"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestDiffsOverGRPCCarryTheirTasks: a session sending diff after diff
// over a real gRPC connection (one-task diffs, built in the last diff's
// slice, and a few bigger ones) delivers every task whole, once. A session
// reuses a diff's task slice once Send has returned: that is safe only
// while Send marshals the message before returning (gRPC does; it keeps
// nothing, no stats handler is installed). A send that queued the message
// (a send goroutine, a stats handler reading it later) would see slots
// cleared or refilled by the next diff: tasks arrive empty or twice, and
// -race reports the clear.
func TestDiffsOverGRPCCarryTheirTasks(t *testing.T) {
	const singles, bursts, perBurst = 200, 4, maxScratchUpserts + 8
	s, open, _ := sessionServer(t)
	stream := open()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	want := map[string]bool{"t1": true} // t1 comes in the full set
	mk := func(id string) *shoalv1.Task {
		tk := task(id, "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED)
		tk.DesiredState = shoalv1.TaskState_TASK_STATE_RUNNING
		return tk
	}
	var batches [][]*shoalv1.Task
	for i := range singles {
		batches = append(batches, []*shoalv1.Task{mk(fmt.Sprintf("s%03d", i))})
		if i%(singles/bursts) == 0 {
			var b []*shoalv1.Task
			for j := range perBurst {
				b = append(b, mk(fmt.Sprintf("b%03d-%02d", i, j)))
			}
			batches = append(batches, b)
		}
	}
	for _, b := range batches {
		for _, tk := range b {
			want[tk.GetMeta().GetId()] = true
		}
	}
	created := make(chan error, 1)
	go func() {
		for _, b := range batches {
			if _, err := s.Update(ctx, func(tx raftstore.WriteTx) error {
				for _, tk := range b {
					if err := tx.Create(tk); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				created <- err
				return
			}
		}
		created <- nil
	}()
	got := map[string]int{}
	for len(got) < len(want) {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d of %d tasks: %v", len(got), len(want), err)
		}
		for _, tk := range m.GetAssignments().GetUpsert() {
			id := tk.GetMeta().GetId()
			if !want[id] || tk.GetNodeId() != "n1" || tk.GetDesiredState() != shoalv1.TaskState_TASK_STATE_RUNNING {
				t.Fatalf("a diff carried a task not whole: %v", tk)
			}
			got[id]++
			if got[id] > 1 {
				t.Fatalf("task %s sent twice", id)
			}
		}
	}
	if err := <-created; err != nil {
		t.Fatal(err)
	}
}
