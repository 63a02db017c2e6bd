package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netns"

	shoalnet "github.com/shoal-dev/shoal/agent/network"
	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// taskNS is the network namespace of a task on host h (the node network
// bind-mounts it under the data dir, visible to the test).
func taskNS(h *harness.Host, taskID string) string {
	return filepath.Join(h.DataDir, "network", "netns", taskID)
}

// nsLookup asks the task's embedded DNS server (127.0.0.11, over TCP,
// from inside its namespace) for name's A records: rcode and sorted IPs.
func nsLookup(ctx context.Context, ns, name string) (int, []string, error) {
	conn, err := shoalnet.DialContextIn(ctx, ns, "tcp", "127.0.0.11:53")
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), mdns.TypeA)
	c := &mdns.Client{Net: "tcp", Timeout: 3 * time.Second}
	r, _, err := c.ExchangeWithConn(m, &mdns.Conn{Conn: conn})
	if err != nil {
		return 0, nil, err
	}
	var ips []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*mdns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	sort.Strings(ips)
	return r.Rcode, ips, nil
}

// nsGet resolves host through the task's DNS server and GETs
// http://host:port/ from inside the task's namespace; it returns the
// answering task's hostname (the demo server's "Hostname:" line).
func nsGet(ctx context.Context, ns, host string, port int) (string, error) {
	_, ips, err := nsLookup(ctx, ns, host)
	if err != nil {
		return "", err
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("%s: no address", host)
	}
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return shoalnet.DialContextIn(ctx, ns, network, net.JoinHostPort(ips[0], fmt.Sprint(port)))
	}}
	cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://%s:%d/", host, port))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if m := regexp.MustCompile(`Hostname: (\S+)`).FindSubmatch(body); m != nil {
		return string(m[1]), nil
	}
	return "", fmt.Errorf("no Hostname in %q", body)
}

// overlayAddr is the task's address on the network with id netID.
func overlayAddr(tk *shoalv1.Task, netID string) string {
	for _, a := range tk.GetNetworks() {
		if a.GetNetworkId() == netID {
			ip, _, _ := strings.Cut(a.GetAddress(), "/")
			return ip
		}
	}
	return ""
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// fdbDsts lists the remote VTEPs of the FDB entries of the network's
// VXLAN device on host h (`bridge fdb show` in the host's namespace).
func fdbDsts(ctx context.Context, h *harness.Host, vni uint32) ([]string, error) {
	out, err := h.Exec(ctx, "bridge", "fdb", "show", "dev", fmt.Sprintf("shx-%d", vni))
	if err != nil {
		return nil, err
	}
	var dsts []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "dst" {
				dsts = append(dsts, f[i+1])
			}
		}
	}
	return dsts, nil
}

// neighIPs lists the permanent neighbour entries on the network's VXLAN
// device (where the overlay keeps them, answering ARP by proxy).
func neighIPs(ctx context.Context, h *harness.Host, vni uint32) ([]string, error) {
	out, err := h.Exec(ctx, "ip", "neigh", "show", "dev", fmt.Sprintf("shx-%d", vni), "nud", "permanent")
	if err != nil {
		return nil, err
	}
	var ips []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			ips = append(ips, f[0])
		}
	}
	return ips, nil
}

