package overlay

import (
	"github.com/google/nftables"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Two hosts, a task on each: TCP across the tunnel, the kernel entries,
// and a connection that survives a new Manager + Reconcile on one side.
func TestCrossHostAndRestart(t *testing.T) {
	h := newHarness(t)
	h1, h2 := h.host(1), h.host(2)
	m1, m2 := h.manager(h1, 1), h.manager(h2, 2)
	n := testNet("net1", 4097, "10.77.0.0/24", false)
	st := []*shoalv1.NetworkState{{Network: n, Endpoints: []*shoalv1.Endpoint{ep("t1", "10.77.0.2", 1), ep("t2", "10.77.0.3", 2)}}}
	for _, m := range []*Manager{m1, m2} {
		if err := m.Reconcile(bg, st); err != nil {
			t.Fatal(err)
		}
	}
	t1, p1 := h.task("1")
	t2, p2 := h.task("2")
	if r, err := m1.Attach(bg, p1, att(n, "10.77.0.2"), n); err != nil || r.Interface != "eth1" || r.NoEgress {
		t.Fatalf("attach t1: %+v %v", r, err)
	}
	if _, err := m2.Attach(bg, p2, att(n, "10.77.0.3"), n); err != nil {
		t.Fatal(err)
	}
	fdb, neigh := entries(t, h1, 4097)
	if fdb[macOf("10.77.0.3")] != "192.168.250.2" || neigh["10.77.0.3"] != macOf("10.77.0.3") || len(fdb) != 1 || len(neigh) != 1 {
		t.Fatalf("host1 entries: fdb %v neigh %v", fdb, neigh)
	}
	// MTU of the task interface: uplink 1500 - 50.
	if l, err := handleIn(t, t1).LinkByName("eth1"); err != nil || l.Attrs().MTU != 1450 {
		t.Fatalf("task eth1: %v mtu %v", err, l)
	}
	listenIn(t, t2, "10.77.0.3:7000")
	c, err := dialFrom(t, t1, "10.77.0.3:7000", 5*time.Second)
	if err != nil {
		for _, a := range [][]string{{h1, "ping", "-c1", "-W1", "192.168.250.2"}, {t1, "ping", "-c1", "-W1", "10.77.0.3"}, {h1, "ip", "-s", "link"}, {h2, "ip", "-s", "link"}, {t1, "ip", "neigh"}, {t1, "ip", "route"}, {t2, "ip", "addr"}} {
			out, _ := exec.Command("ip", append([]string{"netns", "exec"}, a...)...).CombinedOutput()
			t.Logf("%v: %s", a, out)
		}
		t.Fatal(err)
	}
	defer c.Close()
	if err := echo(c, "hello"); err != nil {
		t.Fatal(err)
	}
	// The traffic went through the tunnel: without the FDB entry there
	// is no way (learning is off).
	vxIdx := func(host string) int {
		l, err := handleIn(t, host).LinkByName(VXLANName(4097))
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Index
	}
	before := vxIdx(h1)
	// Restart on host 1: a new Manager and Reconcile, Attach again.
	m1.Close()
	m1b := h.manager(h1, 1)
	if err := m1b.Reconcile(bg, st); err != nil {
		t.Fatal(err)
	}
	if _, err := m1b.Attach(bg, p1, att(n, "10.77.0.2"), n); err != nil {
		t.Fatal(err)
	}
	if vxIdx(h1) != before {
		t.Fatal("vxlan device recreated by a restart")
	}
	if err := echo(c, "after restart"); err != nil {
		t.Fatalf("established connection broken by restart: %v", err)
	}
	// Remove t2's endpoint: its entries go on host 1.
	st2 := []*shoalv1.NetworkState{{Network: n, Endpoints: []*shoalv1.Endpoint{ep("t1", "10.77.0.2", 1)}}}
	if err := m1b.Reconcile(bg, st2); err != nil {
		t.Fatal(err)
	}
	if fdb, neigh := entries(t, h1, 4097); len(fdb) != 0 || len(neigh) != 0 {
		t.Fatalf("after removal: fdb %v neigh %v", fdb, neigh)
	}
	// Detach and drop the network: devices go.
	if err := m1b.Detach(bg, p1, att(n, "10.77.0.2"), n); err != nil {
		t.Fatal(err)
	}
	if err := m1b.Reconcile(bg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := handleIn(t, h1).LinkByName(BridgeName(4097)); err == nil {
		t.Fatal("bridge of a removed network still there")
	}
}

// An address freed on host 2 and reused on host 3: host 1 points to host 3
// only, and the repaired state survives external damage.
func TestAddressReuseAndRepair(t *testing.T) {
	h := newHarness(t)
	h1 := h.host(1)
	h.host(2)
	h.host(3)
	m1 := h.manager(h1, 1)
	n := testNet("net1", 4100, "10.77.0.0/24", false)
	e := ep("old", "10.77.0.5", 2)
	if err := m1.Reconcile(bg, []*shoalv1.NetworkState{{Network: n, Endpoints: []*shoalv1.Endpoint{e, ep("x", "10.77.0.6", 2)}}}); err != nil {
		t.Fatal(err)
	}
	e = ep("new", "10.77.0.5", 3)
	st := []*shoalv1.NetworkState{{Network: n, Endpoints: []*shoalv1.Endpoint{e, ep("x", "10.77.0.6", 2)}}}
	if err := m1.Reconcile(bg, st); err != nil {
		t.Fatal(err)
	}
	fdb, neigh := entries(t, h1, 4100)
	if fdb[macOf("10.77.0.5")] != "192.168.250.3" || len(fdb) != 2 || len(neigh) != 2 {
		t.Fatalf("after reuse: fdb %v neigh %v", fdb, neigh)
	}
	// Only one remote for that MAC (no flood to the old host).
	hh := handleIn(t, h1)
	vx, _ := hh.LinkByName(VXLANName(4100))
	fs, _ := hh.NeighList(vx.Attrs().Index, unix.AF_BRIDGE)
	count := 0
	for _, f := range fs {
		if f.HardwareAddr.String() == macOf("10.77.0.5") && f.Flags&netlink.NTF_SELF != 0 {
			count++
		}
	}
	if count != 1 {
		t.Fatalf("%d FDB entries for the reused MAC", count)
	}
	// Damage: delete an FDB entry, change a neighbour, add a stale one.
	for _, f := range fs {
		if f.HardwareAddr.String() == macOf("10.77.0.6") {
			if err := hh.NeighDel(&f); err != nil {
				t.Fatal(err)
			}
		}
	}
	bad, _ := net.ParseMAC("02:00:00:00:00:99")
	hh.NeighSet(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP("10.77.0.5"), HardwareAddr: bad})
	hh.NeighSet(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP("10.77.0.77"), HardwareAddr: bad})
	hh.NeighAppend(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: net.ParseIP("192.168.250.2"), HardwareAddr: bad})
	if err := m1.Reconcile(bg, st); err != nil {
		t.Fatal(err)
	}
	fdb, neigh = entries(t, h1, 4100)
	want := map[string]string{macOf("10.77.0.5"): "192.168.250.3", macOf("10.77.0.6"): "192.168.250.2"}
	if len(fdb) != 2 || fdb[macOf("10.77.0.5")] != want[macOf("10.77.0.5")] || fdb[macOf("10.77.0.6")] != want[macOf("10.77.0.6")] {
		t.Fatalf("fdb not repaired: %v", fdb)
	}
	if len(neigh) != 2 || neigh["10.77.0.5"] != macOf("10.77.0.5") || neigh["10.77.0.6"] != macOf("10.77.0.6") {
		t.Fatalf("neighbours not repaired: %v", neigh)
	}
	// The nftables table deleted by someone: Reconcile puts it back.
	if !nftRules(t, m1, 5) { // 2 for the overlay subnet + masquerade + VXLAN filter + forged-VXLAN drop
		t.Fatal("nftables rules not as expected")
	}
	c, err := nftConn(m1)
	if err != nil {
		t.Fatal(err)
	}
	c.DelTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if nftRules(t, m1, 5) {
		t.Fatal("table still there")
	}
	if err := m1.Reconcile(bg, st); err != nil {
		t.Fatal(err)
	}
	if !nftRules(t, m1, 5) {
		t.Fatal("nftables table not repaired")
	}
}

