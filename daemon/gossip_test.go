package daemon

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"
)

// freePort returns a port free for TCP and UDP on 127.0.0.1 right now.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
		l.Close()
		if err == nil {
			u.Close()
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

// TestNodeGossip: two nodes start with placeholder keys (they cannot talk),
// get the cluster's keys and a peer from "the session", join, and see each
// other alive through the dispatcher's view; a rotation keeps them alive.
func TestNodeGossip(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := startGossip(log, "a", "127.0.0.1", freePort(t))
	t.Cleanup(a.close)
	b := startGossip(log, "b", "127.0.0.1", freePort(t))
	t.Cleanup(b.close)
	if a.Addr() == "" || b.Addr() == "" {
		t.Fatal("gossip did not start")
	}
	if s, _ := a.State("b"); s != "" {
		t.Fatalf("a sees b as %q before any key", s)
	}
	k1 := bytes.Repeat([]byte{1}, 32)
	a.SetGossip([][]byte{k1}, nil)
	b.SetGossip([][]byte{k1}, []string{a.Addr(), b.Addr()})
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out: %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	alive := func() bool {
		sa, addr := a.State("b")
		sb, _ := b.State("a")
		return sa == "alive" && sb == "alive" && addr == b.Addr()
	}
	wait("a and b alive to each other", alive)
	k2 := bytes.Repeat([]byte{2}, 32)
	b.SetGossip([][]byte{k2, k1}, []string{a.Addr()})
	a.SetGossip([][]byte{k2, k1}, []string{b.Addr()})
	wait("alive after rotation", alive)
	// Disabled gossip: no address, empty view.
	off := startGossip(log, "c", "127.0.0.1", -1)
	if off.Addr() != "" {
		t.Fatal("disabled gossip has an address")
	}
	off.SetGossip([][]byte{k1}, []string{a.Addr()})
	if s, _ := off.State("a"); s != "" {
		t.Fatal("disabled gossip has a view")
	}
}