// vipBackends reads the backends of every VIP programmed in the task's
// namespace (nftables table ip shoal-vip: the anonymous maps of its dnat
// rules) through netlink.
func vipBackends(ns string) ([]string, error) {
	h, err := netns.GetFromPath(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		return nil, err
	}
	t := &nftables.Table{Name: "shoal-vip", Family: nftables.TableFamilyIPv4}
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range sets {
		els, err := c.GetSetElements(s)
		if err != nil {
			return nil, err
		}
		for _, e := range els {
			if len(e.Val) == 4 {
				out = append(out, net.IP(e.Val).String())
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

func run(t *testing.T, cl *harness.Client, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := cl.Run(ctx, args...)
	if err != nil {
		t.Fatalf("shoal %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func scale(t *testing.T, cl *harness.Client, arg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := runDetached(ctx, cl, "service", "scale", arg); err != nil {
		t.Fatalf("service scale %s: %v", arg, err)
	}
}

func inspectNetwork(t *testing.T, cl *harness.Client, name string) *shoalv1.Network {
	t.Helper()
	ctx, cancel := attempt()
	defer cancel()
	nets, err := harness.List[shoalv1.Network](ctx, cl, "network", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		if n.GetSpec().GetName() == name {
			return n
		}
	}
	t.Fatalf("network %s not listed", name)
	return nil
}

// onlyOn is the task of a one-replica service (RUNNING).
func runningTasks(t *testing.T, cl *harness.Client, svc string, n int) []*shoalv1.Task {
	t.Helper()
	return harness.WaitRunning(t, cl, svc, n, settleTimeout)
}

// TestOverlayServiceDiscovery: on 3 hosts, service a (host 1) and b (3
// replicas on hosts 2 and 3) on overlay network app reach each other by
// name over TCP: from a's namespace through its embedded DNS server (b →
// its VIP, tasks.b → every running b task) and, from a real container on
// host 2, `fetch http://a:8080/` through the resolv.conf the agent
// mounts. Scaling b moves DNS, the VIP rules (nftables) and the FDB;
// powering host 3 off withdraws its endpoints from DNS, the VIP and the
// FDB/neighbours of the other hosts. Figures (logged): time from a task
// RUNNING on host 2 to resolvable and reachable from host 1, and from the
// power cut to the withdrawal everywhere.
func TestOverlayServiceDiscovery(t *testing.T) {
	c := newCluster(t, 1, 2)
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	cl := h1.Local()
	id1, id2, id3 := c.id(h1), c.id(h2), c.id(h3)

	run(t, cl, "network", "create", "app")
	app := inspectNetwork(t, cl, "app")
	netID, vni := app.GetMeta().GetId(), app.GetVni()
	if vni < 4096 {
		t.Fatalf("network app: VNI %d", vni)
	}
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "b", 3, []string{"--network", "app", "--constraint", "node.id!=" + id1, "--replicas-max-per-node", "2"})
		if err == nil {
			err = createServiceFlags(ctx, cl, "a", 1, []string{"--network", "app", "--constraint", "node.id==" + id1})
		}
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	bTasks := runningTasks(t, cl, "b", 3)
	aTask := runningTasks(t, cl, "a", 1)[0]
	if aTask.GetNodeId() != id1 {
		t.Fatalf("a runs on %s, want %s", aTask.GetNodeId(), id1)
	}
	nsA := taskNS(h1, aTask.GetMeta().GetId())
	aAddr := overlayAddr(aTask, netID)
	perHost := perNode(bTasks)
	if perHost[id2] == 0 || perHost[id3] == 0 {
		t.Fatalf("b not spread over hosts 2 and 3: %s", describeTasks(bTasks))
	}
	addrsOf := func(tasks []*shoalv1.Task, node string) []string {
		var out []string
		for _, tk := range tasks {
			if node == "" || tk.GetNodeId() == node {
				out = append(out, overlayAddr(tk, netID))
			}
		}
		sort.Strings(out)
		return out
	}
	hostsOf := func(tasks []*shoalv1.Task) []string {
		var out []string
		for _, tk := range tasks {
			out = append(out, shortID(tk.GetMeta().GetId()))
		}
		sort.Strings(out)
		return out
	}

	// DNS from a: b is its VIP, tasks.b every running task; a name of
	// nobody is NXDOMAIN.
	var vipB string
	expectB := func(tasks []*shoalv1.Task) {
		t.Helper()
		want := addrsOf(tasks, "")
		harness.Eventually(t, settleTimeout, 50*time.Millisecond, func() error {
			ctx, cancel := attempt()
			defer cancel()
			rc, ips, err := nsLookup(ctx, nsA, "tasks.b")
			if err != nil {
				return err
			}
			if rc != mdns.RcodeSuccess || !slices.Equal(ips, want) {
				return fmt.Errorf("tasks.b: rcode %d %v, want %v", rc, ips, want)
			}
			_, vip, err := nsLookup(ctx, nsA, "b")
			if err != nil || len(vip) != 1 {
				return fmt.Errorf("b: %v %v, want one VIP", vip, err)
			}
			vipB = vip[0]
			backends, err := vipBackends(nsA)
			if err != nil {
				return err
			}
			// a's own VIP (backend: a) is there too.
			backends = slices.DeleteFunc(backends, func(ip string) bool { return ip == aAddr })
			if !slices.Equal(backends, want) {
				return fmt.Errorf("VIP backends in a's namespace %v, want %v", backends, want)
			}
			// TCP by name over the VIP reaches every b task.
			seen := map[string]bool{}
			for range 3 * len(tasks) {
				host, err := nsGet(ctx, nsA, "b", 8080)
				if err != nil {
					return err
				}
				seen[host] = true
			}
			var got []string
			for h := range seen {
				got = append(got, h)
			}
			sort.Strings(got)
			if w := hostsOf(tasks); !slices.Equal(got, w) {
				return fmt.Errorf("b over its VIP answered from %v, want %v", got, w)
			}
			return nil
		})
	}
	expectB(bTasks)
	t.Logf("b's VIP %s, tasks %v", vipB, addrsOf(bTasks, ""))
	{
		ctx, cancel := attempt()
		rc, _, err := nsLookup(ctx, nsA, "nosuchservice")
		cancel()
		if err != nil || rc != mdns.RcodeNameError {
			t.Fatalf("nosuchservice: rcode %d, %v; want NXDOMAIN", rc, err)
		}
	}
	// The kernel of host 1: an FDB entry per remote b task (towards hosts 2
	// and 3) and a permanent neighbour for each.
	checkKernel := func(h *harness.Host, tasks []*shoalv1.Task, gone string) error {
		ctx, cancel := attempt()
		defer cancel()
		dsts, err := fdbDsts(ctx, h, vni)
		if err != nil {
			return err
		}
		if gone != "" && slices.Contains(dsts, gone) {
			return fmt.Errorf("%s: FDB still points at %s: %v", h, gone, dsts)
		}
		neigh, err := neighIPs(ctx, h, vni)
		if err != nil {
			return err
		}
		for _, tk := range tasks {
			host := c.hostOf(tk.GetNodeId())
			if host == h {
				continue
			}
			if !slices.Contains(dsts, host.IP) {
				return fmt.Errorf("%s: no FDB entry towards %s (task %s): %v", h, host, tk.GetMeta().GetId(), dsts)
			}
			if ip := overlayAddr(tk, netID); !slices.Contains(neigh, ip) {
				return fmt.Errorf("%s: no neighbour entry for %s: %v", h, ip, neigh)
			}
		}
		return nil
	}
	harness.Eventually(t, settleTimeout, poll, func() error { return checkKernel(h1, bTasks, "") })

	// b reaches a by name from a real container: a one-shot fetch on host
	// 2 (its /etc/resolv.conf is the agent's: nameserver 127.0.0.11).
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "probe", 1, []string{"--network", "app", "--constraint", "node.id==" + id2,
			"--restart-condition", "none"}, "fetch", "http://a:8080/")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	harness.WaitTasks(t, cl, "probe", settleTimeout, func(all []*shoalv1.Task) error {
		for _, tk := range all {
			switch tk.GetStatus().GetState() {
			case shoalv1.TaskState_TASK_STATE_COMPLETE:
				return nil
			case shoalv1.TaskState_TASK_STATE_FAILED, shoalv1.TaskState_TASK_STATE_REJECTED:
				return harness.Permanent(fmt.Errorf("probe %s: %s", tk.GetStatus().GetState(), tk.GetStatus().GetErr()))
			}
		}
		return fmt.Errorf("probe not complete: %s", describeTasks(all))
	})
	{
		ctx, cancel := attempt()
		out, err := cl.Run(ctx, "service", "logs", "probe")
		cancel()
		if err != nil || !strings.Contains(out, "Hostname: "+shortID(aTask.GetMeta().GetId())) {
			t.Fatalf("probe's fetch of http://a:8080/ printed %q (%v), want a's hostname %s", out, err, shortID(aTask.GetMeta().GetId()))
		}
	}

	// Scale up and down: DNS, VIP and the kernel follow.
	scale(t, cl, "b=4")
	bTasks = runningTasks(t, cl, "b", 4)
	expectB(bTasks)
	harness.Eventually(t, settleTimeout, poll, func() error { return checkKernel(h1, bTasks, "") })
	scale(t, cl, "b=2")
	bTasks = runningTasks(t, cl, "b", 2)
	expectB(bTasks)

	// Time from RUNNING on host 2 to resolvable and reachable from host 1.
	measureNameLatency(t, c, cl, nsA, id2)

	// Host 3 loses power: its endpoints leave DNS, a's VIP and the FDB of
	// hosts 1 and 2.
	// Three replicas at most two a host: host 3 holds at least one.
	scale(t, cl, "b=3")
	bTasks = runningTasks(t, cl, "b", 3)
	onH3 := addrsOf(bTasks, id3)
	if len(onH3) == 0 {
		t.Fatalf("no b task on %s: %s", h3, describeTasks(bTasks))
	}
	expectB(bTasks)
	cut := time.Now()
	if err := h3.PowerOff(); err != nil {
		t.Fatal(err)
	}
	var dnsGone, vipGone, fdbGone time.Duration
	harness.Eventually(t, 2*settleTimeout, 20*time.Millisecond, func() error {
		ctx, cancel := attempt()
		defer cancel()
		if dnsGone == 0 {
			_, ips, err := nsLookup(ctx, nsA, "tasks.b")
			if err != nil {
				return err
			}
			for _, ip := range onH3 {
				if slices.Contains(ips, ip) {
					return fmt.Errorf("tasks.b still answers %s of the dead host: %v", ip, ips)
				}
			}
			dnsGone = time.Since(cut)
		}
		if vipGone == 0 {
			be, err := vipBackends(nsA)
			if err != nil {
				return err
			}
			for _, ip := range onH3 {
				if slices.Contains(be, ip) {
					return fmt.Errorf("VIP still sends to %s of the dead host: %v", ip, be)
				}
			}
			vipGone = time.Since(cut)
		}
		if fdbGone == 0 {
			for _, h := range []*harness.Host{h1, h2} {
				dsts, err := fdbDsts(ctx, h, vni)
				if err != nil {
					return err
				}
				if slices.Contains(dsts, h3.IP) {
					return fmt.Errorf("%s's FDB still points at %s", h, h3)
				}
				neigh, err := neighIPs(ctx, h, vni)
				if err != nil {
					return err
				}
				for _, ip := range onH3 {
					if slices.Contains(neigh, ip) {
						return fmt.Errorf("%s still has a neighbour entry for %s", h, ip)
					}
				}
			}
			fdbGone = time.Since(cut)
		}
		return nil
	})
	t.Logf("FIGURE power cut of %s → its endpoints gone: DNS %v, VIP %v, FDB+neighbours on h1,h2 %v",
		h3, dnsGone.Round(time.Millisecond), vipGone.Round(time.Millisecond), fdbGone.Round(time.Millisecond))
}

// measureNameLatency scales a one-replica service "lat" on host 2 up
// again and again and measures, from the RUNNING timestamp its agent
// recorded to the moment a's namespace on host 1 resolves tasks.lat to the
// new address and, then, a TCP connect to it on 8080 succeeds. It logs
// p50 and max. No assert on the figures.
func measureNameLatency(t *testing.T, c *cluster, cl *harness.Client, nsA, node string) {
	t.Helper()
	const runs = 20
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "lat", 0, []string{"--network", "app", "--constraint", "node.id==" + node})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	var resolve, reach []time.Duration
	for i := range runs {
		scale(t, cl, "lat=1")
		var resolvedAt, reachedAt time.Time
		var addr string
		harness.Eventually(t, settleTimeout, 2*time.Millisecond, func() error {
			ctx, cancel := attempt()
			defer cancel()
			if resolvedAt.IsZero() {
				_, ips, err := nsLookup(ctx, nsA, "tasks.lat")
				if err != nil || len(ips) == 0 {
					return fmt.Errorf("tasks.lat: %v %v", ips, err)
				}
				resolvedAt, addr = time.Now(), ips[0]
			}
			dctx, dcancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer dcancel()
			conn, err := shoalnet.DialContextIn(dctx, nsA, "tcp", net.JoinHostPort(addr, "8080"))
			if err != nil {
				return err
			}
			conn.Close()
			reachedAt = time.Now()
			return nil
		})
		tasks := runningTasks(t, cl, "lat", 1)
		var running time.Time
		if ts := tasks[0].GetStatus().GetTimestamp(); ts != nil {
			running = ts.AsTime()
		}
		if running.IsZero() {
			t.Fatalf("lat task without a RUNNING timestamp")
		}
		resolve = append(resolve, resolvedAt.Sub(running))
		reach = append(reach, reachedAt.Sub(running))
		scale(t, cl, "lat=0")
		harness.Eventually(t, settleTimeout, 20*time.Millisecond, func() error {
			ctx, cancel := attempt()
			defer cancel()
			_, ips, err := nsLookup(ctx, nsA, "tasks.lat")
			if err != nil || len(ips) != 0 {
				return fmt.Errorf("run %d: tasks.lat still %v %v", i, ips, err)
			}
			return nil
		})
	}
	p50max := func(ds []time.Duration) (time.Duration, time.Duration) {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2], s[len(s)-1]
	}
	rp, rm := p50max(resolve)
	cp, cm := p50max(reach)
	t.Logf("FIGURE task RUNNING on host 2 → resolvable from host 1: p50 %v max %v; reachable by TCP: p50 %v max %v (%d runs; negative = before the RUNNING report's timestamp)",
		rp.Round(time.Millisecond), rm.Round(time.Millisecond), cp.Round(time.Millisecond), cm.Round(time.Millisecond), runs)
	t.Logf("samples resolve %v reach %v", resolve, reach)
}
