package daemon

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/overlay"
	"github.com/shoal-dev/shoal/overlay/gossip"
)

// TestWithdrawalsWait: a drain waits until every needed node has
// acknowledged the task (this node's own acknowledgement comes from its
// refresh, once per task; the others' through gossip), and gives up when
// its context ends.
func TestWithdrawalsWait(t *testing.T) {
	self, peer := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	w := newWithdrawals()
	now := time.Now()
	if got := w.acknowledge([]string{"t1", "t2"}, self, now); !slices.Equal(got, []string{"t1", "t2"}) {
		t.Fatalf("first refresh acknowledges %v, want [t1 t2]", got)
	}
	if got := w.acknowledge([]string{"t1", "t2", "t3"}, self, now); !slices.Equal(got, []string{"t3"}) {
		t.Fatalf("second refresh acknowledges %v, want [t3] (each once)", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if w.wait(ctx, "t1", []netip.Addr{self, peer}) {
		t.Fatal("withdrawn without the peer's acknowledgement")
	}
	if m := w.missing("t1", []netip.Addr{self, peer}); !slices.Equal(m, []netip.Addr{peer}) {
		t.Fatalf("missing %v, want [%s]", m, peer)
	}
	done := make(chan bool)
	go func() { done <- w.wait(context.Background(), "t1", []netip.Addr{self, peer}) }()
	w.add("t2", peer, now) // another task's: t1 still waits
	w.add("t1", peer, now)
	if !<-done {
		t.Fatal("not withdrawn after every node acknowledged")
	}
	// An acknowledgement no drain asked for expires.
	w.add("old", peer, now)
	w.add("new", peer, now.Add(2*withdrawnTTL))
	if _, ok := w.acks["old"]; ok {
		t.Fatal("an acknowledgement older than withdrawnTTL is kept")
	}
}

// TestGossipWithdrawnSender: a Withdrawn acknowledgement is passed on only
// when its VTEP is its sender's address (a member speaks for itself).
func TestGossipWithdrawnSender(t *testing.T) {
	g := &nodeGossip{log: slog.New(slog.NewTextHandler(io.Discard, nil)), hints: make(chan []byte, 1)}
	var got []overlay.Withdrawn
	g.setWithdrawnHandler(func(w overlay.Withdrawn) { got = append(got, w) })
	from := gossip.Sender{NodeID: "n2", Addr: netip.MustParseAddrPort("192.0.2.2:7946")}
	own, _ := overlay.Withdrawn{VTEP: netip.MustParseAddr("192.0.2.2"), TaskID: "t1"}.Encode()
	other, _ := overlay.Withdrawn{VTEP: netip.MustParseAddr("192.0.2.3"), TaskID: "t1"}.Encode()
	g.received(from, other)
	g.received(from, own)
	g.received(from, own[:len(own)-1]) // malformed
	if len(got) != 1 || got[0].VTEP != netip.MustParseAddr("192.0.2.2") {
		t.Fatalf("delivered %v, want only the sender's own", got)
	}
	if g.rejected.Load() != 2 {
		t.Fatalf("rejected %d, want 2", g.rejected.Load())
	}
	if len(g.hints) != 0 {
		t.Fatal("a withdrawal was queued as a hint")
	}
}
