package gossip

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// fastTuning makes failure detection quick on loopback so tests finish in
// seconds; nothing is asserted about timing.
var fastTuning = Tuning{
	ProbeInterval:    100 * time.Millisecond,
	ProbeTimeout:     50 * time.Millisecond,
	GossipInterval:   20 * time.Millisecond,
	SuspicionMult:    2,
	PushPullInterval: time.Second,
	TCPTimeout:       time.Second,
}

func key(t testing.TB) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

type hintRec struct {
	mu    sync.Mutex
	hints map[string][]string
}

func (h *hintRec) add(self, from string, b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hints[self] = append(h.hints[self], from+":"+string(b))
}

func (h *hintRec) has(self, want string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.hints[self] {
		if s == want {
			return true
		}
	}
	return false
}

func startNode(t testing.TB, id string, keys [][]byte, hr *hintRec) *Node {
	t.Helper()
	cfg := Config{NodeID: id, BindAddr: "127.0.0.1", AdvertiseAddr: "127.0.0.1", Port: -1,
		Keys: keys, Tuning: fastTuning}
	if hr != nil {
		cfg.OnHint = func(from Sender, b []byte) { hr.add(id, from.NodeID, b) }
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown() })
	return n
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	waitForD(t, 20*time.Second, what, cond)
}

