package e2e

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	shoalnet "github.com/shoal-dev/shoal/agent/network"
	"github.com/shoal-dev/shoal/e2e/harness"
)

// defaultRoutes counts the IPv4 default routes of the namespace at path.
func defaultRoutes(path string) (int, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return 0, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			n++
		}
	}
	return n, nil
}

func dialFrom(ns, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := shoalnet.DialContextIn(ctx, ns, "tcp", addr)
	if err == nil {
		c.Close()
	}
	return err
}

// TestOverlayInternalAndIsolation: a task on an --internal network has
// no default route and cannot reach beyond the cluster (the other host's
// agent port answers a task of a normal network, not it), while it still
// reaches a task of its own network on another host by name; tasks of two
// different networks neither resolve nor reach each other.
func TestOverlayInternalAndIsolation(t *testing.T) {
	c := newCluster(t, 1, 1)
	h1, h2 := c.hosts[0], c.hosts[1]
	cl := h1.Local()
	id1, id2 := c.id(h1), c.id(h2)
	run(t, cl, "network", "create", "x")
	run(t, cl, "network", "create", "y")
	run(t, cl, "network", "create", "--internal", "priv")
	xNet := inspectNetwork(t, cl, "x").GetMeta().GetId()
	privNet := inspectNetwork(t, cl, "priv").GetMeta().GetId()
	for _, s := range []struct{ name, net, node string }{
		{"onx", "x", id1}, {"ony", "y", id2}, {"inner", "priv", id1}, {"innerpeer", "priv", id2},
	} {
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, s.name, 1, []string{"--network", s.net, "--constraint", "node.id==" + s.node})
		cancel()
		if err != nil {
			t.Fatalf("service %s: %v", s.name, err)
		}
	}
	onx := runningTasks(t, cl, "onx", 1)[0]
	ony := runningTasks(t, cl, "ony", 1)[0]
	inner := runningTasks(t, cl, "inner", 1)[0]
	peer := runningTasks(t, cl, "innerpeer", 1)[0]
	nsX := taskNS(h1, onx.GetMeta().GetId())
	nsInner := taskNS(h1, inner.GetMeta().GetId())
	yAddr := ""
	for _, a := range ony.GetNetworks() {
		yAddr = a.GetAddress()
	}
	yIP, _, _ := net.ParseCIDR(yAddr)

	// Egress: the task on x reaches h2's agent port through its node; the
	// internal one has no default route and does not.
	harness.Eventually(t, settleTimeout, poll, func() error {
		return dialFrom(nsX, net.JoinHostPort(h2.IP, "4243"))
	})
	if n, err := defaultRoutes(nsInner); err != nil || n != 0 {
		t.Fatalf("internal task: %d default routes (%v), want none", n, err)
	}
	if err := dialFrom(nsInner, net.JoinHostPort(h2.IP, "4243")); err == nil {
		t.Fatalf("a task on an internal network reached %s:4243", h2.IP)
	}
	// ...but reaches its own network's task on h2, by name.
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		host, err := nsGet(ctx, nsInner, "innerpeer", 8080)
		if err != nil {
			return err
		}
		if host != shortID(peer.GetMeta().GetId()) {
			return fmt.Errorf("innerpeer answered as %s", host)
		}
		return nil
	})
	// An agent restart (kill -9 of h2's node, `shoal daemon` again): the
	// re-adopted innerpeer keeps its container and gets its DNS server
	// back (the old one died with the process).
	nsPeer := taskNS(h2, peer.GetMeta().GetId())
	h2.Restart(t)
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		rc, ips, err := nsLookup(ctx, nsPeer, "tasks.inner")
		if err != nil {
			return err
		}
		if want := overlayAddr(inner, privNet); rc != mdns.RcodeSuccess || len(ips) != 1 || ips[0] != want {
			return fmt.Errorf("tasks.inner from the re-adopted innerpeer: rcode %d %v, want %s", rc, ips, want)
		}
		return nil
	})
	if now := runningTasks(t, cl, "innerpeer", 1)[0]; now.GetMeta().GetId() != peer.GetMeta().GetId() {
		t.Fatalf("innerpeer was replaced (%s → %s), not re-adopted", peer.GetMeta().GetId(), now.GetMeta().GetId())
	}
	if got := overlayAddr(inner, privNet); got == "" {
		t.Fatalf("inner has no address on priv: %v", inner.GetNetworks())
	}

	// Isolation: ony is unknown to onx's DNS and unreachable from it, by
	// its overlay address too (the positive check first: onx reaches its
	// own VIP).
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		_, err := nsGet(ctx, nsX, "onx", 8080)
		return err
	})
	{
		ctx, cancel := attempt()
		rc, ips, err := nsLookup(ctx, nsX, "ony")
		cancel()
		if err != nil || rc != mdns.RcodeNameError {
			t.Fatalf("ony from x: rcode %d %v (%v), want NXDOMAIN", rc, ips, err)
		}
	}
	if err := dialFrom(nsX, net.JoinHostPort(yIP.String(), "8080")); err == nil {
		t.Fatalf("a task on x reached %s on y", yIP)
	}
	if overlayAddr(onx, xNet) == "" {
		t.Fatalf("onx has no address on x")
	}
}
