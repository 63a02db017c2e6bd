package gossipkeys

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func newStore(t *testing.T, keys [][]byte) *raftstore.Store {
	t.Helper()
	_, trans := raft.NewInmemTransport("solo:4242")
	st, err := raftstore.Open(raftstore.Config{
		NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !st.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("the store never led")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c1"}, Name: "test", GossipKeys: keys})
	}); err != nil {
		t.Fatal(err)
	}
	return st
}

func keysOf(st *raftstore.Store) [][]byte {
	c, _ := raftstore.ClusterOf(st.View())
	return c.GetGossipKeys()
}

// waitKeys polls the store until its keys are want.
func waitKeys(t *testing.T, st *raftstore.Store, want ...[]byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := keysOf(st)
		same := len(got) == len(want)
		for i := 0; same && i < len(got); i++ {
			same = bytes.Equal(got[i], want[i])
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys: have %d, want %d (or different ones)", len(got), len(want))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func runDropper(t *testing.T, st *raftstore.Store, grace time.Duration) {
	t.Helper()
	d := newDropper(st, nil)
	d.grace = func(*shoalv1.ClusterSettings) time.Duration { return grace }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func rotate(t *testing.T, st *raftstore.Store) [][]byte {
	t.Helper()
	var out [][]byte
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
		c, _ := raftstore.ClusterOf(tx)
		c = proto.Clone(c).(*shoalv1.Cluster)
		keys, err := Rotate(c.GetGossipKeys())
		if err != nil {
			return err
		}
		c.GossipKeys, out = keys, keys
		return tx.Update(c)
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDropperDropsAfterRotation: after a rotation the superseded key is
// kept for the grace period and then dropped, leaving the new key alone.
func TestDropperDropsAfterRotation(t *testing.T) {
	st := newStore(t, [][]byte{k(1)})
	runDropper(t, st, 300*time.Millisecond)
	keys := rotate(t, st)
	if got := keysOf(st); len(got) != 2 {
		t.Fatalf("right after the rotation: %d keys, want 2 (the old one still accepted)", len(got))
	}
	waitKeys(t, st, keys[0])
}

// TestDropperTwoRotations: two rotations in a row keep the oldest key
// until the first rotation's grace ends, then each drop removes only what
// its rotation superseded, ending with the newest key alone.
func TestDropperTwoRotations(t *testing.T) {
	st := newStore(t, [][]byte{k(1)})
	runDropper(t, st, 300*time.Millisecond)
	first := rotate(t, st)
	second := rotate(t, st)
	if got := keysOf(st); len(got) != 3 || !bytes.Equal(got[2], k(1)) {
		t.Fatalf("after two rotations: %d keys, want 3 with the original last", len(got))
	}
	if !bytes.Equal(second[1], first[0]) {
		t.Fatal("second rotation did not keep the first one's key")
	}
	waitKeys(t, st, second[0])
}

// TestDropperFinishesPendingDrop: a Dropper started (a new leader) with
// superseded keys in the store drops them after a grace period of its own.
func TestDropperFinishesPendingDrop(t *testing.T) {
	st := newStore(t, [][]byte{k(2), k(1)})
	runDropper(t, st, 100*time.Millisecond)
	waitKeys(t, st, k(2))
}