func waitForD(t testing.TB, max time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(max)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func stateOf(n *Node, id string) State {
	s, _ := n.State(id)
	return s
}

func allAlive(nodes []*Node, ids ...string) func() bool {
	return func() bool {
		for _, n := range nodes {
			for _, id := range ids {
				if stateOf(n, id) != StateAlive {
					return false
				}
			}
		}
		return true
	}
}

func cluster(t *testing.T, count int, keys [][]byte, hr *hintRec) ([]*Node, []string) {
	var nodes []*Node
	var ids []string
	for i := 0; i < count; i++ {
		id := fmt.Sprintf("n%d", i)
		n := startNode(t, id, keys, hr)
		if i > 0 {
			if _, err := n.Join([]string{nodes[0].Addr()}); err != nil {
				t.Fatal(err)
			}
		}
		nodes = append(nodes, n)
		ids = append(ids, id)
	}
	waitFor(t, "all alive", allAlive(nodes, ids...))
	return nodes, ids
}

func TestJoinAndDeath(t *testing.T) {
	var evMu sync.Mutex
	var seen []Event
	k := key(t)
	nodes, _ := cluster(t, 4, [][]byte{k}, nil)
	// a watcher with an event callback joins last
	w, err := New(Config{NodeID: "watch", BindAddr: "127.0.0.1", Port: -1, Keys: [][]byte{k}, Tuning: fastTuning,
		OnEvent: func(e Event) { evMu.Lock(); seen = append(seen, e); evMu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Shutdown() })
	if _, err := w.Join([]string{nodes[1].Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "watcher sees all", allAlive([]*Node{w}, "n0", "n1", "n2", "n3"))
	if got := len(w.Members()); got != 5 {
		t.Fatalf("watcher has %d members, want 5", got)
	}

	nodes[3].Shutdown() // no leave message: must be detected dead
	waitFor(t, "n3 dead everywhere", func() bool {
		for _, n := range append(nodes[:3], w) {
			if stateOf(n, "n3") != StateDead {
				return false
			}
		}
		return true
	})
	waitFor(t, "dead event", func() bool {
		evMu.Lock()
		defer evMu.Unlock()
		for _, e := range seen {
			if e.Member.NodeID == "n3" && e.Member.State == StateDead {
				return true
			}
		}
		return false
	})

	if err := nodes[2].Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	// Gone everywhere. Left rather than dead needs the "leaving" meta
	// update to reach a member before the leave itself, which gossip does
	// not order: on a loaded machine a leave can read as a death. Liveness
	// treats both alike; what must hold is that the member is gone.
	gone := func(s State) bool { return s == StateLeft || s == StateDead }
	waitFor(t, "n2 gone", func() bool { return gone(stateOf(nodes[0], "n2")) && gone(stateOf(w, "n2")) })
	if s := stateOf(nodes[0], "n1"); s != StateAlive {
		t.Fatalf("n1 is %s, want alive", s)
	}
}

func TestWrongKeyIsNotLetIn(t *testing.T) {
	k := key(t)
	hr := &hintRec{hints: map[string][]string{}}
	nodes, _ := cluster(t, 3, [][]byte{k}, hr)
	bad := startNode(t, "intruder", [][]byte{key(t)}, hr)
	if _, err := bad.Join([]string{nodes[0].Addr()}); err == nil {
		t.Fatal("join with a wrong key succeeded")
	}
	// The intruder gossips at the members (it knows their addresses) and
	// broadcasts hints; none of it may be accepted.
	if _, err := bad.ml.Join([]string{nodes[1].Addr(), nodes[2].Addr()}); err == nil {
		t.Fatal("second join with a wrong key succeeded")
	}
	// It also sends hint packets straight at the members' sockets.
	evil, err := sealHintPacket(bad.keyring.GetPrimaryKey(), "intruder", []byte("evil"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := bad.transport.sendHintPacket(evil, n.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	// Drive a hint among the members and prove it arrived, so absence of
	// the intruder's is not just slowness.
	if err := nodes[0].SendHint([]byte("good")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "good hint", func() bool { return hr.has("n1", "n0:good") && hr.has("n2", "n0:good") })
	waitFor(t, "the intruder's hints counted as rejected", func() bool {
		return nodes[1].HintsRejected() > 0 && nodes[2].HintsRejected() > 0
	})
	for _, n := range nodes {
		if s := stateOf(n, "intruder"); s != StateUnknown {
			t.Fatalf("%s sees intruder as %s", n.cfg.NodeID, s)
		}
		if hr.has(n.cfg.NodeID, "intruder:evil") {
			t.Fatalf("%s accepted a hint from the intruder", n.cfg.NodeID)
		}
	}
	if got := bad.NumAlive(); got != 1 {
		t.Fatalf("intruder sees %d alive members, want only itself", got)
	}
}

// TestKeyRotationKeepsEveryoneAlive runs rotations as the managers do
// them (gossipkeys): a new key is prepended, older ones stay until the
// leader drops them a grace period later; nodes receive each list one at
// a time. Two rotations in a row do not cut off a node that received
// neither: it still exchanges hints both ways with the rotated nodes.
func TestKeyRotationKeepsEveryoneAlive(t *testing.T) {
	k1 := key(t)
	hr := &hintRec{hints: map[string][]string{}}
	nodes, ids := cluster(t, 5, [][]byte{k1}, hr)
	k2, k3 := key(t), key(t)
	for i, n := range nodes[:4] {
		if err := n.SetKeys([][]byte{k2, k1}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(n.keyring.GetPrimaryKey(), k1) || n.NumKeys() != 2 {
			t.Fatalf("node %d: after the rotation it must accept both and still encrypt with the old key", i)
		}
		waitFor(t, "alive mid-rotation", allAlive(nodes, ids...))
	}
	for _, n := range nodes[:4] {
		if err := n.SetKeys([][]byte{k3, k2, k1}); err != nil {
			t.Fatal(err)
		}
	}
	// n4 has received neither rotation.
	for i, n := range []*Node{nodes[0], nodes[4]} {
		if err := n.SendHint([]byte(fmt.Sprintf("r%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "hints between n4 (no rotation) and n0 (two)", func() bool { return hr.has("n4", "n0:r0") && hr.has("n0", "n4:r1") })
	waitFor(t, "alive after two rotations", allAlive(nodes, ids...))
	// The drops: first the keys the first rotation superseded, then the
	// second's; n4 catches up with each list.
	for _, keys := range [][][]byte{{k3, k2}, {k3}} {
		for _, n := range nodes {
			if err := n.SetKeys(keys); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "alive while dropping", allAlive(nodes, ids...))
		}
	}
	for _, n := range nodes {
		if n.NumKeys() != 1 || !bytes.Equal(n.keyring.GetPrimaryKey(), k3) {
			t.Fatalf("%s holds %d keys, or does not encrypt with the newest", n.cfg.NodeID, n.NumKeys())
		}
	}
	// A node that only has a dropped key is now refused.
	old := startNode(t, "old", [][]byte{k1}, nil)
	if _, err := old.Join([]string{nodes[0].Addr()}); err == nil {
		t.Fatal("node with a retired key joined")
	}
	// A new node with the current list joins.
	fresh := startNode(t, "fresh", [][]byte{k3}, nil)
	if _, err := fresh.Join([]string{nodes[4].Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "fresh alive", allAlive(nodes, "fresh"))
}

func TestHints(t *testing.T) {
	hr := &hintRec{hints: map[string][]string{}}
	nodes, ids := cluster(t, 4, [][]byte{key(t)}, hr)
	for i, n := range nodes {
		if err := n.SendHint([]byte(fmt.Sprintf("ep-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "all hints everywhere", func() bool {
		for i := range nodes {
			for j := range nodes {
				if i != j && !hr.has(ids[j], fmt.Sprintf("%s:ep-%d", ids[i], i)) {
					return false
				}
			}
		}
		return true
	})
	for _, id := range ids {
		if hr.has(id, id+":ep-"+id[1:]) {
			t.Fatalf("%s received its own hint", id)
		}
	}
	if err := nodes[0].SendHint(make([]byte, MaxHintSize+1)); err == nil {
		t.Fatal("oversized hint accepted")
	}
	if err := nodes[0].SendHint(nil); err == nil {
		t.Fatal("empty hint accepted")
	}
}

func TestConfigValidation(t *testing.T) {
	if _, err := New(Config{Keys: [][]byte{make([]byte, 32)}}); err == nil {
		t.Fatal("no NodeID accepted")
	}
	if _, err := New(Config{NodeID: "a"}); err == nil {
		t.Fatal("no key accepted")
	}
	if _, err := New(Config{NodeID: "a", Keys: [][]byte{make([]byte, 7)}}); err == nil {
		t.Fatal("7-byte key accepted")
	}
	n, err := New(Config{NodeID: "a", Keys: [][]byte{make([]byte, 32)}})
	if err != nil || n.cfg.Port != DefaultPort || n.cfg.BindAddr != "0.0.0.0" {
		t.Fatalf("defaults: %v %+v", err, n.cfg)
	}
}

// TestLogWriterLevels: memberlist's levels map to slog's, and a send on the
// socket its own shutdown closed is no error (a clean stop logs none).
func TestLogWriterLevels(t *testing.T) {
	var buf bytes.Buffer
	w := &logWriter{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	fmt.Fprintln(w, "2026/12/06 08:07:25 [ERR] memberlist: Failed to send UDP ping: write udp 1.2.3.4:7946->1.2.3.5:7946: use of closed network connection")
	fmt.Fprintln(w, "2026/12/06 08:07:25 [ERR] memberlist: Failed to receive: boom")
	fmt.Fprintln(w, "2026/12/06 08:07:25 [WARN] memberlist: Was able to connect to x over TCP but UDP probes failed")
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "level=DEBUG") || !strings.Contains(lines[1], "level=ERROR") || !strings.Contains(lines[2], "level=WARN") {
		t.Fatalf("levels:\n%s", out)
	}
}
