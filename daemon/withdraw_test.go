package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/overlay"
	"github.com/shoal-dev/shoal/overlay/gossip"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
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

// TestAcknowledgeAfterRefresh: a node acknowledges the stopping tasks of
// a refresh only if the refresh succeeded (a failed one may have left a
// VIP listing them), and then on the next successful one.
func TestAcknowledgeAfterRefresh(t *testing.T) {
	side := &agentSide{vtep: netip.MustParseAddr("192.0.2.1"), withdrawn: newWithdrawals(),
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	all := []*shoalv1.NetworkState{{Network: &shoalv1.Network{Meta: &shoalv1.Meta{Id: "n"}},
		Endpoints: []*shoalv1.Endpoint{{TaskId: "old", NodeAddr: "192.0.2.2", State: shoalv1.TaskState_TASK_STATE_SHUTDOWN},
			{TaskId: "new", NodeAddr: "192.0.2.2", State: shoalv1.TaskState_TASK_STATE_RUNNING}}}}
	if got := side.acknowledge(all, errors.New("task x: vip: nftables: EPERM")); len(got) != 0 {
		t.Fatalf("acknowledged %v after a failed refresh", got)
	}
	if m := side.withdrawn.missing("old", []netip.Addr{side.vtep}); len(m) != 1 {
		t.Fatal("this node counted as having withdrawn after a failed refresh")
	}
	if got := side.acknowledge(all, nil); !slices.Equal(got, []string{"old"}) {
		t.Fatalf("acknowledged %v, want [old]", got)
	}
	if m := side.withdrawn.missing("old", []netip.Addr{side.vtep}); len(m) != 0 {
		t.Fatal("this node's own acknowledgement not recorded")
	}
}

func TestRefreshDelayHook(t *testing.T) {
	for v, want := range map[string]time.Duration{"": 0, "2s": 2 * time.Second, "150ms": 150 * time.Millisecond, "10s": maxRefreshDelay} {
		if d, err := refreshDelay(v); err != nil || d != want {
			t.Errorf("%q: %v, %v; want %v", v, d, err, want)
		}
	}
	for _, v := range []string{"2", "soon", "-1s", "11s", "1h"} {
		if _, err := refreshDelay(v); err == nil || !strings.Contains(err.Error(), refreshDelayEnv) {
			t.Errorf("%q: err %v, want one naming %s", v, err, refreshDelayEnv)
		}
	}
}

// TestWithdrawalNodes: a drain waits for this node and the other nodes
// gossip holds alive; without gossip (alive nil) for this node only —
// no other node's acknowledgement could arrive, and each stop would
// wait out half its grace period.
func TestWithdrawalNodes(t *testing.T) {
	self, up, down := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	eps := func() []netip.Addr { return []netip.Addr{self, up, down} }
	if got := withdrawalNodes(eps(), self, map[netip.Addr]bool{up: true}); !slices.Equal(got, []netip.Addr{self, up}) {
		t.Fatalf("with gossip: %v, want [%s %s]", got, self, up)
	}
	if got := withdrawalNodes(eps(), self, nil); !slices.Equal(got, []netip.Addr{self}) {
		t.Fatalf("without gossip: %v, want [%s]", got, self)
	}
	if got := withdrawalNodes(eps(), self, (&nodeGossip{}).alive()); !slices.Equal(got, []netip.Addr{self}) {
		t.Fatalf("gossip not started: %v, want [%s]", got, self)
	}
}

// TestWithdrawalsExpiry: acknowledgements older than withdrawnTTL go at
// the next refresh (not only when another task's arrives: after the
// last rollout they stayed for good), but not while a drain waits for
// them (a refresh slower than the TTL would have made it wait for the
// acknowledgements already received again).
func TestWithdrawalsExpiry(t *testing.T) {
	self, peer, slow := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	w := newWithdrawals()
	now := time.Now()
	w.add("old", peer, now)
	w.acknowledge(nil, self, now.Add(2*withdrawnTTL))
	if _, ok := w.acks["old"]; ok {
		t.Fatal("an expired acknowledgement kept past a refresh")
	}

	w.add("t", peer, now)
	done := make(chan bool)
	go func() { done <- w.wait(context.Background(), "t", []netip.Addr{peer, slow}) }()
	for deadline := time.Now().Add(5 * time.Second); ; {
		w.mu.Lock()
		n := w.waiting["t"]
		w.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the drain did not start waiting")
		}
		runtime.Gosched()
	}
	w.add("other", peer, now.Add(2*withdrawnTTL)) // expires what no drain waits for
	w.add("t", slow, now.Add(2*withdrawnTTL))
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("wait failed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the peer's acknowledgement was expired while a drain waited for it")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.waiting) != 0 {
		t.Fatalf("waiting %v after the drain", w.waiting)
	}
}
