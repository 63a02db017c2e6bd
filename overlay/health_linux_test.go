package overlay

import (
	"net"
	"net/netip"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// healthStates: service s1 (vip 10.90.0.2, port 8080) with one task of
// each health on node n2.
func healthStates() []*shoalv1.NetworkState {
	ep := func(id, addr string, h shoalv1.TaskHealth) *shoalv1.Endpoint {
		return &shoalv1.Endpoint{TaskId: id, ServiceId: "s1", ServiceName: "web", Address: addr + "/24",
			State: shoalv1.TaskState_TASK_STATE_RUNNING, Health: h, NodeId: "n2", NodeAddr: "192.168.250.2"}
	}
	return []*shoalv1.NetworkState{{Network: &shoalv1.Network{Meta: &shoalv1.Meta{Id: "n1"}},
		Vips: []*shoalv1.ServiceVIPState{{ServiceId: "s1", ServiceName: "web", Address: "10.90.0.2/24", EndpointMode: "vip",
			Ports: []*shoalv1.PortConfig{{PublishedPort: 8080, TargetPort: 80}}}},
		Endpoints: []*shoalv1.Endpoint{
			ep("ok", "10.90.0.3", shoalv1.TaskHealth_TASK_HEALTH_HEALTHY),
			ep("none", "10.90.0.4", shoalv1.TaskHealth_TASK_HEALTH_NONE),
			ep("starting", "10.90.0.5", shoalv1.TaskHealth_TASK_HEALTH_STARTING),
			ep("sick", "10.90.0.6", shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY),
		}}}
}

// VIP backends are the healthy (or unchecked) tasks only.
func TestVIPsForSkipsUnhealthy(t *testing.T) {
	if k := vipKey(VIPsFor(healthStates(), []string{"n1"})); k != "v:10.90.0.2=10.90.0.3,10.90.0.4" {
		t.Fatalf("got %s", k)
	}
}

// Published-port backends likewise.
func TestPlanPortsSkipsUnhealthy(t *testing.T) {
	local := func(task string) net.IP {
		return net.ParseIP(map[string]string{"ok": "10.99.2.3", "none": "10.99.2.4", "starting": "10.99.2.5", "sick": "10.99.2.6"}[task])
	}
	ps := PlanPorts("n2", healthStates(), local, netip.Prefix{})
	if len(ps) != 1 {
		t.Fatalf("ports %+v", ps)
	}
	var got []string
	for _, b := range ps[0].Backends {
		got = append(got, b.Addr.String())
	}
	if len(got) != 2 || got[0] != "10.99.2.3" || got[1] != "10.99.2.4" {
		t.Fatalf("backends %v, want the healthy and the unchecked task", got)
	}
}
