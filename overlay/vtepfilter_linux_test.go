package overlay

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// vxlanRx is the packets host's vxlan device of vni has received.
func vxlanRx(t *testing.T, host string, vni uint32) uint64 {
	t.Helper()
	l, err := handleIn(t, host).LinkByName(VXLANName(vni))
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Statistics.RxPackets
}

// sendUDP sends n datagrams from the task namespace to addr.
func sendUDP(t *testing.T, ns, addr string, n int) {
	t.Helper()
	inNS(t, ns, func() {
		c, err := net.Dial("udp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i := 0; i < n; i++ {
			c.Write([]byte("vxlan?")) // best effort: the point is what arrives
		}
	})
}

func wantVTEPs(t *testing.T, m *Manager, want ...netip.Addr) {
	t.Helper()
	got, err := m.AllowedVTEPs()
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("VTEP set %v (%v), want %v", got, err, want)
	}
}

// TestVXLANOnlyFromStateVTEPs: host 1 accepts VXLAN only from the VTEPs
// of the endpoints in its networks. Host 3 knows the VNI and programs an
// entry for host 1's task (a rogue, or a node host 1 has no business
// with): its frames are dropped at host 1's input hook (the filter's
// counter rises, host 1's vxlan device receives nothing); host 2, in the
// state, gets through. The set follows the state: once host 3's endpoint
// is in host 1's state its frames arrive, and host 2 leaves the set with
// its last endpoint.
func TestVXLANOnlyFromStateVTEPs(t *testing.T) {
	h := newHarness(t)
	h1, h2, h3 := h.host(1), h.host(2), h.host(3)
	m1, m2, m3 := h.manager(h1, 1), h.manager(h2, 2), h.manager(h3, 3)
	n := testNet("netv", 4700, "10.79.0.0/24", false)
	e1, e2, e3 := ep("t1", "10.79.0.2", 1), ep("t2", "10.79.0.3", 2), ep("t3", "10.79.0.4", 3)
	st12 := []*shoalv1.NetworkState{{Network: n, Endpoints: []*shoalv1.Endpoint{e1, e2}}}
	all := []*shoalv1.NetworkState{{Network: n, Endpoints: []*shoalv1.Endpoint{e1, e2, e3}}}
	for _, x := range []struct {
		m  *Manager
		st []*shoalv1.NetworkState
	}{{m1, st12}, {m2, st12}, {m3, all}} {
		if err := x.m.Reconcile(bg, x.st); err != nil {
			t.Fatal(err)
		}
	}
	wantVTEPs(t, m1, vtep(2))
	wantVTEPs(t, m3, vtep(1), vtep(2))
	t1, p1 := h.task("v1")
	t2, p2 := h.task("v2")
	t3, p3 := h.task("v3")
	for _, x := range []struct {
		m    *Manager
		p    string
		addr string
	}{{m1, p1, "10.79.0.2"}, {m2, p2, "10.79.0.3"}, {m3, p3, "10.79.0.4"}} {
		if _, err := x.m.Attach(bg, x.p, att(n, x.addr), n); err != nil {
			t.Fatal(err)
		}
	}

	// Host 3 → host 1: dropped before the vxlan device.
	rx := vxlanRx(t, h1, 4700)
	drops0, err := m1.VXLANDropped()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		sendUDP(t, t3, "10.79.0.2:9", 3)
		d, err := m1.VXLANDropped()
		if err != nil {
			t.Fatal(err)
		}
		if d > drops0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("host 3's VXLAN never reached host 1's filter")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := vxlanRx(t, h1, 4700); got != rx {
		t.Fatalf("host 1's vxlan device received %d packets from a VTEP not in its set", got-rx)
	}

	// Host 2 → host 1: through.
	listenIn(t, t1, "10.79.0.2:7003")
	c, err := dialFrom(t, t2, "10.79.0.2:7003", 5*time.Second)
	if err != nil {
		t.Fatalf("host 2 (in the set) cannot reach host 1: %v", err)
	}
	if err := echo(c, "allowed"); err != nil {
		t.Fatal(err)
	}
	c.Close()

	// The state gains t3: host 3 is let in, in the same reconcile.
	if err := m1.Reconcile(bg, all); err != nil {
		t.Fatal(err)
	}
	wantVTEPs(t, m1, vtep(2), vtep(3))
	c, err = dialFrom(t, t3, "10.79.0.2:7003", 5*time.Second)
	if err != nil {
		t.Fatalf("host 3, now in the state, cannot reach host 1: %v", err)
	}
	c.Close()

	// t2 leaves: host 2 leaves the set; no network at all: empty set.
	if err := m1.Reconcile(bg, []*shoalv1.NetworkState{{Network: n, Endpoints: []*shoalv1.Endpoint{e1, e3}}}); err != nil {
		t.Fatal(err)
	}
	wantVTEPs(t, m1, vtep(3))
	if err := m1.Detach(bg, p1, att(n, "10.79.0.2"), n); err != nil {
		t.Fatal(err)
	}
	if err := m1.Reconcile(bg, nil); err != nil {
		t.Fatal(err)
	}
	wantVTEPs(t, m1)

	// A restarted manager keeps the set until its first Reconcile.
	if err := m1.Reconcile(bg, all); err != nil {
		t.Fatal(err)
	}
	m1.Close()
	m1b := h.manager(h1, 1)
	wantVTEPs(t, m1b, vtep(2), vtep(3))
}
