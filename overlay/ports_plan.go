package overlay

import (
	"net"
	"sort"

	"github.com/shoal-dev/shoal/overlay/dns"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// PlanPorts computes the published ports node nodeID must program
// (ProgramPorts in its namespace) from the network states the managers
// send it. Each service's ports come from ServiceVIPState.ports; its
// backends are its serving endpoints (dns.Serves; deduplicated by task over the
// networks it is on). local gives the address of a task running on this
// node that the node can route to (its node-local bridge address); a
// local endpoint without one is skipped.
//
//   - host mode: only this node's running tasks of the service, at their
//     local address and the target port, no SNAT (the task sees the
//     client). A node running none programs nothing for the port.
//   - ingress mode: when this node runs tasks of the service, the same as
//     host mode (client address kept). Otherwise the port forwards to the
//     nodes that do, at their underlay address and the published port,
//     masqueraded (the task sees this node's address: its replies must
//     come back through here), and never takes a connection coming from
//     another node (NoForwardFrom: every node address in the states), so
//     a connection is forwarded at most once and cannot loop while two
//     nodes disagree about where tasks run.
func PlanPorts(nodeID string, states []*shoalv1.NetworkState, local func(taskID string) net.IP) []PublishedPort {
	type svcInfo struct {
		ports []*shoalv1.PortConfig
		local map[string]net.IP // task id -> local address
		nodes map[string]net.IP // node id -> underlay address (other nodes with a running task)
	}
	svcs := map[string]*svcInfo{}
	allNodes := map[string]net.IP{}
	for _, st := range states {
		for _, v := range st.GetVips() {
			if len(v.GetPorts()) == 0 {
				continue
			}
			if svcs[v.GetServiceId()] == nil {
				svcs[v.GetServiceId()] = &svcInfo{ports: v.GetPorts(), local: map[string]net.IP{}, nodes: map[string]net.IP{}}
			}
		}
	}
	for _, st := range states {
		for _, e := range st.GetEndpoints() {
			addr := net.ParseIP(e.GetNodeAddr())
			if e.GetNodeId() != nodeID && addr.To4() != nil {
				allNodes[e.GetNodeId()] = addr
			}
			s := svcs[e.GetServiceId()]
			if s == nil || !dns.Serves(e) {
				continue
			}
			if e.GetNodeId() == nodeID {
				if a := local(e.GetTaskId()); a.To4() != nil {
					s.local[e.GetTaskId()] = a
				}
				continue
			}
			if addr.To4() != nil {
				s.nodes[e.GetNodeId()] = addr
			}
		}
	}
	var others []net.IP
	for _, a := range allNodes {
		others = append(others, a)
	}
	sort.Slice(others, func(i, j int) bool { return others[i].String() < others[j].String() })
	var out []PublishedPort
	ids := make([]string, 0, len(svcs))
	for id := range svcs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		s := svcs[id]
		for _, pc := range s.ports {
			if pc.GetPublishedPort() == 0 || pc.GetPublishedPort() > 65535 || pc.GetTargetPort() == 0 || pc.GetTargetPort() > 65535 {
				continue
			}
			p := PublishedPort{Protocol: pc.GetProtocol(), Port: uint16(pc.GetPublishedPort()), TargetPort: uint16(pc.GetTargetPort())}
			if p.Protocol == "" {
				p.Protocol = "tcp"
			}
			switch {
			case len(s.local) > 0:
				for _, a := range s.local {
					p.Backends = append(p.Backends, PortBackend{Addr: a})
				}
			case pc.GetPublishMode() == "host":
				continue
			case len(s.nodes) > 0:
				p.TargetPort = p.Port
				for _, a := range s.nodes {
					p.Backends = append(p.Backends, PortBackend{Addr: a, SNAT: true})
				}
				p.NoForwardFrom = others
			default:
				continue
			}
			sort.Slice(p.Backends, func(i, j int) bool { return p.Backends[i].Addr.String() < p.Backends[j].Addr.String() })
			out = append(out, p)
		}
	}
	return out
}
