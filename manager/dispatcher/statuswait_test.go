package dispatcher

import (
	"context"
	"log/slog"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestStatusWaitKeepsNodeAlive: a session whose status report waits on a
// full writer queue keeps its node seen and acknowledges it, so a busy
// leader does not mark a talking node down; once the writer takes the
// report, queueStatus returns.
func TestStatusWaitKeepsNodeAlive(t *testing.T) {
	d := New(Config{Logger: slog.New(slog.DiscardHandler)})
	old := time.Now().Add(-time.Hour)
	d.lastSeen["n1"] = old
	ch := make(chan statusUpdate) // nobody reads: the writer is behind
	out := newOutbox()
	done := make(chan error, 1)
	go func() {
		done <- d.queueStatus(context.Background(), out, "n1", ch, update("n1", "t1", shoalv1.TaskState_TASK_STATE_RUNNING))
	}()
	poll(t, "the waiting node is marked seen and acknowledged", func() bool {
		d.mu.Lock()
		seen := d.lastSeen["n1"]
		d.mu.Unlock()
		return seen.After(old) && len(out.ready) > 0
	})
	if ack, _ := out.take(); ack.GetHeartbeatAck() == nil {
		t.Fatalf("left for the agent: %v, want an acknowledgement", ack)
	}
	if u := <-ch; u.upd.GetTaskId() != "t1" {
		t.Fatalf("writer got %v", u)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
