package dns

import (
	"bytes"
	"net"
	"sort"
	"strings"
	"sync/atomic"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// View is the in-memory name table of one node, built from the network
// states the agent receives. Readers never block: Update builds a new
// table and swaps it in atomically, so the next query after Update
// returns sees the new answers.
type View struct {
	cur atomic.Pointer[table]
	// nets: network id → internal, for every network of the last Update.
	nets atomic.Pointer[map[string]bool]
}

// Forwardable reports whether names outside the cluster may be forwarded
// for a task attached to networks: only when every one of them is known
// and none is internal. An --internal network has no egress, and queries
// forwarded to the node's resolvers would be one (data leaves in the
// names); a network not delivered yet fails closed.
func (v *View) Forwardable(networks []string) bool {
	nets := *v.nets.Load()
	for _, id := range networks {
		if internal, ok := nets[id]; !ok || internal {
			return false
		}
	}
	return true
}

// table maps network id → lower-case name (no trailing dot) → addresses.
type table map[string]map[string][]net.IP

// NewView returns an empty view (every cluster name is NXDOMAIN).
func NewView() *View {
	v := &View{}
	v.cur.Store(&table{})
	v.nets.Store(&map[string]bool{})
	return v
}

// Update replaces the whole view with states (the full per-node network
// state: endpoints and the service VIPs per network; endpoints of tasks
// not RUNNING are left out of the answers).
// For each network:
//   - a service in vip mode answers with its VIP; in dnsrr mode (or with
//     no VIP state at all) with its endpoints' addresses;
//   - a service alias (ServiceVIPState.Aliases) answers like the service;
//   - tasks.SERVICE and tasks.ALIAS answer with all endpoint addresses;
//   - an endpoint alias (Endpoint.Aliases, from --network NAME,alias=A)
//     answers with the addresses of the endpoints that carry it, unless
//     it is also an alias of the endpoint's service in vip mode with a
//     VIP (the dispatcher gives a service's aliases to both): then it
//     answers the VIP alone, like the service name.
func (v *View) Update(states []*shoalv1.NetworkState) {
	t := table{}
	for _, st := range states {
		if st == nil || st.GetNetwork().GetMeta().GetId() == "" {
			continue
		}
		names := map[string][]net.IP{}
		byService := map[string][]net.IP{} // service name → endpoint IPs
		vipAliases := map[string]bool{}    // "service\x00alias" answered by a VIP
		for _, vs := range st.GetVips() {
			if vs.GetEndpointMode() != "dnsrr" && parseAddr(vs.GetAddress()) != nil {
				for _, a := range normNames(vs.GetAliases()) {
					vipAliases[normName(vs.GetServiceName())+"\x00"+a] = true
				}
			}
		}
		for _, ep := range st.GetEndpoints() {
			ip := parseAddr(ep.GetAddress())
			if ip == nil {
				continue
			}
			// Hosts program endpoints from ASSIGNED on; names answer only
			// RUNNING tasks that pass their health check, if they have
			// one (the service is still known meanwhile).
			if !Serves(ep) {
				if n := normName(ep.GetServiceName()); n != "" {
					if _, ok := byService[n]; !ok {
						byService[n] = nil
					}
				}
				continue
			}
			if n := normName(ep.GetServiceName()); n != "" {
				byService[n] = append(byService[n], ip)
			}
			for _, a := range ep.GetAliases() {
				if n := normName(a); n != "" && !vipAliases[normName(ep.GetServiceName())+"\x00"+n] {
					names[n] = appendIP(names[n], ip)
				}
			}
		}
		seen := map[string]bool{}
		for _, vs := range st.GetVips() {
			svc := normName(vs.GetServiceName())
			if svc == "" {
				continue
			}
			seen[svc] = true
			eps := byService[svc]
			var ans []net.IP
			if vs.GetEndpointMode() == "dnsrr" {
				ans = eps
			} else if ip := parseAddr(vs.GetAddress()); ip != nil {
				ans = []net.IP{ip}
			} else {
				ans = eps
			}
			for _, n := range append([]string{svc}, normNames(vs.GetAliases())...) {
				for _, ip := range ans {
					names[n] = appendIP(names[n], ip)
				}
				for _, ip := range eps {
					names["tasks."+n] = appendIP(names["tasks."+n], ip)
				}
				if len(ans) == 0 {
					names[n] = appendIP(names[n], nil) // exists, no address
				}
			}
		}
		// Services with endpoints but no VIP state behave like dnsrr.
		for svc, eps := range byService {
			if seen[svc] {
				continue
			}
			for _, ip := range eps {
				names[svc] = appendIP(names[svc], ip)
				names["tasks."+svc] = appendIP(names["tasks."+svc], ip)
			}
			if len(eps) == 0 {
				names[svc] = appendIP(names[svc], nil) // exists, no address
			}
		}
		for n, ips := range names {
			sortIPs(ips)
			names[n] = ips
		}
		id := st.GetNetwork().GetMeta().GetId()
		if old, ok := t[id]; ok { // same network twice: merge
			for n, ips := range names {
				old[n] = append(old[n], ips...)
			}
		} else {
			t[id] = names
		}
	}
	nets := map[string]bool{}
	for _, st := range states {
		if id := st.GetNetwork().GetMeta().GetId(); id != "" {
			nets[id] = nets[id] || st.GetNetwork().GetSpec().GetInternal()
		}
	}
	v.nets.Store(&nets)
	v.cur.Store(&t)
}

// Lookup returns the addresses of name as seen from a task attached to
// networks. exists is false when no such name is on any of them (the
// name is then NXDOMAIN); exists with no addresses is a known name that
// has nothing to answer now (e.g. a service with no running task).
// name may carry a trailing dot and any case.
func (v *View) Lookup(networks []string, name string) (ips []net.IP, exists bool) {
	n := normName(name)
	t := *v.cur.Load()
	for _, id := range networks {
		if got, ok := t[id][n]; ok {
			exists = true
			for _, ip := range got {
				if ip != nil {
					ips = appendIP(ips, ip)
				}
			}
		}
	}
	return ips, exists
}

func normName(s string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
}

func normNames(ss []string) []string {
	var out []string
	for _, s := range ss {
		if n := normName(s); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// parseAddr accepts "10.0.0.2/24" or "10.0.0.2".
func parseAddr(s string) net.IP {
	if s == "" {
		return nil
	}
	if ip, _, err := net.ParseCIDR(s); err == nil {
		return ip
	}
	return net.ParseIP(s)
}

func appendIP(ips []net.IP, ip net.IP) []net.IP {
	for _, x := range ips {
		if (x == nil && ip == nil) || (x != nil && x.Equal(ip)) {
			return ips
		}
	}
	return append(ips, ip)
}

func sortIPs(ips []net.IP) {
	sort.Slice(ips, func(i, j int) bool { return bytes.Compare(ips[i].To16(), ips[j].To16()) < 0 })
}

// Serves says whether discovery sends clients to an endpoint: its task is
// RUNNING and, where it has a health check, HEALTHY (STARTING and
// UNHEALTHY tasks get no new clients). DNS, the VIP backends and the
// published ports' backends all ask it.
func Serves(ep *shoalv1.Endpoint) bool {
	if ep.GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
		return false
	}
	h := ep.GetHealth()
	return h == shoalv1.TaskHealth_TASK_HEALTH_NONE || h == shoalv1.TaskHealth_TASK_HEALTH_HEALTHY
}