// Two networks on the same hosts are isolated; an internal network
// leaves its task without a default route.
func TestIsolationAndInternal(t *testing.T) {
	h := newHarness(t)
	h1, h2 := h.host(1), h.host(2)
	m1, m2 := h.manager(h1, 1), h.manager(h2, 2)
	a := testNet("neta", 4201, "10.81.0.0/24", false)
	b := testNet("netb", 4202, "10.82.0.0/24", true)
	st := []*shoalv1.NetworkState{
		{Network: a, Endpoints: []*shoalv1.Endpoint{ep("a1", "10.81.0.2", 1), ep("a2", "10.81.0.3", 2)}},
		{Network: b, Endpoints: []*shoalv1.Endpoint{ep("b2", "10.82.0.3", 2)}},
	}
	for _, m := range []*Manager{m1, m2} {
		if err := m.Reconcile(bg, st); err != nil {
			t.Fatal(err)
		}
	}
	ta1, pa1 := h.task("a1")
	ta2, pa2 := h.task("a2")
	tb2, pb2 := h.task("b2")
	// b2 starts with a default route (as the node-local setup gives it).
	run(t, "ip", "-n", tb2, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	run(t, "ip", "-n", tb2, "addr", "add", "10.99.2.5/24", "dev", "d0")
	run(t, "ip", "-n", tb2, "link", "set", "d0", "up")
	run(t, "ip", "-n", tb2, "route", "add", "default", "via", "10.99.2.1")
	for _, x := range []struct {
		m    *Manager
		p    string
		n    *shoalv1.Network
		addr string
	}{{m1, pa1, a, "10.81.0.2"}, {m2, pa2, a, "10.81.0.3"}, {m2, pb2, b, "10.82.0.3"}} {
		r, err := x.m.Attach(bg, x.p, att(x.n, x.addr), x.n)
		if err != nil {
			t.Fatal(err)
		}
		if r.NoEgress != x.n.GetSpec().GetInternal() {
			t.Fatalf("NoEgress %v for %s", r.NoEgress, x.n.GetMeta().GetId())
		}
	}
	routes, _ := handleIn(t, tb2).RouteList(nil, unix.AF_INET)
	for _, r := range routes {
		if r.Dst == nil {
			t.Fatalf("internal task still has a default route: %v", r)
		}
	}
	listenIn(t, ta2, "10.81.0.3:7001")
	listenIn(t, tb2, "10.82.0.3:7002")
	c, err := dialFrom(t, ta1, "10.81.0.3:7001", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c, err := dialFrom(t, ta1, "10.82.0.3:7002", 500*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("reached a task of another network")
	}
	// The isolation rules are in place: 2 per overlay subnet + masquerade
	// + the VXLAN filter + the forged-VXLAN drop.
	if !nftRules(t, m1, 7) {
		t.Fatal("nftables rules not as expected")
	}
}

func nftRules(t *testing.T, m *Manager, n int) bool {
	t.Helper()
	c, err := nftConn(m)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nftIntact(c, n, len(m.allowedVTEPs()))
}

func dump(t *testing.T, names ...string) {
	for _, n := range names {
		for _, args := range [][]string{{"-d", "link"}, {"addr"}, {"route"}, {"neigh"}, {"-d", "link", "show", "type", "bridge_slave"}} {
			out, _ := exec.Command("ip", append([]string{"-n", n}, args...)...).CombinedOutput()
			t.Logf("%s ip %v:\n%s", n, args, out)
		}
		out, _ := exec.Command("bridge", "-n", n, "fdb").CombinedOutput()
		t.Logf("%s fdb:\n%s", n, out)
	}
}
