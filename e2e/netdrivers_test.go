package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// bridgeAddrs lists the IPv4 addresses of link name on host h, or an
// error when the link does not exist.
func bridgeAddrs(ctx context.Context, h *harness.Host, name string) ([]string, error) {
	out, err := h.Exec(ctx, "ip", "-4", "-o", "addr", "show", "dev", name)
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" {
				addrs = append(addrs, f[i+1])
			}
		}
	}
	return addrs, nil
}

// linkGone reports nil once link name does not exist on host h.
func linkGone(ctx context.Context, h *harness.Host, name string) error {
	if _, err := h.Exec(ctx, "ip", "link", "show", "dev", name); err == nil {
		return fmt.Errorf("%s still has link %s", h, name)
	}
	return nil
}

// TestNetworkDrivers: the bridge and host drivers on a manager (h1) and a
// worker (h2).
//   - bridge: `--bridge-name shtest0 --subnet 10.230.5.0/24`; two
//     replicas placed on h2 get addresses in the subnet, the bridge exists
//     there with its gateway, they reach each other by name and through the
//     VIP, and a host address on the test fabric (egress); a global service
//     on the same network answers tasks.NAME on each node with that node's
//     task only (node-scoped discovery); a restarted agent re-adopts the
//     tasks with their bridge; removing the services deletes the bridge on
//     both nodes.
//   - a host-mode port of a service on it answers on its node; an ingress
//     port is refused (field error).
//   - an internal bridge network: no default route, no egress.
//   - host: the task answers on h2's own address (the demo server on its
//     port), `service ps` shows it RUNNING on h2 and inspect names the
//     network; a host network with a published port is refused.
func TestNetworkDrivers(t *testing.T) {
	c := newCluster(t, 1, 1)
	h1, h2 := c.hosts[0], c.hosts[1]
	cl := h1.Local()
	id2 := c.id(h2)
	subnet := netip.MustParsePrefix("10.230.5.0/24")

	run(t, cl, "network", "create", "--driver", "bridge", "--bridge-name", "shtest0", "--subnet", subnet.String(), "brnet")
	run(t, cl, "network", "create", "--driver", "bridge", "--internal", "--subnet", "10.230.6.0/24", "brint")
	run(t, cl, "network", "create", "--driver", "host", "hostnet")
	brNet := inspectNetwork(t, cl, "brnet")
	if brNet.GetGateway() != "10.230.5.1" || brNet.GetVni() != 0 {
		t.Fatalf("brnet: gateway %q vni %d", brNet.GetGateway(), brNet.GetVni())
	}
	for _, s := range []struct {
		name     string
		replicas int
		flags    []string
		args     []string
	}{
		{"bra", 2, []string{"--network", "brnet", "--constraint", "node.id==" + id2}, nil},
		{"brg", 0, []string{"--network", "brnet", "--mode", "global"}, nil},
		{"bri", 1, []string{"--network", "brint", "--constraint", "node.id==" + id2}, nil},
		{"hst", 1, []string{"--network", "hostnet", "--constraint", "node.id==" + id2}, []string{"serve", "--addr", ":8088"}},
		{"brp", 1, []string{"--network", "brnet", "--constraint", "node.id==" + id2, "--publish", "published=9091,target=8080,mode=host"}, nil},
	} {
		ctx, cancel := attempt()
		var err error
		if s.replicas == 0 {
			_, err = cl.Run(ctx, slices.Concat([]string{"service", "create", "--name", s.name, "--detach", "--no-resolve-image"}, s.flags, []string{testImage}, s.args)...)
		} else {
			err = createServiceFlags(ctx, cl, s.name, s.replicas, s.flags, s.args...)
		}
		cancel()
		if err != nil {
			t.Fatalf("service %s: %v", s.name, err)
		}
	}
	{
		ctx, cancel := attempt()
		_, err := cl.Run(ctx, "service", "create", "--name", "hstport", "--detach", "--no-resolve-image", "--network", "hostnet",
			"--publish", "published=8089,target=8089,mode=host", testImage)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "spec.endpoint.ports[0]") {
			t.Fatalf("a host-network service with a published port: %v, want a field error", err)
		}
	}

	// Bridge: addresses, kernel state, names, VIP, egress.
	bra := runningTasks(t, cl, "bra", 2)
	brg := runningTasks(t, cl, "brg", 2)
	var braAddrs []string
	for _, tk := range bra {
		if tk.GetNodeId() != id2 {
			t.Fatalf("bra task %s on %s, want h2", tk.GetMeta().GetId(), tk.GetNodeId())
		}
		a := overlayAddr(tk, brNet.GetMeta().GetId())
		if ip, err := netip.ParseAddr(a); err != nil || !subnet.Contains(ip) || a == "10.230.5.1" {
			t.Fatalf("bra task address %q is not a task address of %s", a, subnet)
		}
		braAddrs = append(braAddrs, a)
	}
	slices.Sort(braAddrs)
	for _, h := range []*harness.Host{h1, h2} {
		ctx, cancel := attempt()
		addrs, err := bridgeAddrs(ctx, h, "shtest0")
		cancel()
		if err != nil || !slices.Equal(addrs, []string{"10.230.5.1/24"}) {
			t.Fatalf("%s: bridge shtest0 addresses %v (%v), want the gateway 10.230.5.1/24", h, addrs, err)
		}
	}
	ns0 := taskNS(h2, bra[0].GetMeta().GetId())
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		rc, ips, err := nsLookup(ctx, ns0, "tasks.bra")
		if err != nil {
			return err
		}
		if rc != mdns.RcodeSuccess || !slices.Equal(ips, braAddrs) {
			return fmt.Errorf("tasks.bra: rcode %d %v, want %v", rc, ips, braAddrs)
		}
		// By name (the VIP) from one replica: both answer in turn.
		seen := map[string]bool{}
		for range 6 {
			host, err := nsGet(ctx, ns0, "bra", 8080)
			if err != nil {
				return err
			}
			seen[host] = true
		}
		if len(seen) != 2 {
			return fmt.Errorf("the VIP of bra answered as %v, want both replicas", seen)
		}
		return nil
	})
	// The other replica by its address, directly over the bridge.
	{
		ctx, cancel := attempt()
		host, err := nsGet(ctx, taskNS(h2, bra[1].GetMeta().GetId()), "tasks.bra", 8080)
		cancel()
		if err != nil {
			t.Fatalf("bra replica 2 to tasks.bra: %v", err)
		}
		if host != shortID(bra[0].GetMeta().GetId()) && host != shortID(bra[1].GetMeta().GetId()) {
			t.Fatalf("tasks.bra answered as %s, not a bra task", host)
		}
	}
	// Node-scoped discovery: each brg task sees only its own node's task.
	for _, tk := range brg {
		h := h1
		if tk.GetNodeId() == id2 {
			h = h2
		}
		ns := taskNS(h, tk.GetMeta().GetId())
		want := []string{overlayAddr(tk, brNet.GetMeta().GetId())}
		harness.Eventually(t, settleTimeout, poll, func() error {
			ctx, cancel := attempt()
			defer cancel()
			rc, ips, err := nsLookup(ctx, ns, "tasks.brg")
			if err != nil {
				return err
			}
			if rc != mdns.RcodeSuccess || !slices.Equal(ips, want) {
				return fmt.Errorf("tasks.brg from %s: rcode %d %v, want only the local %v", h, rc, ips, want)
			}
			return nil
		})
	}
	harness.Eventually(t, settleTimeout, poll, func() error {
		return dialFrom(ns0, net.JoinHostPort(h1.IP, "4243"))
	})

	// Internal bridge network: no default route, no egress.
	bri := runningTasks(t, cl, "bri", 1)[0]
	nsI := taskNS(h2, bri.GetMeta().GetId())
	if n, err := defaultRoutes(nsI); err != nil || n != 0 {
		t.Fatalf("internal bridge task: %d default routes (%v), want none", n, err)
	}
	if err := dialFrom(nsI, net.JoinHostPort(h1.IP, "4243")); err == nil {
		t.Fatalf("a task on an internal bridge network reached %s:4243", h1.IP)
	}

	// Host network: the task answers on h2's own address.
	hst := runningTasks(t, cl, "hst", 1)[0]
	if hst.GetNodeId() != id2 {
		t.Fatalf("hst runs on %s, want h2", hst.GetNodeId())
	}
	harness.Eventually(t, settleTimeout, poll, func() error {
		resp, err := h1.HTTPClient(5 * time.Second).Get(fmt.Sprintf("http://%s:8088/", h2.IP))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		m := regexp.MustCompile(`Hostname: (\S+)`).FindSubmatch(body)
		if m == nil || string(m[1]) != shortID(hst.GetMeta().GetId()) {
			return fmt.Errorf("h2:8088 answered %q, want the hst task %s", body, shortID(hst.GetMeta().GetId()))
		}
		return nil
	})
	{
		ctx, cancel := attempt()
		ps, err := cl.Run(ctx, "service", "ps", "hst")
		cancel()
		if err != nil || !strings.Contains(ps, "Running") && !strings.Contains(ps, "RUNNING") {
			t.Fatalf("service ps hst: %v\n%s", err, ps)
		}
		ctx, cancel = attempt()
		var svc shoalv1.Service
		err = cl.JSON(ctx, &svc, "service", "inspect", "hst")
		cancel()
		hostNet := inspectNetwork(t, cl, "hostnet").GetMeta().GetId()
		if err != nil || len(svc.GetSpec().GetTask().GetNetworks()) != 1 || svc.GetSpec().GetTask().GetNetworks()[0].GetTarget() != hostNet {
			t.Fatalf("service inspect hst: %v %v", err, svc.GetSpec().GetTask().GetNetworks())
		}
	}

	// A host-mode port of a service on the bridge network answers on its
	// node; an ingress one is refused (it needs an overlay network).
	brp := runningTasks(t, cl, "brp", 1)[0]
	harness.Eventually(t, settleTimeout, poll, func() error {
		resp, err := h1.HTTPClient(5 * time.Second).Get(fmt.Sprintf("http://%s:9091/", h2.IP))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if m := regexp.MustCompile(`Hostname: (\S+)`).FindSubmatch(body); m == nil || string(m[1]) != shortID(brp.GetMeta().GetId()) {
			return fmt.Errorf("h2:9091 answered %q, want the brp task", body)
		}
		return nil
	})
	{
		ctx, cancel := attempt()
		_, err := cl.Run(ctx, "service", "update", "--detach", "--publish-add", "9092:8080", "brp")
		cancel()
		if err == nil || !strings.Contains(err.Error(), "publish_mode: an ingress port needs an overlay network") {
			t.Fatalf("an ingress port on a bridge-only service: %v, want a field error", err)
		}
	}

	// An agent restart (kill -9, `shoal daemon` again) re-adopts the bridge
	// tasks: same tasks, the bridge and its gateway kept, names answer.
	h2.Restart(t)
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		if addrs, err := bridgeAddrs(ctx, h2, "shtest0"); err != nil || !slices.Equal(addrs, []string{"10.230.5.1/24"}) {
			return fmt.Errorf("after the restart: shtest0 addresses %v (%v)", addrs, err)
		}
		_, err := nsGet(ctx, ns0, "bra", 8080)
		return err
	})
	for _, tk := range runningTasks(t, cl, "bra", 2) {
		if !slices.ContainsFunc(bra, func(o *shoalv1.Task) bool { return o.GetMeta().GetId() == tk.GetMeta().GetId() }) {
			t.Fatalf("bra task %s is new after the restart: not re-adopted", tk.GetMeta().GetId())
		}
	}

	// Removing the services deletes the bridge on every node.
	{
		ctx, cancel := attempt()
		_, err := cl.Run(ctx, "service", "rm", "bra", "brg", "brp")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []*harness.Host{h1, h2} {
		harness.Eventually(t, settleTimeout, poll, func() error {
			ctx, cancel := attempt()
			defer cancel()
			return linkGone(ctx, h, "shtest0")
		})
	}
}
