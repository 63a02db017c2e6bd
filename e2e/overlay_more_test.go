package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	shoalnet "github.com/shoal-dev/shoal/agent/network"
	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// udpAsk sends msg over UDP from inside the namespace ns to addr and
// returns the reply of the demo's udp-echo ("HOSTNAME msg").
func udpAsk(ctx context.Context, ns, addr, msg string) (string, error) {
	c, err := shoalnet.DialContextIn(ctx, ns, "udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	host, rest, _ := strings.Cut(string(buf[:n]), " ")
	if rest != msg {
		return "", fmt.Errorf("udp %s: reply %q to %q", addr, buf[:n], msg)
	}
	return host, nil
}

// udpByName resolves name through the task's DNS server and returns the
// hostnames of the udp-echo servers that answered tries datagrams sent
// to each address it resolves to.
func udpByName(ctx context.Context, ns, name string, tries int) ([]string, error) {
	_, ips, err := nsLookup(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("%s: no address", name)
	}
	seen := map[string]bool{}
	for _, ip := range ips {
		for i := range tries {
			h, err := udpAsk(ctx, ns, net.JoinHostPort(ip, "9090"), fmt.Sprintf("%s-%d", name, i))
			if err != nil {
				return nil, fmt.Errorf("%s (%s): %w", name, ip, err)
			}
			seen[h] = true
		}
	}
	var out []string
	for h := range seen {
		out = append(out, h)
	}
	sort.Strings(out)
	return out, nil
}

func shortIDs(tasks []*shoalv1.Task) []string {
	var out []string
	for _, tk := range tasks {
		out = append(out, shortID(tk.GetMeta().GetId()))
	}
	sort.Strings(out)
	return out
}

// vxlanLink returns the ifindex and received-packet counter of the
// network's VXLAN device on host h (`ip -s -j link` in its namespace).
func vxlanLink(ctx context.Context, h *harness.Host, vni uint32) (ifindex int, rx uint64, err error) {
	out, err := h.Exec(ctx, "ip", "-s", "-j", "link", "show", fmt.Sprintf("shx-%d", vni))
	if err != nil {
		return 0, 0, err
	}
	var links []struct {
		Ifindex int `json:"ifindex"`
		Stats64 struct {
			Rx struct {
				Packets uint64 `json:"packets"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return 0, 0, fmt.Errorf("ip link: %q: %v", out, err)
	}
	return links[0].Ifindex, links[0].Stats64.Rx.Packets, nil
}

// vxlanRx is the received-packet counter of the network's VXLAN device on
// host h (every frame the host takes out of the tunnel).
func vxlanRx(ctx context.Context, h *harness.Host, vni uint32) (uint64, error) {
	_, rx, err := vxlanLink(ctx, h, vni)
	return rx, err
}

// TestOverlayUDPReuseAndHints: on 4 hosts (h4 joined with
// --no-gossip-hints), over overlay networks:
//   - UDP by name between tasks on different hosts, both ways (a on h1 →
//     b's VIP and tasks.b on h2/h3; b → a's VIP);
//   - an address freed on h2 and given to a task on h3 (a /29 network
//     with every other address taken): h1's and h2's FDB and neighbours
//     point at h3 only, and datagrams to the address reach the new task,
//     with not one frame arriving at h2's VXLAN device;
//   - FIGURE: time from RUNNING to resolvable and reachable from h1 for a
//     task on h2 (gossip hints) and on h4 (no hints), same run.
func TestOverlayUDPReuseAndHints(t *testing.T) {
	c := newCluster(t, 1, 2)
	h4 := c.addHost()
	c.join(h4, c.workerToken, shoalv1.NodeRole_NODE_ROLE_WORKER, "--no-gossip-hints")
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	cl := h1.Local()
	id1, id2, id3, id4 := c.id(h1), c.id(h2), c.id(h3), c.id(h4)

	run(t, cl, "network", "create", "app")
	app := inspectNetwork(t, cl, "app")
	netID := app.GetMeta().GetId()
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "b", 2, []string{"--network", "app", "--constraint", "node.id!=" + id1,
			"--constraint", "node.id!=" + id4, "--replicas-max-per-node", "1"}, "udp-echo")
		if err == nil {
			err = createServiceFlags(ctx, cl, "a", 1, []string{"--network", "app", "--constraint", "node.id==" + id1}, "udp-echo")
		}
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	bTasks := runningTasks(t, cl, "b", 2)
	aTask := runningTasks(t, cl, "a", 1)[0]
	if p := perNode(bTasks); p[id2] != 1 || p[id3] != 1 {
		t.Fatalf("b not on hosts 2 and 3: %s", describeTasks(bTasks))
	}
	nsA := taskNS(h1, aTask.GetMeta().GetId())
	wantB := shortIDs(bTasks)
	// a → b over UDP: every task by tasks.b, and the VIP spreads over both.
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		got, err := udpByName(ctx, nsA, "tasks.b", 2)
		if err != nil {
			return err
		}
		if !slices.Equal(got, wantB) {
			return fmt.Errorf("tasks.b over UDP answered from %v, want %v", got, wantB)
		}
		got, err = udpByName(ctx, nsA, "b", 12)
		if err != nil {
			return err
		}
		if !slices.Equal(got, wantB) {
			return fmt.Errorf("b's VIP over UDP answered from %v, want %v", got, wantB)
		}
		return nil
	})
	// b → a over UDP, from each b task (hosts 2 and 3) through a's VIP.
	for _, bt := range bTasks {
		ns := taskNS(c.hostOf(bt.GetNodeId()), bt.GetMeta().GetId())
		harness.Eventually(t, settleTimeout, poll, func() error {
			ctx, cancel := attempt()
			defer cancel()
			got, err := udpByName(ctx, ns, "a", 3)
			if err != nil {
				return err
			}
			if want := shortID(aTask.GetMeta().GetId()); len(got) != 1 || got[0] != want {
				return fmt.Errorf("a over UDP from %s answered from %v, want %s", bt.GetNodeId(), got, want)
			}
			return nil
		})
	}
	t.Logf("UDP by name: a(h1) → b %v and back", wantB)

	// Address reuse across hosts on a /29: 5 usable addresses (gateway,
	// network and broadcast excluded), dnsrr so that no VIP takes one.
	run(t, cl, "network", "create", "--subnet", "10.231.0.0/29", "tiny")
	tiny := inspectNetwork(t, cl, "tiny")
	tinyID, tinyVNI := tiny.GetMeta().GetId(), tiny.GetVni()
	dnsrr := func(name string, n int, node string) {
		t.Helper()
		ctx, cancel := attempt()
		defer cancel()
		if err := createServiceFlags(ctx, cl, name, n, []string{"--network", "tiny", "--endpoint-mode", "dnsrr",
			"--constraint", "node.id==" + node}, "udp-echo"); err != nil {
			t.Fatal(err)
		}
	}
	dnsrr("old", 1, id2)
	oldTask := runningTasks(t, cl, "old", 1)[0]
	reused := overlayAddr(oldTask, tinyID)
	dnsrr("keep", 1, id2) // h2 keeps taking part in tiny
	dnsrr("fill", 3, id1)
	keep := runningTasks(t, cl, "keep", 1)[0]
	fill := runningTasks(t, cl, "fill", 3)
	nsFill := taskNS(h1, fill[0].GetMeta().GetId())
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		h, err := udpAsk(ctx, nsFill, net.JoinHostPort(reused, "9090"), "old")
		if err != nil || h != shortID(oldTask.GetMeta().GetId()) {
			return fmt.Errorf("old at %s: %q %v", reused, h, err)
		}
		return nil
	})
	run(t, cl, "service", "rm", "old")
	// Wait until the address is released (its endpoint left the state h1
	// gets): a task created while the pool is exhausted was seen to stay
	// PENDING after the address was freed.
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		out, err := h1.Exec(ctx, "ip", "neigh", "show", reused, "dev", fmt.Sprintf("shx-%d", tinyVNI))
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("h1 still has a neighbour for %s: %q", reused, out)
		}
		return nil
	})
	// The freed address is the only one left: "new" on h3 gets it.
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		err := createServiceFlags(ctx, cl, "new", 1, []string{"--network", "tiny", "--endpoint-mode", "dnsrr",
			"--constraint", "node.id==" + id3}, "udp-echo")
		if err != nil && !alreadyExists.MatchString(err.Error()) {
			return err
		}
		return nil
	})
	newTask := runningTasks(t, cl, "new", 1)[0]
	if got := overlayAddr(newTask, tinyID); got != reused {
		t.Fatalf("new got %s, want the freed %s (old %s)", got, reused, describeTasks([]*shoalv1.Task{oldTask, keep}))
	}
	mac := func() string {
		for _, a := range newTask.GetNetworks() {
			if a.GetNetworkId() == tinyID {
				return a.GetMac()
			}
		}
		return ""
	}()
	// The kernel of h1 and h2: the reused address's MAC goes to h3 only.
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		for _, h := range []*harness.Host{h1, h2} {
			out, err := h.Exec(ctx, "bridge", "fdb", "show", "dev", fmt.Sprintf("shx-%d", tinyVNI))
			if err != nil {
				return err
			}
			var dsts []string
			for _, l := range strings.Split(out, "\n") {
				f := strings.Fields(l)
				if len(f) > 0 && f[0] == mac {
					for i := 0; i+1 < len(f); i++ {
						if f[i] == "dst" {
							dsts = append(dsts, f[i+1])
						}
					}
				}
			}
			if len(dsts) != 1 || dsts[0] != h3.IP {
				return fmt.Errorf("%s: FDB of %s (%s) points at %v, want only %s", h, mac, reused, dsts, h3.IP)
			}
			neigh, err := h.Exec(ctx, "ip", "neigh", "show", reused, "dev", fmt.Sprintf("shx-%d", tinyVNI))
			if err != nil {
				return err
			}
			if !strings.Contains(neigh, mac) || !strings.Contains(neigh, "PERMANENT") {
				return fmt.Errorf("%s: neighbour of %s: %q, want %s permanent", h, reused, neigh, mac)
			}
		}
		return nil
	})
	// Traffic to the reused address reaches the new task; h2's VXLAN
	// device receives not one frame meanwhile.
	{
		ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		defer cancel()
		before, err := vxlanRx(ctx, h2, tinyVNI)
		if err != nil {
			t.Fatal(err)
		}
		const n = 50
		for i := range n {
			h, err := udpAsk(ctx, nsFill, net.JoinHostPort(reused, "9090"), fmt.Sprint("reuse-", i))
			if err != nil || h != shortID(newTask.GetMeta().GetId()) {
				t.Fatalf("datagram %d to %s: answered by %q (%v), want the new task %s", i, reused, h, err, shortID(newTask.GetMeta().GetId()))
			}
		}
		after, err := vxlanRx(ctx, h2, tinyVNI)
		if err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Fatalf("h2 (the old host) received %d frames on tiny while %d datagrams went to %s", after-before, n, reused)
		}
		t.Logf("address %s reused from h2 to h3: FDB/neighbours on h1,h2 → h3 only; %d datagrams answered by the new task, 0 frames at h2", reused, n)
	}

	// FIGURE: hints (h2) against no hints (h4), in this run.
	hp50, hmax, hr50, hrmax := measureRunningToReach(t, cl, nsA, "lath", id2)
	np50, nmax, nr50, nrmax := measureRunningToReach(t, cl, nsA, "latn", id4)
	t.Logf("FIGURE task RUNNING → resolvable from h1 / reachable by TCP: with gossip hints (h2) p50 %v max %v / p50 %v max %v; without (h4, --no-gossip-hints) p50 %v max %v / p50 %v max %v (20 runs each)",
		hp50, hmax, hr50, hrmax, np50, nmax, nr50, nrmax)
	_ = netID
}

// measureRunningToReach scales a one-replica HTTP service name on node up
// and down 20 times (network app) and returns p50 and max of the time
// from the RUNNING timestamp to tasks.NAME resolving from nsA, then to a
// TCP connect to it on 8080.
func measureRunningToReach(t *testing.T, cl *harness.Client, nsA, name, node string) (rp, rm, cp, cm time.Duration) {
	t.Helper()
	const runs = 20
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, name, 0, []string{"--network", "app", "--constraint", "node.id==" + node})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	var resolve, reach []time.Duration
	for i := range runs {
		scale(t, cl, name+"=1")
		var resolvedAt, reachedAt time.Time
		var addr string
		harness.Eventually(t, settleTimeout, 2*time.Millisecond, func() error {
			ctx, cancel := attempt()
			defer cancel()
			if resolvedAt.IsZero() {
				_, ips, err := nsLookup(ctx, nsA, "tasks."+name)
				if err != nil || len(ips) == 0 {
					return fmt.Errorf("tasks.%s: %v %v", name, ips, err)
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
		tasks := runningTasks(t, cl, name, 1)
		ts := tasks[0].GetStatus().GetTimestamp()
		if ts == nil {
			t.Fatalf("%s task without a RUNNING timestamp", name)
		}
		resolve = append(resolve, resolvedAt.Sub(ts.AsTime()))
		reach = append(reach, reachedAt.Sub(ts.AsTime()))
		scale(t, cl, name+"=0")
		harness.Eventually(t, settleTimeout, 20*time.Millisecond, func() error {
			ctx, cancel := attempt()
			defer cancel()
			_, ips, err := nsLookup(ctx, nsA, "tasks."+name)
			if err != nil || len(ips) != 0 {
				return fmt.Errorf("run %d: tasks.%s still %v %v", i, name, ips, err)
			}
			return nil
		})
	}
	p50max := func(ds []time.Duration) (time.Duration, time.Duration) {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond)
	}
	rp, rm = p50max(resolve)
	cp, cm = p50max(reach)
	t.Logf("%s samples: resolve %v reach %v", name, resolve, reach)
	return rp, rm, cp, cm
}

// keepAliveGet sends one HTTP/1.1 GET on the established connection c and
// returns the answering hostname (the demo's "Hostname:" line).
func keepAliveGet(c net.Conn, br *bufio.Reader) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(br, nil)
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

// TestOverlayAgentRestartAndPartition: on 3 hosts, with established TCP
// connections from a task on h1 to tasks on h3 and on h2:
//   - kill -9 of h2's shoal and `shoal daemon` again: both connections
//     keep working (h2 rebuilds from state without disturbing them, h1 and
//     h3 are untouched), and h2's overlay devices were not recreated;
//   - h3's link goes down until the managers notice it, then up: with no
//     manual step, h3's endpoint comes back in h1's DNS and FDB and is
//     reachable by name again, and h3 knows h1's endpoint.
func TestOverlayAgentRestartAndPartition(t *testing.T) {
	c := newCluster(t, 1, 2)
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	cl := h1.Local()
	id1, id2, id3 := c.id(h1), c.id(h2), c.id(h3)
	run(t, cl, "network", "create", "app")
	app := inspectNetwork(t, cl, "app")
	netID, vni := app.GetMeta().GetId(), app.GetVni()
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "cli", 1, []string{"--network", "app", "--constraint", "node.id==" + id1}, "sleep", "inf")
		for _, s := range []struct{ name, node string }{{"s2", id2}, {"s3", id3}} {
			if err == nil {
				err = createServiceFlags(ctx, cl, s.name, 1, []string{"--network", "app", "--constraint", "node.id==" + s.node})
			}
		}
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	cliTask := runningTasks(t, cl, "cli", 1)[0]
	s2 := runningTasks(t, cl, "s2", 1)[0]
	s3 := runningTasks(t, cl, "s3", 1)[0]
	nsC := taskNS(h1, cliTask.GetMeta().GetId())
	type conn struct {
		name, want string
		c          net.Conn
		br         *bufio.Reader
	}
	var conns []*conn
	for _, s := range []*shoalv1.Task{s2, s3} {
		addr := net.JoinHostPort(overlayAddr(s, netID), "8080")
		var cc *conn
		harness.Eventually(t, settleTimeout, poll, func() error {
			ctx, cancel := attempt()
			defer cancel()
			nc, err := shoalnet.DialContextIn(ctx, nsC, "tcp", addr)
			if err != nil {
				return err
			}
			x := &conn{name: s.GetServiceName(), want: shortID(s.GetMeta().GetId()), c: nc, br: bufio.NewReader(nc)}
			if h, err := keepAliveGet(nc, x.br); err != nil || h != x.want {
				nc.Close()
				return fmt.Errorf("%s: %q %v", addr, h, err)
			}
			cc = x
			return nil
		})
		t.Cleanup(func() { cc.c.Close() })
		conns = append(conns, cc)
	}
	ifindex := func(h *harness.Host) int {
		ctx, cancel := attempt()
		defer cancel()
		i, _, err := vxlanLink(ctx, h, vni)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	before := ifindex(h2)

	// kill -9 of h2's shoal, then `shoal daemon`.
	if err := h2.Crash(); err != nil {
		t.Fatal(err)
	}
	p := h2.Daemon(t)
	harness.Eventually(t, startTimeout, 10*time.Millisecond, func() error {
		_, err := p.Match(sessionOpenRe)
		return err
	})
	// The new agent got its network state and reconciled (its FDB has h3).
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		dsts, err := fdbDsts(ctx, h2, vni)
		if err != nil {
			return err
		}
		if !slices.Contains(dsts, h1.IP) || !slices.Contains(dsts, h3.IP) {
			return fmt.Errorf("h2's FDB after restart: %v", dsts)
		}
		return nil
	})
	if after := ifindex(h2); after != before {
		t.Fatalf("h2's vxlan device recreated by the restart (ifindex %d → %d)", before, after)
	}
	for _, x := range conns {
		if h, err := keepAliveGet(x.c, x.br); err != nil || h != x.want {
			t.Fatalf("established connection h1 → %s broken by h2's agent restart: %q %v", x.name, h, err)
		}
	}
	t.Logf("kill -9 + restart of h2's agent: established connections h1→h2 and h1→h3 kept working, vxlan device kept")

	// Partition of h3 until the managers notice, then heal.
	if err := h3.LinkDown(); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	healed := false
	t.Cleanup(func() {
		if !healed {
			h3.LinkUp()
		}
	})
	noticed := ""
	deadline := time.Now().Add(settleTimeout)
	for noticed == "" && time.Now().Before(deadline) {
		ctx, cancel := attempt()
		nodes, err := c.nodes(ctx, h1)
		cancel()
		if err == nil {
			for _, n := range nodes {
				if n.GetMeta().GetId() == id3 && (n.GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_READY || n.GetStatus().GetUnreachable()) {
					noticed = fmt.Sprintf("%s unreachable=%v gossip=%s", n.GetStatus().GetState(), n.GetStatus().GetUnreachable(), n.GetStatus().GetGossipState())
				}
			}
		}
		time.Sleep(poll) // polling interval, not synchronisation
	}
	if err := h3.LinkUp(); err != nil {
		t.Fatal(err)
	}
	healed = true
	t.Logf("h3 cut off for %v (managers saw: %q), link up", time.Since(downAt).Round(time.Millisecond), noticed)
	healStart := time.Now()
	harness.Eventually(t, 2*settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		s3s := runningTasks(t, cl, "s3", 1)
		addr := overlayAddr(s3s[0], netID)
		_, ips, err := nsLookup(ctx, nsC, "tasks.s3")
		if err != nil {
			return err
		}
		if !slices.Equal(ips, []string{addr}) {
			return fmt.Errorf("tasks.s3 from h1: %v, want [%s]", ips, addr)
		}
		dsts, err := fdbDsts(ctx, h1, vni)
		if err != nil {
			return err
		}
		if !slices.Contains(dsts, h3.IP) {
			return fmt.Errorf("h1's FDB has no entry towards h3: %v", dsts)
		}
		neigh, err := neighIPs(ctx, h3, vni)
		if err != nil {
			return err
		}
		if !slices.Contains(neigh, overlayAddr(cliTask, netID)) {
			return fmt.Errorf("h3 has no neighbour entry for cli on h1: %v", neigh)
		}
		h, err := nsGet(ctx, nsC, "s3", 8080)
		if err != nil {
			return err
		}
		if h != shortID(s3s[0].GetMeta().GetId()) {
			return fmt.Errorf("s3 answered from %s", h)
		}
		return nil
	})
	t.Logf("FIGURE partition of h3 healed: endpoints back in DNS, FDB, neighbours and reachable by name %v after link up (no manual step)",
		time.Since(healStart).Round(time.Millisecond))
}

// cpuTime is the user+system CPU time of process pid so far (/proc).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	var ut, st int64
	fmt.Sscan(f[11], &ut) // field 14: utime
	fmt.Sscan(f[12], &st) // field 15: stime
	const hz = 100        // USER_HZ
	return time.Duration(ut+st) * time.Second / hz, nil
}

// idleCPU is the CPU share of pid over d (sampled from /proc).
func idleCPU(t *testing.T, pid int, d time.Duration) float64 {
	t.Helper()
	c0, err := cpuTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	time.Sleep(d) // the measurement window, not synchronisation
	c1, err := cpuTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	return float64(c1-c0) / float64(time.Since(start))
}

// TestOverlayIdleCPU1000 (FIGURE): the agent's idle CPU on a host taking
// part in a network of 1,000 endpoints. h3 joins with --no-executor and
// holds 999 tasks of the network (ASSIGNED: hosts program endpoints from
// ASSIGNED on); h2 runs one task on it, so its agent programs 999 remote
// endpoints. The shoal process of h2 is sampled over 30 s idle, before
// (1 endpoint) and after; the time h2 took to program all 999 is logged.
func TestOverlayIdleCPU1000(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of idle measurement")
	}
	c := newCluster(t, 1, 1)
	h3 := c.addHost()
	c.join(h3, c.workerToken, shoalv1.NodeRole_NODE_ROLE_WORKER, "--no-executor")
	h1, h2 := c.hosts[0], c.hosts[1]
	cl := h1.Local()
	id2, id3 := c.id(h2), c.id(h3)
	run(t, cl, "network", "create", "--subnet", "10.232.0.0/22", "big")
	big := inspectNetwork(t, cl, "big")
	vni := big.GetVni()
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "one", 1, []string{"--network", "big", "--endpoint-mode", "dnsrr", "--constraint", "node.id==" + id2}, "sleep", "inf")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	runningTasks(t, cl, "one", 1)
	var agent *harness.Proc
	for _, p := range h2.Running() {
		if slices.Contains(p.Args, "join") || slices.Contains(p.Args, "daemon") {
			agent = p
		}
	}
	if agent == nil {
		t.Fatal("no shoal process on h2")
	}
	const window = 30 * time.Second
	before := idleCPU(t, agent.Pid(), window)
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "many", 999, []string{"--network", "big", "--endpoint-mode", "dnsrr", "--constraint", "node.id==" + id3}, "sleep", "inf")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	created := time.Now()
	harness.Eventually(t, 3*settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		dsts, err := fdbDsts(ctx, h2, vni)
		if err != nil {
			return err
		}
		n := 0
		for _, d := range dsts {
			if d == h3.IP {
				n++
			}
		}
		if n != 999 {
			return fmt.Errorf("h2 has %d of 999 FDB entries towards h3", n)
		}
		return nil
	})
	programmed := time.Since(created)
	after := idleCPU(t, agent.Pid(), window)
	t.Logf("FIGURE agent idle CPU (h2's shoal process over %v): network with 1 endpoint %.2f%% of a CPU, with 1,000 endpoints %.2f%%; 999 remote endpoints on h2 %v after `service create --replicas 999`",
		window, 100*before, 100*after, programmed.Round(time.Millisecond))
}
