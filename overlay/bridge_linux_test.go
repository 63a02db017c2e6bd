package overlay

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func bridgeTestNet(id, bridge, subnet string, internal bool) *shoalv1.Network {
	gw := netip.MustParsePrefix(subnet).Addr().Next().String()
	return &shoalv1.Network{Meta: &shoalv1.Meta{Id: id}, Subnet: subnet, Gateway: gw,
		Spec: &shoalv1.NetworkSpec{Name: id, Driver: "bridge", Subnet: subnet, BridgeName: bridge, Internal: internal}}
}

// linkIn returns the link called name in namespace ns, or nil.
func linkIn(t *testing.T, ns, name string) netlink.Link {
	t.Helper()
	l, err := handleIn(t, ns).LinkByName(name)
	if err != nil {
		return nil
	}
	return l
}

func addrsOf(t *testing.T, ns, name string) []string {
	t.Helper()
	h := handleIn(t, ns)
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("%s in %s: %v", name, ns, err)
	}
	as, err := h.AddrList(l, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		out = append(out, a.IPNet.String())
	}
	return out
}

// bridgeRules counts the rules of table shoal-bridge in ns (-1: no table).
func bridgeRules(t *testing.T, ns string) int {
	t.Helper()
	var n int
	inNS(t, ns, func() {
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		tb := &nftables.Table{Name: BridgeTableName, Family: nftables.TableFamilyIPv4}
		ts, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(ts, func(x *nftables.Table) bool { return x.Name == BridgeTableName }) {
			n = -1
			return
		}
		for _, ch := range []string{"forward", "postrouting"} {
			rs, err := c.GetRules(tb, &nftables.Chain{Name: ch, Table: tb})
			if err != nil {
				n = -1
				return
			}
			n += len(rs)
		}
	})
	return n
}

// peerOf accepts one connection on l and reports its remote address.
func peerOf(l net.Listener) <-chan string {
	ch := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(ch)
			return
		}
		ch <- c.RemoteAddr().String()
		c.Close()
	}()
	return ch
}

