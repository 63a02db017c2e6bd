package dispatcher

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/hashicorp/raft"

	"github.com/shoal-dev/shoal/raftstore"
)

// waitFor is generous: two busy cores, other suites running alongside.
const waitFor = 15 * time.Second

func openStore(t testing.TB) *raftstore.Store {
	t.Helper()
	_, trans := raft.NewInmemTransport("solo:4242")
	const rt = 100 * time.Millisecond
	s, err := raftstore.Open(raftstore.Config{
		NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: rt, ElectionTimeout: rt, LeaderLeaseTimeout: rt, CommitTimeout: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	poll(t, "the store leads", func() bool { return s.IsLeader() })
	return s
}

// poll waits for cond with a deadline (a poll, not a timing assertion).
func poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, waitFor)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// identityStream gives a stream the identity mTLS would.
type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s identityStream) Context() context.Context { return s.ctx }
