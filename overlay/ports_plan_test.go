package overlay

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestPlanPorts: host mode programs only this node's running tasks;
// ingress uses local tasks (no SNAT) when there are some and otherwise
// forwards to the nodes running one (published port, other nodes
// excluded as sources, Forward set): without SNAT to a node on this
// node's underlay subnet (L2-adjacent: the client's address is kept),
// with SNAT to one beyond it or when the subnet is unknown; non-running
// tasks are not backends; a task on two networks counts once.
func TestPlanPorts(t *testing.T) {
	running := shoalv1.TaskState_TASK_STATE_RUNNING
	epAt := func(task, svc string, node int, state shoalv1.TaskState) *shoalv1.Endpoint {
		return &shoalv1.Endpoint{TaskId: task, ServiceId: svc, Address: "10.0.1.9/24", State: state,
			NodeId: fmt.Sprintf("node%d", node), NodeAddr: fmt.Sprintf("192.168.250.%d", node)}
	}
	states := []*shoalv1.NetworkState{{
		Vips: []*shoalv1.ServiceVIPState{
			{ServiceId: "web", Ports: []*shoalv1.PortConfig{{PublishedPort: 8080, TargetPort: 80}}},
			{ServiceId: "hst", Ports: []*shoalv1.PortConfig{{PublishedPort: 9090, TargetPort: 90, Protocol: "udp", PublishMode: "host"}}},
			{ServiceId: "nop"},
		},
		Endpoints: []*shoalv1.Endpoint{
			epAt("w1", "web", 2, running),
			epAt("w2", "web", 3, running),
			epAt("w3", "web", 3, running),
			epAt("w4", "web", 4, shoalv1.TaskState_TASK_STATE_STARTING),
			epAt("h1", "hst", 2, running),
			epAt("n1", "nop", 5, running),
			{TaskId: "w5", ServiceId: "web", Address: "10.0.1.10/24", State: running, NodeId: "far", NodeAddr: "10.20.0.7"},
		},
	}, {
		Vips:      []*shoalv1.ServiceVIPState{{ServiceId: "web", Ports: []*shoalv1.PortConfig{{PublishedPort: 8080, TargetPort: 80}}}},
		Endpoints: []*shoalv1.Endpoint{epAt("w1", "web", 2, running)},
	}}
	local := func(task string) net.IP {
		return net.ParseIP(map[string]string{"w1": "10.99.2.5", "h1": "10.99.2.6"}[task])
	}
	str := func(ps []PublishedPort) string {
		s := ""
		for _, p := range ps {
			s += fmt.Sprintf("%d/%s->%d", p.Port, p.Protocol, p.TargetPort)
			for _, b := range p.Backends {
				s += fmt.Sprintf(" %s", b.Addr)
				if b.SNAT {
					s += "(snat)"
				}
			}
			if p.Forward {
				s += " fwd"
			}
			if len(p.NoForwardFrom) > 0 {
				s += fmt.Sprintf(" not-from%v", p.NoForwardFrom)
			}
			s += "; "
		}
		return s
	}
	under := netip.MustParsePrefix("192.168.250.0/24")
	for _, c := range []struct {
		node     string
		underlay netip.Prefix
		want     string
	}{
		// node2 runs w1 and h1: both local, client address kept.
		{"node2", under, "9090/udp->90 10.99.2.6; 8080/tcp->80 10.99.2.5; "},
		// node1 runs nothing: web forwards to node2 and node3 (once
		// each) without SNAT (same subnet), to "far" with SNAT (another
		// subnet); never from another node; no host-mode port.
		{"node1", under, "8080/tcp->8080 10.20.0.7(snat) 192.168.250.2 192.168.250.3 fwd not-from[10.20.0.7 192.168.250.2 192.168.250.3 192.168.250.4 192.168.250.5]; "},
		// Underlay subnet unknown: every hop masqueraded.
		{"node1", netip.Prefix{}, "8080/tcp->8080 10.20.0.7(snat) 192.168.250.2(snat) 192.168.250.3(snat) fwd not-from[10.20.0.7 192.168.250.2 192.168.250.3 192.168.250.4 192.168.250.5]; "},
		// A subnet too large for the marks (> 24 host bits): SNAT.
		{"node1", netip.MustParsePrefix("192.0.0.0/7"), "8080/tcp->8080 10.20.0.7(snat) 192.168.250.2(snat) 192.168.250.3(snat) fwd not-from[10.20.0.7 192.168.250.2 192.168.250.3 192.168.250.4 192.168.250.5]; "},
		// node3 runs w2, w3 but local() does not know them: they are
		// skipped, so node3 forwards to node2 (and far).
		{"node3", under, "8080/tcp->8080 10.20.0.7(snat) 192.168.250.2 fwd not-from[10.20.0.7 192.168.250.2 192.168.250.4 192.168.250.5]; "},
	} {
		if got := str(PlanPorts(c.node, states, local, c.underlay)); got != c.want {
			t.Errorf("%s %v:\n got %s\nwant %s", c.node, c.underlay, got, c.want)
		}
	}
}

// TestPortsPeerMark: a neighbour's mark is the base with its host part in
// the underlay subnet; addresses off the subnet, the network and
// broadcast addresses, and subnets with more than 24 host bits have none.
func TestPortsPeerMark(t *testing.T) {
	for _, c := range []struct {
		prefix, addr string
		mark         uint32
		ok           bool
	}{
		{"192.168.250.0/24", "192.168.250.1", 0x53000001, true},
		{"192.168.250.0/24", "192.168.250.254", 0x530000fe, true},
		{"192.168.250.0/24", "192.168.250.0", 0, false},
		{"192.168.250.0/24", "192.168.250.255", 0, false},
		{"192.168.250.0/24", "192.168.251.1", 0, false},
		{"10.0.0.0/8", "10.1.2.3", 0x53010203, true},
		{"10.0.0.0/7", "10.1.2.3", 0, false},
		{"10.1.2.0/31", "10.1.2.1", 0, false},
		{"", "10.1.2.3", 0, false},
		{"10.0.0.0/8", "::1", 0, false},
	} {
		var p netip.Prefix
		if c.prefix != "" {
			p = netip.MustParsePrefix(c.prefix)
		}
		m, ok := PortsPeerMark(p, net.ParseIP(c.addr))
		if m != c.mark || ok != c.ok {
			t.Errorf("PortsPeerMark(%s, %s) = %#x, %v; want %#x, %v", c.prefix, c.addr, m, ok, c.mark, c.ok)
		}
	}
}
