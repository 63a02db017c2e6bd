package membership

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// waitFor is generous: two busy cores, other suites running alongside.
const waitFor = 30 * time.Second

// TestReconcileCoalescesNodeEvents: a burst of node events (sessions
// opening: one each) costs a few reconcile passes, not one pass, that is
// one listing of every node, per event; the last event is still acted on.
func TestReconcileCoalescesNodeEvents(t *testing.T) {
	_, trans := raft.NewInmemTransport("solo:4242")
	const rt = 100 * time.Millisecond
	s, err := raftstore.Open(raftstore.Config{
		NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: rt, ElectionTimeout: rt, LeaderLeaseTimeout: rt, CommitTimeout: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	poll(t, "the store leads", func() bool { return s.IsLeader() })
	srv := New(s, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	const events = 200
	for i := range events {
		if _, err := s.Update(ctx, func(tx raftstore.WriteTx) error {
			return tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: fmt.Sprintf("w%03d", i)}})
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The last event: the manager's own node, whose status a pass records.
	if _, err := s.Update(ctx, func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: "solo"}})
	}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the manager's status recorded", func() bool {
		n, ok := raftstore.Get[*shoalv1.Node](s.View(), "solo")
		return ok && n.GetManagerStatus() != nil
	})
	if p := srv.passes.Load(); p > events/4 {
		t.Fatalf("%d reconcile passes for %d node events, want them coalesced", p, events+1)
	}
}

// poll waits for cond with a deadline (a poll, not a timing assertion).
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, waitFor)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