// TestBridgeNetwork: a bridge network's data plane on one node. The bridge
// gets the chosen name, the gateway and Shoal's mark; tasks get eth1 with
// their address and MAC and reach each other and the node; a task's
// packets routed through the gateway leave masqueraded on the uplink; a
// second bridge network cannot reach the first (through its gateway or the
// node-local interface); an internal one has no default route and no way
// out; the bridge is deleted when its last task leaves, and the table's
// rules follow.
func TestBridgeNetwork(t *testing.T) {
	h := newHarness(t)
	h1, h2 := h.host(1), h.host(2)
	m1 := h.manager(h1, 1)
	bn := bridgeTestNet("brnet1", "shtest0", "10.230.5.0/24", false)
	other := bridgeTestNet("brnet2", "", "10.230.6.0/24", false)
	intl := bridgeTestNet("brnet3", "shtest3", "10.230.7.0/24", true)
	ns1, p1 := h.task("b1")
	ns2, p2 := h.task("b2")
	ns3, p3 := h.task("b3")
	ns4, p4 := h.task("b4")
	for i, ns := range []string{ns1, ns2, ns3, ns4} {
		nodeLocal(t, h1, ns, 1, i+2)
	}
	for _, x := range []struct {
		p    string
		n    *shoalv1.Network
		addr string
	}{{p1, bn, "10.230.5.2"}, {p2, bn, "10.230.5.3"}, {p3, other, "10.230.6.2"}, {p4, intl, "10.230.7.2"}} {
		r, err := m1.Attach(bg, x.p, att(x.n, x.addr), x.n)
		if err != nil {
			t.Fatalf("attach %s to %s: %v", x.addr, x.n.GetMeta().GetId(), err)
		}
		if r.Interface != "eth1" || r.NoEgress != x.n.GetSpec().GetInternal() {
			t.Fatalf("attach %s: %+v", x.addr, r)
		}
	}

	// Kernel state: the bridges, their gateways and marks; the task side.
	br := linkIn(t, h1, "shtest0")
	if br == nil || br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 || br.Attrs().Alias != bridgeAliasPrefix+"brnet1" {
		t.Fatalf("bridge shtest0: %+v", br)
	}
	if got := addrsOf(t, h1, "shtest0"); !slices.Equal(got, []string{"10.230.5.1/24"}) {
		t.Fatalf("shtest0 addresses %v, want the gateway 10.230.5.1/24", got)
	}
	if linkIn(t, h1, "shbr-brnet2") == nil {
		t.Fatal("no derived bridge shbr-brnet2 for a network without bridge_name")
	}
	if got := addrsOf(t, ns1, "eth1"); !slices.Equal(got, []string{"10.230.5.2/24"}) {
		t.Fatalf("task eth1 %v", got)
	}
	if l := linkIn(t, ns1, "eth1"); l.Attrs().HardwareAddr.String() != macOf("10.230.5.2") {
		t.Fatalf("task MAC %s, want %s", l.Attrs().HardwareAddr, macOf("10.230.5.2"))
	}
	if hv := linkIn(t, h1, HostVethName(p1, "brnet1")); hv == nil || hv.Attrs().MasterIndex != br.Attrs().Index {
		t.Fatalf("host veth of task 1 not on shtest0: %+v", hv)
	}
	if got := m1.BridgeNetworks(); !slices.Equal(got, []string{"shbr-brnet2", "shtest0", "shtest3"}) {
		t.Fatalf("BridgeNetworks %v", got)
	}
	if n := bridgeRules(t, h1); n != 4+4+3 {
		t.Fatalf("table %s has %d rules, want 11 (4 per network with egress, 3 internal)", BridgeTableName, n)
	}
	if rs, _ := handleIn(t, ns4).RouteList(nil, unix.AF_INET); slices.ContainsFunc(rs, func(r netlink.Route) bool { return r.Dst == nil }) {
		t.Fatal("a task on an internal bridge network kept a default route")
	}

	// Task to task on the bridge, node to task through the gateway.
	listenIn(t, ns2, "10.230.5.3:7000")
	c, err := dialFrom(t, ns1, "10.230.5.3:7000", 5*time.Second)
	if err != nil {
		t.Fatalf("task to task on the bridge: %v", err)
	}
	if err := echo(c, "bridge"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c, err := dialFrom(t, h1, "10.230.5.3:7000", 5*time.Second); err != nil {
		t.Fatalf("node to task: %v", err)
	} else {
		c.Close()
	}

	// Egress through the gateway: masqueraded on the uplink.
	var ext net.Listener
	inNS(t, h2, func() { ext, err = net.Listen("tcp", "192.168.250.2:7102") })
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	run(t, "ip", "-n", ns1, "route", "add", "192.168.250.0/24", "via", "10.230.5.1")
	run(t, "ip", "-n", ns4, "route", "add", "192.168.250.0/24", "via", "10.230.7.1")
	run(t, "ip", "-n", ns3, "route", "add", "10.230.5.0/24", "via", "10.230.6.1")
	peer := peerOf(ext)
	if c, err := dialFrom(t, ns1, "192.168.250.2:7102", 5*time.Second); err != nil {
		t.Fatalf("egress through the bridge gateway: %v", err)
	} else {
		c.Close()
	}
	if got, _, _ := net.SplitHostPort(<-peer); got != "192.168.250.1" {
		t.Fatalf("the outside saw %s, want the node's uplink address (masquerade)", got)
	}

	// Isolation and internal.
	if c, err := dialFrom(t, ns3, "10.230.5.3:7000", 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("another bridge network reached the first through its gateway")
	}
	run(t, "ip", "-n", ns3, "route", "del", "10.230.5.0/24")
	if c, err := dialFrom(t, ns3, "10.230.5.3:7000", 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a task reached a bridge network through its node-local interface")
	}
	if c, err := dialFrom(t, ns4, "192.168.250.2:7102", 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a task on an internal bridge network reached beyond its node")
	}

	// Teardown: the bridge stays while a task is on it, goes with the last.
	if err := m1.Detach(bg, p1, att(bn, "10.230.5.2"), bn); err != nil {
		t.Fatal(err)
	}
	if linkIn(t, h1, "shtest0") == nil {
		t.Fatal("shtest0 deleted while task 2 is still on it")
	}
	if err := m1.Detach(bg, p2, att(bn, "10.230.5.3"), bn); err != nil {
		t.Fatal(err)
	}
	if linkIn(t, h1, "shtest0") != nil {
		t.Fatal("shtest0 still there after its last task left")
	}
	if n := bridgeRules(t, h1); n != 4+3 {
		t.Fatalf("after shtest0 went: %d rules, want 7", n)
	}
	// A veth gone behind Shoal's back: the next Reconcile removes the idle
	// bridge; with no bridge network left the table goes too.
	run(t, "ip", "-n", h1, "link", "del", HostVethName(p3, "brnet2"))
	if err := m1.Detach(bg, p4, att(intl, "10.230.7.2"), intl); err != nil {
		t.Fatal(err)
	}
	if err := m1.Reconcile(bg, []*shoalv1.NetworkState{{Network: other}}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"shbr-brnet2", "shtest3"} {
		if linkIn(t, h1, b) != nil {
			t.Errorf("idle bridge %s left", b)
		}
	}
	if n := bridgeRules(t, h1); n != -1 {
		t.Fatalf("table %s left with %d rules and no bridge network", BridgeTableName, n)
	}
}

// TestBridgeNetworkOperatorBridge: a bridge the operator made beforehand
// is used (the gateway added) and left in place when the last task goes;
// a bridge name that is the node's task bridge is refused.
func TestBridgeNetworkOperatorBridge(t *testing.T) {
	h := newHarness(t)
	h1 := h.host(1)
	m1 := h.manager(h1, 1)
	run(t, "ip", "-n", h1, "link", "add", "opbr0", "type", "bridge")
	ns, p := h.task("o1")
	nodeLocal(t, h1, ns, 1, 2)
	n := bridgeTestNet("opnet", "opbr0", "10.230.8.0/24", false)
	if _, err := m1.Attach(bg, p, att(n, "10.230.8.2"), n); err != nil {
		t.Fatal(err)
	}
	if got := addrsOf(t, h1, "opbr0"); !slices.Equal(got, []string{"10.230.8.1/24"}) {
		t.Fatalf("opbr0 addresses %v", got)
	}
	if err := m1.Detach(bg, p, att(n, "10.230.8.2"), n); err != nil {
		t.Fatal(err)
	}
	if l := linkIn(t, h1, "opbr0"); l == nil {
		t.Fatal("the operator's bridge was deleted")
	}
	if n := bridgeRules(t, h1); n != -1 {
		t.Fatalf("rules of the operator's bridge left (%d) with no task on it", n)
	}

	// The node's task bridge (it holds an address of LocalSubnet).
	bad := bridgeTestNet("badnet", "nodebr", "10.230.9.0/24", false)
	run(t, "ip", "-n", h1, "link", "add", "nodebr", "type", "bridge")
	run(t, "ip", "-n", h1, "addr", "add", "10.99.1.200/24", "dev", "nodebr")
	_, p2 := h.task("o2")
	if _, err := m1.Attach(bg, p2, att(bad, "10.230.9.2"), bad); err == nil || !strings.Contains(err.Error(), "the node's task bridge") {
		t.Fatalf("attach to the node's task bridge: %v", err)
	}
	if out, _ := exec.Command("ip", "-n", h1, "-br", "addr", "show", "nodebr").CombinedOutput(); strings.Contains(string(out), "10.230.9.1") {
		t.Fatalf("the gateway was put on the node's task bridge: %s", out)
	}
}

// TestBridgeNetworkRestart: a new Manager (a restarted agent) takes over
// the bridge and rules a previous one left: with the network still held
// the rules are rewritten and the task keeps its attachment; once its veth
// is gone, the next Reconcile deletes the bridge and the stale table.
func TestBridgeNetworkRestart(t *testing.T) {
	h := newHarness(t)
	h1 := h.host(1)
	m1 := h.manager(h1, 1)
	ns, p := h.task("r1")
	nodeLocal(t, h1, ns, 1, 2)
	n := bridgeTestNet("rnet", "shtestr", "10.230.10.0/24", false)
	if _, err := m1.Attach(bg, p, att(n, "10.230.10.2"), n); err != nil {
		t.Fatal(err)
	}
	m2 := h.manager(h1, 1)
	if err := m2.Reconcile(bg, []*shoalv1.NetworkState{{Network: n}}); err != nil {
		t.Fatal(err)
	}
	if got := m2.BridgeNetworks(); !slices.Equal(got, []string{"shtestr"}) {
		t.Fatalf("restarted: BridgeNetworks %v", got)
	}
	if r := bridgeRules(t, h1); r != 4 {
		t.Fatalf("restarted: %d rules, want 4", r)
	}
	run(t, "ip", "-n", h1, "link", "del", HostVethName(p, "rnet"))
	m3 := h.manager(h1, 1)
	if err := m3.Reconcile(bg, nil); err != nil {
		t.Fatal(err)
	}
	if linkIn(t, h1, "shtestr") != nil {
		t.Fatal("idle bridge left after a restart")
	}
	if r := bridgeRules(t, h1); r != -1 {
		t.Fatalf("a previous agent's table left with %d rules", r)
	}
}

// TestBridgeNetworkPercentName: a bridge name with '%' (which the kernel
// expands, "x%d" becoming "x0", "x1", … at each try) is refused before
// any link is made, so a network stored before the Control API refused
// such names leaks no bridge at each task start.
func TestBridgeNetworkPercentName(t *testing.T) {
	h := newHarness(t)
	h1 := h.host(1)
	m1 := h.manager(h1, 1)
	n := bridgeTestNet("pctnet", "shq%d", "10.230.11.0/24", false)
	before, err := handleIn(t, h1).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		_, p := h.task(fmt.Sprintf("pct%d", i))
		if _, err := m1.Attach(bg, p, att(n, fmt.Sprintf("10.230.11.%d", i+2)), n); err == nil || !strings.Contains(err.Error(), "'%'") {
			t.Fatalf("attach %d with bridge name shq%%d: %v", i, err)
		}
	}
	after, err := handleIn(t, h1).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		var names []string
		for _, l := range after {
			names = append(names, l.Attrs().Name)
		}
		t.Fatalf("links after refused attaches: %v (%d before)", names, len(before))
	}
}

