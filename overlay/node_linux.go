package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/specrules"
)

// Node holds the desired network states the agent receives (full sets
// and diffs of SessionMessage.Networks) and drives a Manager with them;
// it resolves a task's attachments to their networks. The daemon's
// adapters for agent.NetworkReconciler and agent.Overlay call it.
type Node struct {
	m *Manager

	mu chan struct{} // 1-slot lock, so waiting for a network can be cancelled
	// applyMu orders the kernel applies (Reconcile, Run): the held set
	// is read after taking it, so a later apply never uses an older set.
	applyMu sync.Mutex
	states  map[string]*shoalv1.NetworkState
	changed chan struct{} // closed and replaced when states change
	// hints applied since the last Reconcile (hints_linux.go).
	hints map[hintKey]Hint
	// hintAt: when each held hint was applied (ExpireHints).
	hintAt map[hintKey]time.Time
	// served: the states names and VIPs were last built from (Prune).
	// The kernel keeps the entries of their endpoints until a later
	// Prune, so that no VIP still listing a backend finds it without a
	// neighbour entry (see withServed).
	served []*shoalv1.NetworkState
}

// NewNode wraps m.
func NewNode(m *Manager) *Node {
	n := &Node{m: m, mu: make(chan struct{}, 1), states: map[string]*shoalv1.NetworkState{}, changed: make(chan struct{}),
		hints: map[hintKey]Hint{}, hintAt: map[hintKey]time.Time{}}
	return n
}

func (n *Node) lock()   { n.mu <- struct{}{} }
func (n *Node) unlock() { <-n.mu }

// Reconcile applies a Networks message (full replaces the held set,
// otherwise upsert states and drop removed network ids) and reconciles
// the kernel against the whole held set.
func (n *Node) Reconcile(ctx context.Context, full bool, states []*shoalv1.NetworkState, removed []string) error {
	n.lock()
	// The managers' state overwrites whatever a hint did.
	clear(n.hints)
	clear(n.hintAt)
	if full {
		n.states = map[string]*shoalv1.NetworkState{}
	}
	for _, id := range removed {
		delete(n.states, id)
	}
	for _, st := range states {
		if id := st.GetNetwork().GetMeta().GetId(); id != "" {
			n.states[id] = st
		}
	}
	close(n.changed)
	n.changed = make(chan struct{})
	n.unlock()
	return n.apply(ctx)
}

// apply reconciles the kernel against the held set as it is once the
// previous apply is done, keeping the endpoints of the served set.
func (n *Node) apply(ctx context.Context) error {
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	n.lock()
	want := withHinted(withServed(n.statesLocked(), n.served), n.states, n.hints)
	n.unlock()
	return n.m.Reconcile(ctx, want)
}

// Prune says that names and VIPs now follow served (a States() result
// passed to Discovery.Update) and reconciles the kernel: the FDB and
// neighbour entries of endpoints that neither the held set nor served
// lists are deleted. Until a node calls Prune, Reconcile deletes them at
// once (served is empty).
func (n *Node) Prune(ctx context.Context, served []*shoalv1.NetworkState) error {
	n.lock()
	n.served = served
	n.unlock()
	return n.apply(ctx)
}

// States returns the held network states (the node's full current set,
// merged from the full sets and diffs Reconcile was given), with the
// observed state of endpoints changed by hints held since (ApplyHint).
func (n *Node) States() []*shoalv1.NetworkState {
	n.lock()
	defer n.unlock()
	return n.statesLocked()
}

// network returns the held network id, waiting (until ctx ends) for it
// to arrive: a task's assignment may come before its network's state.
func (n *Node) network(ctx context.Context, id string) (*shoalv1.Network, error) {
	for {
		n.lock()
		st, ok := n.states[id]
		ch := n.changed
		n.unlock()
		if ok {
			return st.GetNetwork(), nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("network %s: not delivered to this node: %w", id, ctx.Err())
		}
	}
}

