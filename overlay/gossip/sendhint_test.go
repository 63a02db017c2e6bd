package gossip

import (
	"net"
	"testing"
	"time"
)

// SendHint reaches the other members directly: with gossip and probes
// slowed to an hour, the hint still arrives, with its sender.
func TestSendHintDirect(t *testing.T) {
	hr := &hintRec{hints: map[string][]string{}}
	k := key(t)
	slow := Tuning{ProbeInterval: time.Hour, GossipInterval: time.Hour, PushPullInterval: time.Hour}
	var nodes []*Node
	for _, id := range []string{"s0", "s1", "s2"} {
		id := id
		n, err := New(Config{NodeID: id, BindAddr: "127.0.0.1", AdvertiseAddr: "127.0.0.1", Port: -1,
			Keys: [][]byte{k}, Tuning: slow, OnHint: func(from Sender, b []byte) {
				hr.add(id, from.NodeID+"@"+from.Addr.String(), b)
			}})
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
	waitFor(t, "s0 knows everyone", func() bool { return len(aliveOf(nodes[0])) == 3 })
	if err := nodes[0].SendHint([]byte("direct")); err != nil {
		t.Fatal(err)
	}
	// The hint arrives with its sender: s0 at its gossip address.
	want := "s0@" + nodes[0].Addr() + ":direct"
	waitFor(t, "the hint at s1 and s2", func() bool { return hr.has("s1", want) && hr.has("s2", want) })
	if hr.has("s0", want) {
		t.Fatal("s0 received its own hint")
	}
	if err := nodes[0].SendHint(make([]byte, MaxHintSize+1)); err == nil {
		t.Fatal("oversized hint accepted")
	}
}

func aliveOf(n *Node) []string {
	var out []string
	for _, m := range n.Members() {
		if m.State == StateAlive {
			out = append(out, m.NodeID)
		}
	}
	return out
}

// TestForgedHintSenderRejected: a key holder cannot pass a hint off as
// another member's. Hints sealed with the cluster key but claiming to come
// from n0 — sent by member n2 from its own gossip socket, and by a plain
// socket that is no member — are dropped and counted; n0's own hint, and
// n2's under its own name, are accepted.
func TestForgedHintSenderRejected(t *testing.T) {
	k := key(t)
	hr := &hintRec{hints: map[string][]string{}}
	nodes, _ := cluster(t, 3, [][]byte{k}, hr)
	forged, err := sealHintPacket(k, "n0", []byte("forged"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nodes[2].transport.sendHintPacket(forged, nodes[1].Addr()); err != nil {
		t.Fatal(err)
	}
	stranger, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	dst, err := net.ResolveUDPAddr("udp4", nodes[1].Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stranger.WriteTo(forged, dst); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both forged hints rejected", func() bool { return nodes[1].HintsRejected() >= 2 })
	for _, n := range []*Node{nodes[0], nodes[2]} {
		if err := n.SendHint([]byte("real")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the real hints", func() bool { return hr.has("n1", "n0:real") && hr.has("n1", "n2:real") })
	if hr.has("n1", "n0:forged") {
		t.Fatal("n1 accepted a hint forged in n0's name")
	}
}
