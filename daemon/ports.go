package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/overlay"
	"github.com/shoal-dev/shoal/overlay/gossip"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// nodeNetNS is the node's own network namespace (the daemon's).
const nodeNetNS = "/proc/self/ns/net"

// portProgrammer keeps the node's published-port rules (overlay.ProgramPorts
// in the node namespace) in step with the network states: after every
// Networks message, overlay.PlanPorts over the held states, the backends
// on this node found at their node-local address (the task status
// address inside the node-local subnet); and on every repair tick (run),
// so that a table or a route someone removed comes back.
//
// For the client's address to survive a hop between nodes, the plan
// needs the node's underlay subnet (the prefix of vtep on its uplink)
// and the MACs of the neighbours there (the neighbour table, see
// overlay.PortsConfig.Peers); the nodes it knows of (the states' nodes
// and the gossip members, nodes) are resolved when their MAC is not
// known yet, so that a node that starts forwarding to this one finds its
// MAC already in the marks.
type portProgrammer struct {
	nodeID string
	subnet netip.Prefix
	vtep   netip.Addr // the node's underlay address (invalid: no adjacency, every hop SNATed)
	tasks  func() []*shoalv1.Task
	nodes  func() []net.IP // other nodes' underlay addresses (gossip); may be nil
	log    *slog.Logger

	netns string // the node namespace ("": nodeNetNS; tests set their own)

	mu       sync.Mutex
	programd bool                    // the table was written at least once
	checked  bool                    // a table left by an earlier run was looked for
	last     string                  // the ports last written
	states   []*shoalv1.NetworkState // the states last planned from (for the repair tick)
	asked    int                     // neighbour resolutions asked by the last program
	soon     chan struct{}           // run looks again in a second (a program asked for resolutions)
}

// run re-programs from the last states every period until ctx ends (the
// rules are only rewritten when they differ from the kernel's), and one
// second after a program that asked for neighbours to be resolved, so
// their MACs are used without waiting for a whole period.
func (p *portProgrammer) run(ctx context.Context, period time.Duration) {
	p.mu.Lock()
	if p.soon == nil {
		p.soon = make(chan struct{}, 1)
	}
	soon := p.soon
	p.mu.Unlock()
	t := time.NewTimer(period)
	defer t.Stop()
	due := time.Now().Add(period)
	fast := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-soon:
			if time.Until(due) > time.Second { // never later than already due
				due = time.Now().Add(time.Second)
				t.Reset(time.Second)
			}
			continue
		case <-t.C:
		}
		p.mu.Lock()
		err := p.programLocked(p.states)
		next := period
		if p.asked > 0 && fast < 10 {
			next = time.Second // bounded: a node that never answers ARP
			fast++
		} else if p.asked == 0 {
			fast = 0
		}
		p.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			p.log.Warn("published ports repair", "err", err)
		}
		due = time.Now().Add(next)
		t.Reset(next)
	}
}

// program plans from states (a Networks message) and writes what
// differs; if it asked for neighbours to be resolved, run looks again
// within a second.
func (p *portProgrammer) program(states []*shoalv1.NetworkState) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.programLocked(states)
	if p.asked > 0 {
		select {
		case p.soon <- struct{}{}: // nil before run starts: skipped
		default:
		}
	}
	return err
}

// programLocked plans from states and writes what differs; p.mu held.
func (p *portProgrammer) programLocked(states []*shoalv1.NetworkState) error {
	p.states = states
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
	ns := p.netns
	if ns == "" {
		ns = nodeNetNS
	}
	var uplink string
	var underlay netip.Prefix
	if p.vtep.IsValid() {
		var err error
		if uplink, underlay, err = overlay.PortsUnderlay(ns, p.vtep); err != nil {
			p.log.Debug("published ports: no underlay subnet, every hop is masqueraded", "err", err)
			uplink, underlay = "", netip.Prefix{}
		}
	}
	ports := overlay.PlanPorts(p.nodeID, states, func(id string) net.IP { return local[id] }, underlay)
	cfg := overlay.PortsConfig{Ports: ports}
	if len(ports) > 0 && uplink != "" {
		var resolve []net.IP
		for _, pp := range ports {
			resolve = append(resolve, pp.NoForwardFrom...)
			for _, b := range pp.Backends {
				if !b.SNAT && pp.Forward {
					resolve = append(resolve, b.Addr)
				}
			}
		}
		if p.nodes != nil {
			resolve = append(resolve, p.nodes()...)
		}
		peers, asked, err := overlay.PortNeighbours(ns, uplink, underlay, resolve)
		if err != nil {
			p.log.Debug("published ports: neighbours", "err", err)
		}
		p.asked = asked
		cfg.Underlay, cfg.Uplink, cfg.Peers, cfg.Hairpin = underlay, uplink, peers, p.subnet
	} else if len(ports) > 0 {
		cfg.Hairpin = p.subnet
	}
	if len(ports) == 0 && !p.programd {
		// No table on a node that never published, but once, clear the
		// rules an earlier run of the agent left (kill -9, or a service
		// removed while it was down): they would DNAT to dead tasks.
		if p.checked {
			return nil
		}
		p.checked = true
		n, err := overlay.PortRuleCount(ns)
		r, rerr := overlay.PeerRuleCount(ns)
		if err == nil && rerr == nil && n == 0 && r == 0 {
			return nil
		}
	}
	sig := fmt.Sprint(ports, cfg.Underlay, cfg.Uplink, cfg.Peers, cfg.Hairpin)
	if p.programd && sig == p.last {
		// Unchanged: rewrite only if someone changed the table or the rules.
		n, err := overlay.PortRuleCount(ns)
		r, rerr := overlay.PeerRuleCount(ns)
		if err == nil && rerr == nil && n == len(ports) && r == cfg.PeerRules() {
			return nil
		}
		p.log.Info("published ports: kernel state differs from the last written, repairing", "dnat_rules", n, "peer_rules", r)
	}
	if err := overlay.ProgramPorts(ns, cfg); err != nil {
		return err
	}
	p.last = sig
	if len(ports) > 0 || p.programd {
		p.log.Debug("published ports programmed", "ports", len(ports), "peers", len(cfg.Peers))
	}
	p.programd = true
	return nil
}

// gossipNodes returns the underlay addresses of the gossip members other
// than the node itself (their gossip endpoint's host), or nil without
// gossip.
func gossipNodes(g *nodeGossip, self netip.Addr) func() []net.IP {
	if g == nil || g.n == nil {
		return nil
	}
	return func() []net.IP {
		var out []net.IP
		for _, m := range g.n.Members() {
			a, err := netip.ParseAddr(hostOf(m.Addr))
			if err != nil || !a.Is4() || a == self || m.State != gossip.StateAlive {
				continue
			}
			out = append(out, net.IP(a.AsSlice()))
		}
		return out
	}
}