// Driver returns the driver of the held network id ("overlay", "bridge"
// or "host"), waiting like Attach (up to AttachWait) for its state.
func (n *Node) Driver(ctx context.Context, id string) (string, error) {
	wctx, cancel := context.WithTimeout(ctx, AttachWait)
	defer cancel()
	nw, err := n.network(wctx, id)
	if err != nil {
		return "", err
	}
	if d := nw.GetSpec().GetDriver(); d != "" {
		return d, nil
	}
	return specrules.DriverOverlay, nil
}

// AttachWait bounds how long Attach waits for an unknown network.
const AttachWait = 30 * time.Second

// Attach attaches the task namespace to every network of atts (in order:
// eth1, eth2, …). NoEgress is set when one of them is internal. On a
// BridgeOnly Manager a task with an overlay network gets ErrNoOverlay
// and no attachment at all.
func (n *Node) Attach(ctx context.Context, taskNetNSPath string, atts []*shoalv1.NetworkAttachment) (AttachResult, error) {
	var res AttachResult
	wctx, cancel := context.WithTimeout(ctx, AttachWait)
	defer cancel()
	nws := make([]*shoalv1.Network, len(atts))
	for i, a := range atts {
		nw, err := n.network(wctx, a.GetNetworkId())
		if err != nil {
			return res, err
		}
		if d := nw.GetSpec().GetDriver(); n.m.BridgeOnly() && (d == "" || d == specrules.DriverOverlay) {
			// Refused before anything is attached.
			return res, fmt.Errorf("network %s (%s): %w", nw.GetSpec().GetName(), a.GetNetworkId(), ErrNoOverlay)
		}
		nws[i] = nw
	}
	for i, a := range atts {
		nw := nws[i]
		if nw.GetSpec().GetDriver() == specrules.DriverHost {
			continue // the task is in the node's namespace: nothing to join
		}
		r, err := n.m.Attach(ctx, taskNetNSPath, a, nw)
		if err != nil {
			return res, fmt.Errorf("network %s: %w", a.GetNetworkId(), err)
		}
		res.NoEgress = res.NoEgress || r.NoEgress
		if res.Interface == "" {
			res.Interface = r.Interface
		}
	}
	return res, nil
}

// Detach removes the task's attachments (missing ones are fine; the
// network must still be held, or its veth goes with the namespace).
func (n *Node) Detach(ctx context.Context, taskNetNSPath string, atts []*shoalv1.NetworkAttachment) error {
	var errs []error
	for _, a := range atts {
		n.lock()
		st, ok := n.states[a.GetNetworkId()]
		n.unlock()
		nw := st.GetNetwork()
		if !ok {
			nw = &shoalv1.Network{Meta: &shoalv1.Meta{Id: a.GetNetworkId()}}
		}
		if err := n.m.Detach(ctx, taskNetNSPath, a, nw); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// UplinkFor returns the name of the interface (in the calling thread's
// namespace) that holds addr: the node's underlay interface.
func UplinkFor(addr netip.Addr) (string, error) {
	addrs, err := netlink.AddrList(nil, unix.AF_INET)
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return "", err
			}
			return l.Attrs().Name, nil
		}
	}
	return "", fmt.Errorf("no interface holds %s", addr)
}

// Run reconciles the held set every period until ctx ends, so that what
// someone else changed in the kernel is repaired even when no message
// comes. Errors are reported to onErr (may be nil).
func (n *Node) Run(ctx context.Context, period time.Duration, onErr func(error)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := n.apply(ctx); err != nil && onErr != nil && ctx.Err() == nil {
			onErr(err)
		}
	}
}

