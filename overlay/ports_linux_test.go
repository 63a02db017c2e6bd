package overlay

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
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
// published ports × 10 backends in a node namespace.
func BenchmarkProgramPorts(b *testing.B) {
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
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := ProgramPorts("/var/run/netns/"+node, PortsConfig{Ports: ps}); err != nil {
			b.Fatal(err)
		}
	}
}
