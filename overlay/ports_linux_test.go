package overlay

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/vishvananda/netlink"
)

// whoami serves TCP and UDP on :80 in a task namespace and answers
// "NAME SEEN-CLIENT-ADDRESS".
func whoami(t *testing.T, ns, name string) {
	t.Helper()
	var l net.Listener
	var pc net.PacketConn
	var err error
	inNS(t, ns, func() {
		if l, err = net.Listen("tcp", ":80"); err != nil {
			return
		}
		pc, err = net.ListenPacket("udp", ":80")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); pc.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "%s %s", name, host)
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(from.String())
			pc.WriteTo([]byte(name+" "+host), from)
		}
	}()
}

// ask connects from ns to addr (tcp or udp) and returns the answer, or ""
// and the error.
func ask(t *testing.T, ns, network, addr string) (string, error) {
	t.Helper()
	var out string
	var err error
	inNS(t, ns, func() {
		var c net.Conn
		c, err = net.DialTimeout(network, addr, 2*time.Second)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if network == "udp" {
			if _, err = c.Write([]byte("hi")); err != nil {
				return
			}
			buf := make([]byte, 256)
			var n int
			n, err = c.Read(buf)
			out = string(buf[:n])
			return
		}
		var b []byte
		b, err = io.ReadAll(c)
		out = string(b)
	})
	return out, err
}

// portsTopo: host 1 (192.168.250.1) with a node-local bridge (10.77.0.1/24;
// tasks a 10.77.0.2 and b 10.77.0.3, default route via the node) and a
// second bridge standing for a path with no return route (10.78.0.1/24;
// task r 10.78.0.2 with no default route, as a task on another host whose
// replies would not come back through this node). Client: host 9.
func portsTopo(t *testing.T) (h *harness, node, nodePath, client string) {
	h = newHarness(t)
	node = h.host(1)
	client = h.host(9)
	run(t, "ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	bridge := func(br, addr string) {
		run(t, "ip", "-n", node, "link", "add", br, "type", "bridge")
		run(t, "ip", "-n", node, "addr", "add", addr, "dev", br)
		run(t, "ip", "-n", node, "link", "set", br, "up")
	}
	bridge("lb0", "10.77.0.1/24")
	bridge("rb0", "10.78.0.1/24")
	task := func(n, br, addr, gw string) {
		name, _ := h.task(n)
		run(t, "ip", "-n", node, "link", "add", "v"+n, "type", "veth", "peer", "name", "eth0", "netns", name)
		run(t, "ip", "-n", node, "link", "set", "v"+n, "master", br, "up")
		run(t, "ip", "-n", name, "addr", "add", addr, "dev", "eth0")
		run(t, "ip", "-n", name, "link", "set", "eth0", "up")
		if gw != "" {
			run(t, "ip", "-n", name, "route", "add", "default", "via", gw)
		}
		whoami(t, name, n)
	}
	task("a", "lb0", "10.77.0.2/24", "10.77.0.1")
	task("b", "lb0", "10.77.0.3/24", "10.77.0.1")
	task("r", "rb0", "10.78.0.2/24", "")
	return h, node, "/var/run/netns/" + node, client
}