// withServed returns states with, in each overlay network they hold, the
// endpoints served lists for that network and states no longer does
// (cloned; neither argument is modified), unless their address or MAC is
// now another endpoint's. This is the order of a withdrawal: a backend
// leaves every VIP (Discovery.Update, then Prune) before its neighbour
// and FDB entries go; deleted first, a client's VIP could pick it while
// no neighbour answers for it ("no route to host"). On the way in the
// kernel already comes first: an endpoint is programmed by the Reconcile
// that brings it, before names and VIPs see it.
func withServed(states, served []*shoalv1.NetworkState) []*shoalv1.NetworkState {
	if len(served) == 0 {
		return states
	}
	old := make(map[string]*shoalv1.NetworkState, len(served))
	for _, st := range served {
		old[st.GetNetwork().GetMeta().GetId()] = st
	}
	out := make([]*shoalv1.NetworkState, len(states))
	for i, st := range states {
		out[i] = st
		if d := st.GetNetwork().GetSpec().GetDriver(); d != "" && d != specrules.DriverOverlay {
			continue
		}
		prev := old[st.GetNetwork().GetMeta().GetId()]
		if prev == nil {
			continue
		}
		used := map[string]bool{}
		for _, ep := range st.GetEndpoints() {
			used["t"+ep.GetTaskId()] = true
			if p, err := parseAddr(ep.GetAddress()); err == nil {
				used["a"+p.Addr().String()] = true
			}
			if m, err := net.ParseMAC(ep.GetMac()); err == nil {
				used["m"+m.String()] = true
			}
		}
		var extra []*shoalv1.Endpoint
		for _, ep := range prev.GetEndpoints() {
			p, err := parseAddr(ep.GetAddress())
			m, merr := net.ParseMAC(ep.GetMac())
			if err != nil || merr != nil || used["t"+ep.GetTaskId()] || used["a"+p.Addr().String()] || used["m"+m.String()] {
				continue
			}
			used["a"+p.Addr().String()], used["m"+m.String()] = true, true
			extra = append(extra, ep)
		}
		if len(extra) == 0 {
			continue
		}
		c := &shoalv1.NetworkState{Network: st.GetNetwork(), Vips: st.GetVips(),
			Endpoints: append(slices.Clone(st.GetEndpoints()), extra...)}
		out[i] = c
	}
	return out
}

// withHinted returns want with the endpoints that held hints programmed
// (ApplyHint: up, and missing from their network's state held) added to
// their networks, unless their address or MAC is now another endpoint's:
// an apply between Reconciles (a refresh's Prune, the periodic repair)
// keeps them and their VTEP's VXLAN; the next Reconcile (which drops the
// hints) or ExpireHints takes them away. want is not modified.
func withHinted(want []*shoalv1.NetworkState, held map[string]*shoalv1.NetworkState, hints map[hintKey]Hint) []*shoalv1.NetworkState {
	extra := map[string][]Hint{}
	for k, h := range hints {
		if h.Up() && mergeHint(held[k.network], h) == hintProgram {
			extra[k.network] = append(extra[k.network], h)
		}
	}
	if len(extra) == 0 {
		return want
	}
	out := slices.Clone(want)
	for i, st := range out {
		hs := extra[st.GetNetwork().GetMeta().GetId()]
		if len(hs) == 0 {
			continue
		}
		slices.SortFunc(hs, func(a, b Hint) int { return strings.Compare(a.TaskID, b.TaskID) })
		used := map[string]bool{}
		for _, ep := range st.GetEndpoints() {
			if p, err := parseAddr(ep.GetAddress()); err == nil {
				used["a"+p.Addr().String()] = true
			}
			if m, err := net.ParseMAC(ep.GetMac()); err == nil {
				used["m"+m.String()] = true
			}
		}
		eps := slices.Clone(st.GetEndpoints())
		for _, h := range hs {
			if used["a"+h.Address.Addr().String()] || used["m"+h.MAC.String()] {
				continue
			}
			used["a"+h.Address.Addr().String()], used["m"+h.MAC.String()] = true, true
			eps = append(eps, &shoalv1.Endpoint{TaskId: h.TaskID, Address: h.Address.String(), Mac: h.MAC.String(),
				NodeAddr: h.VTEP.String(), State: h.State})
		}
		out[i] = &shoalv1.NetworkState{Network: st.GetNetwork(), Vips: st.GetVips(), Endpoints: eps}
	}
	return out
}
