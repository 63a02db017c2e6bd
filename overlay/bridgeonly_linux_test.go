package overlay

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// tablesIn lists the nftables tables (family ip) of namespace ns.
func tablesIn(t *testing.T, ns string) []string {
	t.Helper()
	var names []string
	inNS(t, ns, func() {
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		ts, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ts {
			names = append(names, x.Name)
		}
	})
	return names
}

// TestBridgeOnlyNode: a node whose only address is loopback (no uplink,
// no VTEP: `shoal dev`) runs a bridge-only Manager. Bridge networks work
// (two tasks reach each other on the bridge, MTU 1500 without an uplink,
// table shoal-bridge written, the bridge removed with its last task); an
// overlay network in the delivered state gets no kernel state and no
// overlay table, and a task asking for one gets ErrNoOverlay (a failed
// precondition, so the agent rejects it) with nothing attached, not even
// its bridge network.
func TestBridgeOnlyNode(t *testing.T) {
	h := newHarness(t)
	host := h.prefix + "lo"
	h.addNS(host) // loopback only, like a dev machine's 127.0.0.1
	ns, err := netns.GetFromName(host)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if _, err := New(Config{NetNS: ns, LocalSubnet: netip.MustParsePrefix("10.99.1.0/24")}); err == nil {
		t.Fatal("an overlay Manager without a VTEP was created")
	}
	m, err := New(Config{NetNS: ns, LocalSubnet: netip.MustParsePrefix("10.99.1.0/24"), EnableForwarding: true, BridgeOnly: true})
	if err != nil {
		t.Fatalf("bridge-only Manager: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if !m.BridgeOnly() {
		t.Fatal("BridgeOnly() is false")
	}
	node := NewNode(m)
	bn := bridgeTestNet("brnet1", "shtest1", "10.230.8.0/24", false)
	ov := testNet("ovnet1", 4601, "10.231.0.0/24", false)
	states := []*shoalv1.NetworkState{{Network: bn}, {Network: ov, Endpoints: []*shoalv1.Endpoint{ep("remote", "10.231.0.9", 2)}}}
	if err := node.Reconcile(bg, true, states, nil); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if linkIn(t, host, BridgeName(4601)) != nil || linkIn(t, host, VXLANName(4601)) != nil {
		t.Fatal("a bridge-only node built an overlay network's devices")
	}
	if slices.Contains(tablesIn(t, host), TableName) {
		t.Fatalf("a bridge-only node wrote table %s", TableName)
	}

	ns1, p1 := h.task("o1")
	ns2, p2 := h.task("o2")
	_, p3 := h.task("o3")
	for i, x := range []struct {
		p, addr string
	}{{p1, "10.230.8.2"}, {p2, "10.230.8.3"}} {
		r, err := node.Attach(bg, x.p, []*shoalv1.NetworkAttachment{att(bn, x.addr)})
		if err != nil {
			t.Fatalf("attach task %d to the bridge network: %v", i+1, err)
		}
		if r.Interface != "eth1" || r.NoEgress {
			t.Fatalf("attach task %d: %+v", i+1, r)
		}
	}
	br := linkIn(t, host, "shtest1")
	if br == nil || br.Attrs().MTU != defaultMTU {
		t.Fatalf("bridge shtest1: %+v, want MTU %d", br, defaultMTU)
	}
	if got := addrsOf(t, host, "shtest1"); !slices.Equal(got, []string{"10.230.8.1/24"}) {
		t.Fatalf("shtest1 addresses %v, want the gateway", got)
	}
	if !slices.Contains(tablesIn(t, host), BridgeTableName) {
		t.Fatalf("no table %s on a node with a bridge network", BridgeTableName)
	}
	listenIn(t, ns2, "10.230.8.3:7000")
	c, err := dialFrom(t, ns1, "10.230.8.3:7000", 5*time.Second)
	if err != nil {
		t.Fatalf("task to task on the bridge: %v", err)
	}
	if err := echo(c, "bridge-only"); err != nil {
		t.Fatal(err)
	}
	c.Close()

	// A task on the bridge network and an overlay network: refused as a
	// whole, before anything is attached.
	_, err = node.Attach(bg, p3, []*shoalv1.NetworkAttachment{att(bn, "10.230.8.4"), att(ov, "10.231.0.2")})
	if !errors.Is(err, ErrNoOverlay) || !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("attach to an overlay network on a bridge-only node: %v, want ErrNoOverlay", err)
	}
	if linkIn(t, host, HostVethName(p3, "brnet1")) != nil || linkIn(t, host, HostVethName(p3, "ovnet1")) != nil {
		t.Fatal("the refused task was attached")
	}
	if linkIn(t, host, VXLANName(4601)) != nil {
		t.Fatal("the refused attach built the overlay's devices")
	}
	// The Manager refuses an overlay network by itself too.
	if _, err := m.Attach(bg, p3, att(ov, "10.231.0.2"), ov); !errors.Is(err, ErrNoOverlay) {
		t.Fatalf("Manager.Attach of an overlay network: %v, want ErrNoOverlay", err)
	}

	for p, addr := range map[string]string{p1: "10.230.8.2", p2: "10.230.8.3"} {
		if err := node.Detach(bg, p, []*shoalv1.NetworkAttachment{att(bn, addr)}); err != nil {
			t.Fatalf("detach: %v", err)
		}
	}
	if linkIn(t, host, "shtest1") != nil {
		t.Fatal("the bridge outlived its last task")
	}
}
