package dispatcher

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func TestScaledPeriod(t *testing.T) {
	tests := []struct {
		base  time.Duration
		nodes int
		want  time.Duration
	}{
		{500 * time.Millisecond, 0, 500 * time.Millisecond},
		{500 * time.Millisecond, 3, 500 * time.Millisecond},
		{500 * time.Millisecond, 500, 500 * time.Millisecond},
		{500 * time.Millisecond, 1000, time.Second},
		{500 * time.Millisecond, 5000, 5 * time.Second},
		{2 * time.Second, 1000, 2 * time.Second}, // a longer setting wins
		{2 * time.Second, 5000, 5 * time.Second},
	}
	for _, tt := range tests {
		if got := scaledPeriod(tt.base, tt.nodes); got != tt.want {
			t.Errorf("scaledPeriod(%v, %d) = %v, want %v", tt.base, tt.nodes, got, tt.want)
		}
	}
}

// TestWelcomeScalesPeriod: a session opening in a cluster of 1,500 nodes
// at the default 500 ms period is told 1.5 s (the leader's heartbeat
// load stays at heartbeatBudget a second), and the node is judged by the
// period it was told.
func TestWelcomeScalesPeriod(t *testing.T) {
	names := make([]string, 1500)
	for i := range names {
		names[i] = fmt.Sprintf("n%04d", i)
	}
	c := startLive(t, nil, names...)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, welcome := c.openWelcomed(t, ctx, "n0001")
	if got := welcome.GetHeartbeatPeriodMs(); got != 1500 {
		t.Fatalf("welcome period %d ms, want 1500 (1,500 nodes at 1,000 heartbeats/s)", got)
	}
	c.d.mu.Lock()
	told := c.d.told["n0001"]
	c.d.mu.Unlock()
	if told != 1500*time.Millisecond {
		t.Fatalf("told period recorded %v, want 1.5s", told)
	}
}

// TestOpenSessionToldNewPeriod: a heartbeat period change (the cluster setting
// heartbeat_period_ms, or the cluster's size) reaches an open session in a
// heartbeat's acknowledgement, not only at its next opening; the node is
// judged by a longer period at once and by a shorter one only from a
// heartbeat saying the agent uses it: an agent still waiting out the longer
// one, or one of the previous release (its heartbeats name no period), is
// not judged by the shorter one (it would be marked DOWN while it
// heartbeats as it was told).
func TestOpenSessionToldNewPeriod(t *testing.T) {
	c := startLive(t, &shoalv1.ClusterSettings{HeartbeatPeriodMs: 100, NodeDownAfterMissed: 4}, "a", "b")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	stream, welcome := c.openWelcomed(t, ctx, "a")
	if got := welcome.GetHeartbeatPeriodMs(); got != 100 {
		t.Fatalf("welcome period %d ms, want 100", got)
	}
	setPeriod := func(ms int64) {
		t.Helper()
		if _, err := c.store.Update(ctx, func(tx raftstore.WriteTx) error {
			cl, _ := raftstore.ClusterOf(tx)
			cl = proto.Clone(cl).(*shoalv1.Cluster)
			cl.Settings.HeartbeatPeriodMs = ms
			return tx.Update(cl)
		}); err != nil {
			t.Fatal(err)
		}
	}
	told := func() time.Duration {
		c.d.mu.Lock()
		defer c.d.mu.Unlock()
		return c.d.told["a"]
	}
	// heartbeatAt sends one heartbeat saying the agent heartbeats every
	// uses ms (0: an agent of the previous release) and returns the period
	// its ack names.
	uses := int64(100)
	heartbeatAt := func(uses int64) int64 {
		t.Helper()
		if err := stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Heartbeat{Heartbeat: &shoalv1.Heartbeat{HeartbeatPeriodMs: uses}}}); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if ack := m.GetHeartbeatAck(); ack != nil {
				return ack.GetHeartbeatPeriodMs()
			}
		}
	}
	heartbeat := func() int64 { t.Helper(); return heartbeatAt(uses) }
	// untilTold heartbeats until an ack names ms (the liveness monitor
	// reads the settings every quarter period).
	untilTold := func(ms int64) {
		t.Helper()
		for heartbeat() != ms {
			if ctx.Err() != nil {
				t.Fatalf("no acknowledgement told the session %d ms", ms)
			}
			time.Sleep(10 * time.Millisecond) // the next heartbeat
		}
	}

	setPeriod(300)
	untilTold(300)
	uses = 300
	if got := told(); got != 300*time.Millisecond {
		t.Fatalf("node judged by %v after a longer period was told, want 300ms at once", got)
	}
	if got := heartbeat(); got != 0 {
		t.Fatalf("an unchanged period was told again (%d ms)", got)
	}

	setPeriod(50)
	untilTold(50)
	if got := told(); got != 300*time.Millisecond {
		t.Fatalf("node judged by %v right after a shorter period was told, want the longer 300ms until its next heartbeat", got)
	}
	heartbeatAt(0)
	if got := told(); got != 300*time.Millisecond {
		t.Fatalf("node judged by %v after a heartbeat naming no period (previous release), want the longer 300ms", got)
	}
	heartbeat()
	if got := told(); got != 300*time.Millisecond {
		t.Fatalf("node judged by %v after a heartbeat at the longer period, want 300ms", got)
	}
	uses = 50
	heartbeat()
	if got := told(); got != 50*time.Millisecond {
		t.Fatalf("node judged by %v after a heartbeat at the shorter period, want 50ms", got)
	}
}

// TestMonitorInterval: the liveness monitor runs four times a period and
// at least once a second.
func TestMonitorInterval(t *testing.T) {
	for _, c := range []struct{ period, want time.Duration }{
		{100 * time.Millisecond, 25 * time.Millisecond},
		{500 * time.Millisecond, 125 * time.Millisecond},
		{4 * time.Second, time.Second},
		{time.Minute, time.Second},
	} {
		if got := monitorInterval(c.period); got != c.want {
			t.Errorf("monitorInterval(%v) = %v, want %v", c.period, got, c.want)
		}
	}
}

// TestMonitorFollowsShortenedPeriod: a dispatcher started under a long
// heartbeat period reads a shortened one (and tells it to sessions) within
// its bounded interval, not a quarter of the long period later.
func TestMonitorFollowsShortenedPeriod(t *testing.T) {
	c := startLive(t, &shoalv1.ClusterSettings{HeartbeatPeriodMs: (10 * time.Minute).Milliseconds(), NodeDownAfterMissed: 4}, "a")
	scaled := func(want time.Duration) func() error {
		return func() error {
			if got := time.Duration(c.d.scaled.Load()); got != want {
				return fmt.Errorf("session period %v, want %v", got, want)
			}
			return nil
		}
	}
	eventually(t, "the long period read", scaled(10*time.Minute))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := c.store.Update(ctx, func(tx raftstore.WriteTx) error {
		cl, _ := raftstore.ClusterOf(tx)
		cl = proto.Clone(cl).(*shoalv1.Cluster)
		cl.Settings.HeartbeatPeriodMs = 100
		return tx.Update(cl)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the shortened period read", scaled(100*time.Millisecond))
}
