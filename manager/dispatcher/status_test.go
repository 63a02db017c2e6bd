package dispatcher

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func createTask(t *testing.T, s *raftstore.Store, id, node string) {
	t.Helper()
	_, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		return tx.Create(task(id, node, shoalv1.TaskState_TASK_STATE_ASSIGNED))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func taskState(s *raftstore.Store, id string) shoalv1.TaskState {
	tk, _ := raftstore.Get[*shoalv1.Task](s.View(), id)
	return tk.GetStatus().GetState()
}

func update(node, id string, state shoalv1.TaskState) statusUpdate {
	return statusUpdate{nodeID: node, upd: &shoalv1.TaskStatusUpdate{TaskId: id, Status: &shoalv1.TaskStatus{State: state}}}
}

// A forged update from another node for the same task, arriving in the
// same batch after the real one, must not replace it: keyed by task alone,
// the forged one took the real one's place, was refused, and the real
// report was lost for good.
func TestForgedStatusDoesNotReplaceRealOne(t *testing.T) {
	s := openStore(t)
	createTask(t, s, "t1", "n1")
	d := New(Config{Store: s, Logger: slog.New(slog.DiscardHandler), StatusFlush: time.Second})

	// Both are queued before the writer starts, so they land in one batch
	// (the flush timer starts with the first).
	in := make(chan statusUpdate, 2)
	in <- update("n1", "t1", shoalv1.TaskState_TASK_STATE_ACCEPTED)
	in <- update("n2", "t1", shoalv1.TaskState_TASK_STATE_FAILED)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.writeStatuses(ctx, in) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("writeStatuses: %v", err)
		}
	})
	poll(t, "the real update is recorded", func() bool { return taskState(s, "t1") == shoalv1.TaskState_TASK_STATE_ACCEPTED })
}

// An update for a task assigned to another node is dropped when it
// arrives; the node's own tasks, and tasks this view does not know yet
// (a lagging view after an election), go on to the writer. The drops of
// one message make one log line, however many there are.
func TestReportable(t *testing.T) {
	s := openStore(t)
	createTask(t, s, "mine", "n1")
	createTask(t, s, "theirs", "n2")
	logs := &countingHandler{}
	d := New(Config{Store: s, Logger: slog.New(logs)})
	var ups []*shoalv1.TaskStatusUpdate
	for _, id := range []string{"mine", "theirs", "unknown"} {
		ups = append(ups, update("n1", id, shoalv1.TaskState_TASK_STATE_RUNNING).upd)
	}
	for range 1000 {
		ups = append(ups, update("n1", "theirs", shoalv1.TaskState_TASK_STATE_FAILED).upd)
	}
	var got []string
	for _, u := range d.reportable(s.View(), "n1", ups) {
		got = append(got, u.GetTaskId())
	}
	if want := []string{"mine", "unknown"}; !slices.Equal(got, want) {
		t.Errorf("reportable kept %q, want %q", got, want)
	}
	if n := logs.warns.Load(); n != 1 {
		t.Errorf("%d warnings logged for one message's drops, want 1", n)
	}
}

// countingHandler counts the warnings logged.
type countingHandler struct{ warns atomic.Int32 }

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		h.warns.Add(1)
	}
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
