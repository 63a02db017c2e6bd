package overlay

import (
	"fmt"
	"net"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestPlanPorts: host mode programs only this node's running tasks;
// ingress uses local tasks (no SNAT) when there are some and otherwise
// forwards to the nodes running one (SNAT, published port, other nodes
// excluded as sources); non-running tasks are not backends; a task on two
// networks counts once.
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
			if len(p.NoForwardFrom) > 0 {
				s += fmt.Sprintf(" not-from%v", p.NoForwardFrom)
			}
			s += "; "
		}
		return s
	}
	for _, c := range []struct {
		node string
		want string
	}{
		// node2 runs w1 and h1: both local, client address kept.
		{"node2", "9090/udp->90 10.99.2.6; 8080/tcp->80 10.99.2.5; "},
		// node1 runs nothing: web forwards to node2 and node3 (once each),
		// never from another node; no host-mode port.
		{"node1", "8080/tcp->8080 192.168.250.2(snat) 192.168.250.3(snat) not-from[192.168.250.2 192.168.250.3 192.168.250.4 192.168.250.5]; "},
	} {
		if got := str(PlanPorts(c.node, states, local)); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.node, got, c.want)
		}
	}
	// node3 runs w2, w3 but local() does not know them: they are skipped,
	// so the port falls back to nothing local... and forwarding: node3
	// has local endpoints but none usable, so it forwards to node2.
	if got := str(PlanPorts("node3", states, local)); got != "8080/tcp->8080 192.168.250.2(snat) not-from[192.168.250.2 192.168.250.4 192.168.250.5]; " {
		t.Errorf("node3: %s", got)
	}
}