// TestProgramPorts: a published port answers on the node's address and
// spreads new connections over its backends; a backend without SNAT sees
// the client's own address (preserved), one with SNAT sees the node's;
// UDP works; the target port is applied; re-programming the same set is
// harmless; removing a port closes it; the rules are in the kernel (nft
// list) and ClearPorts removes the table.
func TestProgramPorts(t *testing.T) {
	_, node, nodePath, client := portsTopo(t)
	ip := func(s string) net.IP { return net.ParseIP(s) }
	ports := []PublishedPort{
		{Port: 8080, TargetPort: 80, Backends: []PortBackend{{Addr: ip("10.77.0.2")}, {Addr: ip("10.77.0.3")}}},
		{Port: 8081, TargetPort: 80, Backends: []PortBackend{{Addr: ip("10.78.0.2"), SNAT: true}}},
		{Port: 5353, TargetPort: 80, Protocol: "udp", Backends: []PortBackend{{Addr: ip("10.77.0.2")}}},
		{Port: 9999, TargetPort: 80}, // no backend: left out
		{Port: 8082, TargetPort: 80, Backends: []PortBackend{{Addr: ip("10.77.0.2")}}, NoForwardFrom: []net.IP{ip("192.168.250.9")}},
	}
	for i := 0; i < 2; i++ { // twice: idempotent
		if err := ProgramPorts(nodePath, PortsConfig{Ports: ports}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := PortRuleCount(nodePath); err != nil || n != 4 {
		t.Fatalf("PortRuleCount = %d, %v; want 4", n, err)
	}
	// The kernel holds the rules: one DNAT per port in prerouting and
	// output, one masquerade per SNAT backend in postrouting.
	if err := withPortsConn(nodePath, func(c *nftables.Conn) error {
		tb := &nftables.Table{Name: PortsTable, Family: nftables.TableFamilyIPv4}
		for ch, want := range map[string]int{"prerouting": 4, "output": 4, "postrouting": 1} {
			rs, err := c.GetRules(tb, &nftables.Chain{Name: ch, Table: tb})
			if err != nil {
				return err
			}
			if len(rs) != want {
				t.Errorf("chain %s has %d rules, want %d", ch, len(rs), want)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	seen := map[string]int{}
	for i := 0; i < 4; i++ {
		got, err := ask(t, client, "tcp", "192.168.250.1:8080")
		if err != nil {
			t.Fatalf("8080: %v", err)
		}
		f := strings.Fields(got)
		if len(f) != 2 || f[1] != "192.168.250.9" {
			t.Fatalf("8080 answered %q; want a task seeing the client 192.168.250.9", got)
		}
		seen[f[0]]++
	}
	if seen["a"] != 2 || seen["b"] != 2 {
		t.Errorf("4 connections to 8080 went %v; want 2 to a, 2 to b (numgen inc)", seen)
	}
	if got, err := ask(t, client, "tcp", "192.168.250.1:8081"); err != nil || got != "r 10.78.0.1" {
		t.Errorf("8081 (SNAT) answered %q, %v; want \"r 10.78.0.1\"", got, err)
	}
	if got, err := ask(t, client, "udp", "192.168.250.1:5353"); err != nil || got != "a 192.168.250.9" {
		t.Errorf("5353/udp answered %q, %v; want \"a 192.168.250.9\"", got, err)
	}
	if _, err := ask(t, client, "tcp", "192.168.250.1:9999"); err == nil {
		t.Error("9999 (no backend) answered")
	}
	if _, err := ask(t, client, "tcp", "192.168.250.1:8082"); err == nil {
		t.Error("8082 answered a source in NoForwardFrom")
	}
	if got, err := ask(t, node, "tcp", "192.168.250.1:8082"); err != nil || got != "a 192.168.250.1" {
		t.Errorf("8082 from the node answered %q, %v", got, err)
	}
	// Locally generated (the node itself).
	if got, err := ask(t, node, "tcp", "192.168.250.1:8081"); err != nil || !strings.HasPrefix(got, "r ") {
		t.Errorf("8081 from the node answered %q, %v", got, err)
	}

	// Drop 8080 and 5353: 8080 now refuses, 8081 still answers.
	if err := ProgramPorts(nodePath, PortsConfig{Ports: ports[1:2]}); err != nil {
		t.Fatal(err)
	}
	if _, err := ask(t, client, "tcp", "192.168.250.1:8080"); err == nil {
		t.Error("8080 still answers after removal")
	}
	if got, err := ask(t, client, "tcp", "192.168.250.1:8081"); err != nil || got != "r 10.78.0.1" {
		t.Errorf("8081 after re-program answered %q, %v", got, err)
	}
	if err := ClearPorts(nodePath); err != nil {
		t.Fatal(err)
	}
	if n, err := PortRuleCount(nodePath); err != nil || n != 0 {
		t.Errorf("after ClearPorts: %d rules, %v", n, err)
	}
	if err := ClearPorts(nodePath); err != nil {
		t.Errorf("ClearPorts twice: %v", err)
	}
}

// TestProgramPortsBadInput: wrong protocol, zero ports, duplicates and
// IPv6 backends are refused before anything is written.
func TestProgramPortsBadInput(t *testing.T) {
	for _, c := range []struct {
		p    []PublishedPort
		want string
	}{
		{[]PublishedPort{{Port: 1, TargetPort: 1, Protocol: "sctp"}}, "protocol"},
		{[]PublishedPort{{Port: 0, TargetPort: 1}}, "non-zero"},
		{[]PublishedPort{{Port: 1, TargetPort: 1}, {Port: 1, TargetPort: 2, Protocol: "tcp"}}, "1/tcp given twice"},
		{[]PublishedPort{{Port: 1, TargetPort: 1, Backends: []PortBackend{{Addr: net.ParseIP("::1")}}}}, "not IPv4"},
	} {
		if _, err := normPorts(c.p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.p, err, c.want)
		}
	}
}

// BenchmarkProgramPorts: one ProgramPorts (a whole transaction) of 100
// published ports × 10 backends in a node namespace; "peers" adds 50
// neighbours (marks, fwmark rules and tables, unchanged between calls).
func BenchmarkProgramPorts(b *testing.B) {
	for _, nPeers := range []int{0, 50} {
		b.Run(fmt.Sprintf("peers=%d", nPeers), func(b *testing.B) {
			h := newHarness(b)
			node := h.host(1)
			var ps []PublishedPort
			for i := 0; i < 100; i++ {
				p := PublishedPort{Port: uint16(20000 + i), TargetPort: 80}
				for j := 0; j < 10; j++ {
					p.Backends = append(p.Backends, PortBackend{Addr: net.IPv4(10, 77, byte(i), byte(j+2)), SNAT: j%2 == 0})
				}
				ps = append(ps, p)
			}
			cfg := PortsConfig{Ports: ps, Underlay: netip.MustParsePrefix("192.168.250.0/24"), Uplink: "eth0"}
			for i := 0; i < nPeers; i++ {
				cfg.Peers = append(cfg.Peers, PortPeer{Addr: net.IPv4(192, 168, 250, byte(100+i)),
					MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, byte(i)}})
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := ProgramPorts("/var/run/netns/"+node, cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// askFrom is ask with the connection's source address set (from, an
// address of ns).
func askFrom(t *testing.T, ns, from, addr string) (string, error) {
	t.Helper()
	var out string
	var err error
	inNS(t, ns, func() {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		var c net.Conn
		if c, err = d.Dial("tcp", addr); err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		var b []byte
		b, err = io.ReadAll(c)
		out = string(b)
	})
	return out, err
}

// neighboursOf polls PortNeighbours in ns (asking to resolve want) until
// every address of want has a MAC, and returns the neighbours.
func neighboursOf(t *testing.T, nsPath string, want ...string) []PortPeer {
	t.Helper()
	under := netip.MustParsePrefix("192.168.250.0/24")
	var resolve []net.IP
	for _, w := range want {
		resolve = append(resolve, net.ParseIP(w))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		peers, _, err := PortNeighbours(nsPath, "eth0", under, resolve)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, p := range peers {
			have[p.Addr.String()] = true
		}
		missing := 0
		for _, w := range want {
			if !have[w] {
				missing++
			}
		}
		if missing == 0 {
			return peers
		}
		if time.Now().After(deadline) {
			t.Fatalf("neighbours of %s: %v; want %v resolved", nsPath, peers, want)
		}
		time.Sleep(50 * time.Millisecond) // poll: ARP answers asynchronously
	}
}

// TestPortsKeepClientAcrossNodes: node F (192.168.250.1) runs no task and
// forwards 8080 to node R (192.168.250.2, same underlay subnet) without
// SNAT; R runs task a (10.77.0.2 on its node-local bridge). The client
// (192.168.250.9) connecting to F:8080 (and to F:5353/udp) is answered by
// a task that sees the CLIENT's address, because R marks the connection by F's MAC and routes
// the replies back through F (kernel state checked: the hops map, the
// fwmark rule, the per-peer table); without R's peers the same
// connection fails (replies go straight to the client, which drops
// them). Also: the client through R directly is kept; a task on R
// reaching R's own port (hairpin) is answered (masqueraded: it sees the
// bridge address); F refuses a connection coming from a node's MAC with
// another source address (no second hop), and takes it without the
// guard; ClearPorts removes the rules and tables.
func TestPortsKeepClientAcrossNodes(t *testing.T) {
	h := newHarness(t)
	fNS, rNS, client := h.host(1), h.host(2), h.host(9)
	fPath, rPath := "/var/run/netns/"+fNS, "/var/run/netns/"+rNS
	for _, n := range []string{fNS, rNS} {
		run(t, "ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}
	run(t, "ip", "-n", rNS, "link", "add", "lb0", "type", "bridge")
	run(t, "ip", "-n", rNS, "addr", "add", "10.77.0.1/24", "dev", "lb0")
	run(t, "ip", "-n", rNS, "link", "set", "lb0", "up")
	task, _ := h.task("a")
	run(t, "ip", "-n", rNS, "link", "add", "va", "type", "veth", "peer", "name", "eth0", "netns", task)
	run(t, "ip", "-n", rNS, "link", "set", "va", "master", "lb0", "up")
	run(t, "ip", "-n", task, "addr", "add", "10.77.0.2/24", "dev", "eth0")
	run(t, "ip", "-n", task, "link", "set", "eth0", "up")
	run(t, "ip", "-n", task, "route", "add", "default", "via", "10.77.0.1")
	whoami(t, task, "a")
	run(t, "ip", "-n", client, "addr", "add", "192.168.250.19/24", "dev", "eth0")

	under := netip.MustParsePrefix("192.168.250.0/24")
	hairpin := netip.MustParsePrefix("10.77.0.0/24")
	ip := net.ParseIP
	rPorts := []PublishedPort{
		{Port: 8080, TargetPort: 80, Backends: []PortBackend{{Addr: ip("10.77.0.2")}}},
		{Port: 5353, TargetPort: 80, Protocol: "udp", Backends: []PortBackend{{Addr: ip("10.77.0.2")}}},
	}
	// F learns R's MAC and R learns F's (NTF_USE resolution).
	fPeers := neighboursOf(t, fPath, "192.168.250.2")
	rPeers := neighboursOf(t, rPath, "192.168.250.1")
	rCfg := PortsConfig{Ports: rPorts, Underlay: under, Uplink: "eth0", Peers: rPeers, Hairpin: hairpin}
	if err := ProgramPorts(rPath, PortsConfig{Ports: rPorts, Hairpin: hairpin}); err != nil {
		t.Fatal(err)
	}
	fCfg := PortsConfig{Underlay: under, Uplink: "eth0", Peers: fPeers, Ports: []PublishedPort{{
		Port: 8080, TargetPort: 8080, Forward: true, NoForwardFrom: []net.IP{ip("192.168.250.2")},
		Backends: []PortBackend{{Addr: ip("192.168.250.2")}}}, {
		Port: 5353, TargetPort: 5353, Protocol: "udp", Forward: true, NoForwardFrom: []net.IP{ip("192.168.250.2")},
		Backends: []PortBackend{{Addr: ip("192.168.250.2")}}}}}
	if err := ProgramPorts(fPath, fCfg); err != nil {
		t.Fatal(err)
	}

	// R without peers: the task's replies to the client do not go back
	// through F, and the connection fails.
	if got, err := ask(t, client, "tcp", "192.168.250.1:8080"); err == nil {
		t.Fatalf("via F without R's marks answered %q; want a failure (the test would prove nothing)", got)
	}
	for i := 0; i < 2; i++ { // twice: idempotent
		if err := ProgramPorts(rPath, rCfg); err != nil {
			t.Fatal(err)
		}
	}
	// Kernel state on R: F's MAC → its mark in the hops map, the fwmark
	// rule and table 0x53000001 with a default route via F.
	fMark := uint32(0x53000001)
	if err := withPortsConn(rPath, func(c *nftables.Conn) error {
		tb := &nftables.Table{Name: PortsTable, Family: nftables.TableFamilyIPv4}
		s, err := c.GetSetByName(tb, "hops")
		if err != nil {
			return err
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			return err
		}
		var fMAC net.HardwareAddr
		for _, p := range rPeers {
			if p.Addr.Equal(ip("192.168.250.1")) {
				fMAC = p.MAC
			}
		}
		found := false
		for _, e := range els {
			if net.HardwareAddr(e.Key[:6]).String() == fMAC.String() && binaryutil.NativeEndian.Uint32(e.Val) == fMark {
				found = true
			}
		}
		if !found {
			t.Errorf("hops map %v lacks F's MAC %s → %#x", els, fMAC, fMark)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	nh := handleIn(t, rNS)
	rules, err := nh.RuleList(netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	nRules := 0
	for _, r := range rules {
		if r.Priority == PortsRulePriority {
			nRules++
			if r.Mark == fMark && r.Table != int(fMark) {
				t.Errorf("rule fwmark %#x looks up table %#x", r.Mark, r.Table)
			}
		}
	}
	if n, err := PeerRuleCount(rPath); err != nil || n != nRules || n != len(rPeers) {
		t.Errorf("PeerRuleCount = %d, %v; %d rules at priority %d, %d peers", n, err, nRules, PortsRulePriority, len(rPeers))
	}
	routes, err := nh.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: int(fMark)}, netlink.RT_FILTER_TABLE)
	if err != nil || len(routes) != 1 || !routes[0].Gw.Equal(ip("192.168.250.1")) {
		t.Errorf("table %#x: %v, %v; want one default route via 192.168.250.1", fMark, routes, err)
	}

	// Through F: the task sees the client. Directly through R: too.
	for _, via := range []string{"192.168.250.1:8080", "192.168.250.2:8080"} {
		got, err := ask(t, client, "tcp", via)
		t.Logf("via %s: %q", via, got)
		if err != nil || got != "a 192.168.250.9" {
			t.Errorf("via %s answered %q, %v; want \"a 192.168.250.9\" (client address kept)", via, got, err)
		}
	}
	// Hairpin: task a reaches its own node's port, masqueraded (routed:
	// with br_netfilter calling the ip hooks, the kernel would bridge the
	// DNATed frame back out of the port it came in by, see
	// PortsConfig.Hairpin).
	if _, err := os.Stat("/proc/sys/net/bridge"); err == nil {
		run(t, "ip", "netns", "exec", rNS, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
	}
	if got, err := ask(t, task, "tcp", "192.168.250.2:8080"); err != nil || got != "a 10.77.0.1" {
		t.Errorf("hairpin answered %q, %v; want \"a 10.77.0.1\"", got, err)
	}
	// UDP through F: the task sees the client.
	if got, err := ask(t, client, "udp", "192.168.250.1:5353"); err != nil || got != "a 192.168.250.9" {
		t.Errorf("udp via F answered %q, %v; want \"a 192.168.250.9\"", got, err)
	}
	// From another source address of the client: kept too.
	if got, err := askFrom(t, client, "192.168.250.19", "192.168.250.1:8080"); err != nil || got != "a 192.168.250.19" {
		t.Errorf("from .19 via F: %q, %v; want \"a 192.168.250.19\"", got, err)
	}
	// F never forwards a connection from a node's MAC, whatever its
	// source address: with .9 counted as a node (its MAC in F's peers,
	// its address in NoForwardFrom), .19 (same MAC) is refused.
	fCfg.Peers = neighboursOf(t, fPath, "192.168.250.2", "192.168.250.9")
	fCfg.Ports[0].NoForwardFrom = []net.IP{ip("192.168.250.2"), ip("192.168.250.9")}
	if err := ProgramPorts(fPath, fCfg); err != nil {
		t.Fatal(err)
	}
	if got, err := askFrom(t, client, "192.168.250.19", "192.168.250.1:8080"); err == nil {
		t.Errorf("F forwarded a connection from a node's MAC: %q", got)
	}

	// A peer gone: its rule and table go.
	if err := ProgramPorts(rPath, PortsConfig{Ports: rPorts, Underlay: under, Uplink: "eth0", Hairpin: hairpin}); err != nil {
		t.Fatal(err)
	}
	if n, err := PeerRuleCount(rPath); err != nil || n != 0 {
		t.Errorf("after the peers went: %d rules, %v", n, err)
	}
	if routes, _ := nh.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: int(fMark)}, netlink.RT_FILTER_TABLE); len(routes) != 0 {
		t.Errorf("table %#x still has %v", fMark, routes)
	}
	if err := ProgramPorts(rPath, rCfg); err != nil {
		t.Fatal(err)
	}
	if err := ClearPorts(rPath); err != nil {
		t.Fatal(err)
	}
	if n, err := PeerRuleCount(rPath); err != nil || n != 0 {
		t.Errorf("after ClearPorts: %d rules, %v", n, err)
	}
}
