package dispatcher

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestBusySessionToldNewPeriodAndManagers: a session whose agent sends
// only statuses (an agent skips its heartbeats while statuses go out and
// messages come back) is told a changed heartbeat period and a changed
// manager list all the same, and once its heartbeat names the shorter
// period the node is judged by it. Before, both went out only with a
// heartbeat's acknowledgement: a busy node never learned a shorter period
// (judged by the longer one all along) nor a new manager.
func TestBusySessionToldNewPeriodAndManagers(t *testing.T) {
	var mgrs atomic.Pointer[[]string]
	mgrs.Store(&[]string{"solo:4242"})
	c := startLiveWith(t, nil, func(cfg *Config) {
		cfg.Managers = func() []string { return *mgrs.Load() }
	}, &shoalv1.ClusterSettings{HeartbeatPeriodMs: 300, NodeDownAfterMissed: 4}, "a")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	stream := c.open(t, ctx, "a")
	msgs := make(chan *shoalv1.SessionMessage, 64)
	go func() {
		defer close(msgs)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			msgs <- m
		}
	}()
	status := &shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Status{Status: &shoalv1.TaskStatusBatch{}}}
	// untilSent sends statuses only (no heartbeat) until a message the
	// session sends satisfies want.
	untilSent := func(what string, want func(*shoalv1.SessionMessage) bool) {
		t.Helper()
		tick := time.NewTicker(20 * time.Millisecond) // the statuses' pace
		defer tick.Stop()
		for {
			if err := stream.Send(status); err != nil {
				t.Fatal(err)
			}
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("session ended before %s", what)
				}
				if want(m) {
					return
				}
			case <-tick.C:
			case <-ctx.Done():
				t.Fatalf("a session sending statuses only was not told %s", what)
			}
		}
	}

	if _, err := c.store.Update(ctx, func(tx raftstore.WriteTx) error {
		cl, _ := raftstore.ClusterOf(tx)
		cl = proto.Clone(cl).(*shoalv1.Cluster)
		cl.Settings.HeartbeatPeriodMs = 100
		return tx.Update(cl)
	}); err != nil {
		t.Fatal(err)
	}
	untilSent("the shorter period", func(m *shoalv1.SessionMessage) bool {
		return m.GetHeartbeatAck().GetHeartbeatPeriodMs() == 100
	})
	told := func() time.Duration {
		c.d.mu.Lock()
		defer c.d.mu.Unlock()
		return c.d.told["a"]
	}
	if got := told(); got != 300*time.Millisecond {
		t.Fatalf("judged by %v before a heartbeat named the shorter period, want 300ms", got)
	}
	// The agent names it in a heartbeat (agent's heartbeat, named).
	if err := stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Heartbeat{Heartbeat: &shoalv1.Heartbeat{HeartbeatPeriodMs: 100}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the node judged by the shorter period", func() error {
		if got := told(); got != 100*time.Millisecond {
			return fmt.Errorf("judged by %v", got)
		}
		return nil
	})

	mgrs.Store(&[]string{"solo:4242", "second:4242"})
	c.d.publishManagers(false)
	untilSent("the new manager list", func(m *shoalv1.SessionMessage) bool {
		return slices.Equal(m.GetManagers().GetManagers(), []string{"solo:4242", "second:4242"})
	})
}