// TestBridgeNetworkUplinkBridge: a bridge network may not take the
// node's uplink bridge (the one holding the underlay address): its rules
// ("oifname B iifname != B drop") would cut every other network's egress
// and the gateway would be put on the node's LAN. Refused, whether the
// bridge is named as the uplink or only holds the VTEP address, with
// nothing added to it and no table written.
func TestBridgeNetworkUplinkBridge(t *testing.T) {
	h := newHarness(t)
	h1 := h.host(1)
	// The node's address moves from eth0 to a bridge holding eth0, as on
	// a host whose LAN interface is bridged.
	run(t, "ip", "-n", h1, "link", "add", "lanbr", "type", "bridge")
	run(t, "ip", "-n", h1, "link", "set", "eth0", "master", "lanbr")
	run(t, "ip", "-n", h1, "addr", "del", "192.168.250.1/24", "dev", "eth0")
	run(t, "ip", "-n", h1, "addr", "add", "192.168.250.1/24", "dev", "lanbr")
	run(t, "ip", "-n", h1, "link", "set", "lanbr", "up")
	run(t, "ip", "-n", h1, "link", "add", "vtepbr", "type", "bridge")
	run(t, "ip", "-n", h1, "addr", "add", "192.168.250.1/32", "dev", "vtepbr")
	ns, err := netns.GetFromName(h1)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	m1, err := New(Config{NetNS: ns, VTEP: vtep(1), Uplink: "lanbr",
		LocalSubnet: netip.MustParsePrefix("10.99.1.0/24"), EnableForwarding: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m1.Close()
	for i, b := range []string{"lanbr", "vtepbr"} {
		n := bridgeTestNet("upnet"+b, b, fmt.Sprintf("10.230.%d.0/24", 12+i), false)
		_, p := h.task("up" + b)
		_, err := m1.Attach(bg, p, att(n, fmt.Sprintf("10.230.%d.2", 12+i)), n)
		if err == nil || !strings.Contains(err.Error(), "uplink") {
			t.Fatalf("attach to bridge %s (the node's uplink): %v", b, err)
		}
		for _, a := range addrsOf(t, h1, b) {
			if strings.HasPrefix(a, "10.230.") {
				t.Fatalf("the gateway %s was put on the uplink bridge %s", a, b)
			}
		}
	}
	if n := bridgeRules(t, h1); n != -1 {
		t.Fatalf("table %s written (%d rules) for a refused uplink bridge", BridgeTableName, n)
	}
}

// TestBridgeNetworkErrorNamesNetworkOnce: a bridge network a node cannot
// set up fails the task with the network named once (the Node adds it),
// as the operator reads it in `service ps`; a Reconcile that cannot
// repair it names it too.
func TestBridgeNetworkErrorNamesNetworkOnce(t *testing.T) {
	h := newHarness(t)
	h1 := h.host(1)
	node := NewNode(h.manager(h1, 1))
	n := bridgeTestNet("lonet", "lo", "10.230.19.0/24", false)
	if err := node.Reconcile(bg, true, []*shoalv1.NetworkState{{Network: n}}, nil); err != nil {
		t.Fatal(err)
	}
	_, p := h.task("lo1")
	_, err := node.Attach(bg, p, []*shoalv1.NetworkAttachment{att(n, "10.230.19.2")})
	if err == nil || strings.Count(err.Error(), "lonet") != 1 || !strings.Contains(err.Error(), `"lo" exists and is a device, not a bridge`) {
		t.Fatalf("attach to a bridge network on lo: %v, want the network named once and the reason", err)
	}
}

// TestBridgeNetworkSubnetHoldsNodeAddress: a bridge network whose subnet
// holds an address of another link of the node (its underlay, say, on a
// node that joined after the network was made) is refused before the
// gateway is put anywhere: the bridge's route would take the node's own
// LAN away from it.
func TestBridgeNetworkSubnetHoldsNodeAddress(t *testing.T) {
	h := newHarness(t)
	h1 := h.host(1)
	m1 := h.manager(h1, 1)
	n := bridgeTestNet("lannet", "shtestl", "192.168.250.0/25", false)
	n.Gateway = "192.168.250.126"
	_, p := h.task("l1")
	_, err := m1.Attach(bg, p, att(n, "192.168.250.100"), n)
	if err == nil || !strings.Contains(err.Error(), `192.168.250.1 of "eth0"`) {
		t.Fatalf("attach to a bridge network over the node's LAN: %v", err)
	}
	if l := linkIn(t, h1, "shtestl"); l != nil {
		t.Fatalf("bridge shtestl left with addresses %v", addrsOf(t, h1, "shtestl"))
	}
	if n := bridgeRules(t, h1); n != -1 {
		t.Fatalf("table %s written (%d rules)", BridgeTableName, n)
	}
}
