package dispatcher

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
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
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var welcome *shoalv1.SessionWelcome
	for welcome == nil {
		stream, err := shoalv1.NewDispatcherClient(conn).Session(withNode(ctx, "n0001"))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Hello{Hello: &shoalv1.AgentHello{Addr: "n0001:4242"}}}); err != nil {
			t.Fatal(err)
		}
		first, err := stream.Recv()
		if err == nil && first.GetWelcome() != nil {
			welcome = first.GetWelcome()
			break
		}
		if err == nil || !strings.Contains(err.Error(), "not the leader") || ctx.Err() != nil {
			t.Fatalf("welcome: %v %v", first, err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval while Run takes over
	}
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
