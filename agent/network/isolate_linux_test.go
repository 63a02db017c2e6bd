package network

import (
	"net/netip"
	"testing"
)

// TestIsolate: two tasks whose ports are isolated (tasks on overlay
// networks) cannot reach each other through the node bridge — otherwise
// tasks of two different overlay networks on one node would talk through
// their node-local addresses and bypass the overlay's isolation — while
// each still reaches the node (egress) and a task that is not isolated.
func TestIsolate(t *testing.T) {
	inFreshNetNS(t)
	m := newTestManager(t, Config{})
	a := setup(t, m, "iso-a")
	b := setup(t, m, "iso-b")
	c := setup(t, m, "iso-c")
	serveHello(t, b.NetNSPath, "iso-b")
	serveHello(t, c.NetNSPath, "iso-c")
	// Before: a reaches b (the check below would prove nothing otherwise).
	if got, err := fetchHello(t, a.NetNSPath, addrOf(t, b)); err != nil || got != "hello from iso-b" {
		t.Fatalf("before isolation a -> b: %q, %v", got, err)
	}
	for _, id := range []string{"iso-a", "iso-b", "iso-b"} { // twice: idempotent
		if err := m.Isolate(id); err != nil {
			t.Fatalf("Isolate(%s): %v", id, err)
		}
	}
	if got, err := fetchHello(t, a.NetNSPath, addrOf(t, b)); err == nil {
		t.Errorf("isolated a reached isolated b: %q", got)
	}
	if got, err := fetchHello(t, a.NetNSPath, addrOf(t, c)); err != nil || got != "hello from iso-c" {
		t.Errorf("isolated a -> c (not isolated): %q, %v", got, err)
	}
	if err := ping(t, a.NetNSPath, netip.MustParseAddr(a.Gateway)); err != nil {
		t.Errorf("isolated a -> the node: %v", err)
	}
	if err := m.Isolate("no-such-task"); err == nil {
		t.Error("Isolate of a task without a veth: no error")
	}
}
