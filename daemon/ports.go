package daemon

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/shoal-dev/shoal/overlay"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// nodeNetNS is the node's own network namespace (the daemon's).
const nodeNetNS = "/proc/self/ns/net"

// portProgrammer keeps the node's published-port rules (overlay.ProgramPorts
// in the node namespace) in step with the network states: after every
// Networks message, overlay.PlanPorts over the held states, the backends
// on this node found at their node-local address (the task status
// address inside the node-local subnet).
type portProgrammer struct {
	nodeID string
	subnet netip.Prefix
	tasks  func() []*shoalv1.Task
	log    *slog.Logger

	netns string // the node namespace ("": nodeNetNS; tests set their own)

	mu       sync.Mutex
	programd bool   // the table was written at least once
	checked  bool   // a table left by an earlier run was looked for
	last     string // the ports last written
}

func (p *portProgrammer) program(states []*shoalv1.NetworkState) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	local := map[string]net.IP{}
	for _, t := range p.tasks() {
		for _, a := range t.GetStatus().GetAddresses() {
			ip, _, _ := strings.Cut(a, "/") // plain (the executor's) or CIDR
			addr, err := netip.ParseAddr(ip)
			if err == nil && addr.Is4() && p.subnet.Contains(addr) {
				local[t.GetMeta().GetId()] = net.IP(addr.AsSlice())
			}
		}
	}
	ports := overlay.PlanPorts(p.nodeID, states, func(id string) net.IP { return local[id] })
	ns := p.netns
	if ns == "" {
		ns = nodeNetNS
	}
	if len(ports) == 0 && !p.programd {
		// No table on a node that never published, but once, clear the
		// rules an earlier run of the agent left (kill -9, or a service
		// removed while it was down): they would DNAT to dead tasks.
		if p.checked {
			return nil
		}
		p.checked = true
		if n, err := overlay.PortRuleCount(ns); err == nil && n == 0 {
			return nil
		}
	}
	sig := fmt.Sprint(ports)
	if p.programd && sig == p.last {
		// Unchanged: rewrite only if someone changed the table.
		if n, err := overlay.PortRuleCount(ns); err == nil && n == len(ports) {
			return nil
		}
	}
	if err := overlay.ProgramPorts(ns, ports); err != nil {
		return err
	}
	p.last = sig
	if len(ports) > 0 || p.programd {
		p.log.Debug("published ports programmed", "ports", len(ports))
	}
	p.programd = true
	return nil
}
