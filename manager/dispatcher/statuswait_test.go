package dispatcher

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// ackStream records what the session sends.
type ackStream struct {
	grpc.ServerStream
	mu   sync.Mutex
	acks int
}

func (s *ackStream) Send(m *shoalv1.SessionMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.GetHeartbeatAck() != nil {
		s.acks++
	}
	return nil
}
func (s *ackStream) Recv() (*shoalv1.AgentMessage, error) { select {} }
func (s *ackStream) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acks
}

// TestStatusWaitKeepsNodeAlive: a session whose status report waits on a
// full writer queue keeps its node seen and acknowledges it, so a busy
// leader does not mark a talking node down; once the writer takes the
// report, queueStatus returns.
func TestStatusWaitKeepsNodeAlive(t *testing.T) {
	d := New(Config{Logger: slog.New(slog.DiscardHandler)})
	old := time.Now().Add(-time.Hour)
	d.lastSeen["n1"] = old
	ch := make(chan statusUpdate) // nobody reads: the writer is behind
	st := &ackStream{}
	done := make(chan error, 1)
	go func() {
		done <- d.queueStatus(context.Background(), st, "n1", ch, update("n1", "t1", shoalv1.TaskState_TASK_STATE_RUNNING))
	}()
	poll(t, "the waiting node is marked seen and acknowledged", func() bool {
		d.mu.Lock()
		seen := d.lastSeen["n1"]
		d.mu.Unlock()
		return seen.After(old) && st.count() > 0
	})
	if u := <-ch; u.upd.GetTaskId() != "t1" {
		t.Fatalf("writer got %v", u)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
