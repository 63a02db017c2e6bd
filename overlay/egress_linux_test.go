package overlay

import (
	"net"
	"strconv"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// nodeLocal gives task namespace tns a node-local interface like
// agent/network's: 10.99.<host>.<n>/24 with host-side 10.99.<host>.1 and
// the default route through it.
func nodeLocal(t *testing.T, hostNS, tns string, host int, n int) {
	hv := "nl" + tns[len(tns)-2:]
	run(t, "ip", "-n", hostNS, "link", "add", hv, "type", "veth", "peer", "name", "eth0", "netns", tns)
	run(t, "ip", "-n", hostNS, "addr", "add", "10.99."+itoa(host)+".1/24", "dev", hv)
	run(t, "ip", "-n", hostNS, "link", "set", hv, "up")
	run(t, "ip", "-n", tns, "addr", "add", "10.99."+itoa(host)+"."+itoa(n)+"/24", "dev", "eth0")
	run(t, "ip", "-n", tns, "link", "set", "eth0", "up")
	run(t, "ip", "-n", tns, "route", "add", "default", "via", "10.99."+itoa(host)+".1")
}

var itoa = strconv.Itoa

// Egress: a task reaches an address beyond its node (host 2's underlay
// address, which has no route back to the task subnet) through the
// masquerade; a task on an internal network does not.
func TestEgressMasqueradeAndInternal(t *testing.T) {
	h := newHarness(t)
	h1, h2 := h.host(1), h.host(2)
	m1 := h.manager(h1, 1)
	ext, pe := h.task("e1")
	intl, pi := h.task("i1")
	nodeLocal(t, h1, ext, 1, 2)
	nodeLocal(t, h1, intl, 1, 3)
	pub := testNet("pub", 4501, "10.83.0.0/24", false)
	priv := testNet("priv", 4502, "10.84.0.0/24", true)
	if err := m1.Reconcile(bg, []*shoalv1.NetworkState{{Network: pub}, {Network: priv}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m1.Attach(bg, pe, att(pub, "10.83.0.2"), pub); err != nil {
		t.Fatal(err)
	}
	if r, err := m1.Attach(bg, pi, att(priv, "10.84.0.2"), priv); err != nil || !r.NoEgress {
		t.Fatalf("internal attach: %+v %v", r, err)
	}
	var l net.Listener
	var err error
	inNS(t, h2, func() { l, err = net.Listen("tcp", "192.168.250.2:7100") })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peer := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		peer <- c.RemoteAddr().String()
		c.Close()
	}()
	c, err := dialFrom(t, ext, "192.168.250.2:7100", 5*time.Second)
	if err != nil {
		t.Fatalf("egress through the masquerade: %v", err)
	}
	c.Close()
	if got, _, _ := net.SplitHostPort(<-peer); got != "192.168.250.1" {
		t.Fatalf("peer saw %s, want the node's address", got)
	}
	if c, err := dialFrom(t, intl, "192.168.250.2:7100", 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a task on an internal network reached beyond its node")
	}
}
