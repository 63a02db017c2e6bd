package gossip

import (
	"testing"
	"time"
)

// SendHint reaches the other members directly: with gossip and probes
// slowed to an hour (so nothing is piggybacked), the hint still arrives.
func TestSendHintDirect(t *testing.T) {
	hr := &hintRec{hints: map[string][]string{}}
	k := key(t)
	slow := Tuning{ProbeInterval: time.Hour, GossipInterval: time.Hour, PushPullInterval: time.Hour}
	var nodes []*Node
	for _, id := range []string{"s0", "s1", "s2"} {
		id := id
		n, err := New(Config{NodeID: id, BindAddr: "127.0.0.1", AdvertiseAddr: "127.0.0.1", Port: -1,
			Keys: [][]byte{k}, Tuning: slow, OnHint: func(from string, b []byte) { hr.add(id, from, b) }})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Shutdown() })
		if len(nodes) > 0 {
			if _, err := n.Join([]string{nodes[0].Addr()}); err != nil {
				t.Fatal(err)
			}
		}
		nodes = append(nodes, n)
	}
	waitFor(t, "s0 knows everyone", func() bool { return nodes[0].NumAlive() == 3 })
	if err := nodes[0].SendHint([]byte("direct")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the hint at s1 and s2", func() bool { return hr.has("s1", "s0:direct") && hr.has("s2", "s0:direct") })
	if hr.has("s0", "s0:direct") {
		t.Fatal("s0 received its own hint")
	}
	if err := nodes[0].SendHint(make([]byte, MaxHintSize+1)); err == nil {
		t.Fatal("oversized hint accepted")
	}
}

// A node with no peer never transmits its queued hints (memberlist drops
// a message only after retransmitting it): the queue stays bounded.
func TestHintQueueBoundedWithoutPeers(t *testing.T) {
	n := startNode(t, "alone", [][]byte{key(t)}, nil)
	for i := 0; i < 3*MaxQueuedHints; i++ {
		if err := n.Broadcast([]byte{byte(i), byte(i >> 8)}); err != nil {
			t.Fatal(err)
		}
	}
	if q := n.queue.NumQueued(); q > MaxQueuedHints {
		t.Fatalf("%d hints queued, want at most %d", q, MaxQueuedHints)
	}
}
