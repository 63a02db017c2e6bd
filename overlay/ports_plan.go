package overlay

import (
	"net"
	"net/netip"
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
//     nodes that do, at their underlay address and the published port
//     (Forward), and never takes a connection coming from another node
//     (NoForwardFrom: every node address in the states; ProgramPorts
//     also refuses their MACs), so a connection is forwarded at most once
//     and cannot loop while two nodes disagree about where tasks run. A
//     node on this node's underlay subnet (L2-adjacent, PortsPeerMark
//     accepts it) is forwarded to WITHOUT SNAT: the packet reaches it with
//     the client's source address, and that node sends the replies back
//     through the hop they came from (its marks by source MAC, see
//     ProgramPorts), where conntrack undoes the DNAT. A node beyond a
//     router is masqueraded (SNAT: its task sees this node's address),
//     since its replies would otherwise never come back here.
//
// underlay is this node's connected underlay subnet (the prefix of its
// advertise address); an invalid prefix makes every other node
// non-adjacent (all SNAT, as before the adjacency path existed).
func PlanPorts(nodeID string, states []*shoalv1.NetworkState, local func(taskID string) net.IP, underlay netip.Prefix) []PublishedPort {
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
				p.Forward = true
				for _, a := range s.nodes {
					_, adjacent := PortsPeerMark(underlay, a)
					p.Backends = append(p.Backends, PortBackend{Addr: a, SNAT: !adjacent})
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

// PortsPeerMarkBase and PortsPeerMarkMask: the conntrack/packet marks a
// node gives connections to its published ports by the neighbour on its
// underlay they came from (base | the neighbour's host part in the
// underlay subnet), and the per-neighbour routing table of the same
// number that sends their replies back through it.
const (
	PortsPeerMarkBase uint32 = 0x53000000
	PortsPeerMarkMask uint32 = 0xff000000
)

// PortsPeerMark returns the mark of neighbour addr on the underlay subnet
// (base | addr's host part), and false when addr is not on it (not
// L2-adjacent), is its network or broadcast address, or the subnet has
// more than 24 host bits (the marks would not fit under the base).
func PortsPeerMark(underlay netip.Prefix, addr net.IP) (uint32, bool) {
	a, ok := netip.AddrFromSlice(addr.To4())
	if !ok || !underlay.IsValid() || !underlay.Addr().Is4() || !underlay.Contains(a) {
		return 0, false
	}
	hostBits := 32 - underlay.Bits()
	if hostBits > 24 || hostBits < 2 {
		return 0, false
	}
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	host := v & (1<<hostBits - 1)
	if host == 0 || host == 1<<hostBits-1 {
		return 0, false
	}
	return PortsPeerMarkBase | host, true
}
