package overlay

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// HintResult says what ApplyHint did.
type HintResult int

const (
	HintIgnored    HintResult = iota // not our network, local, stale or already in the state
	HintProgrammed                   // FDB + neighbour entries written for an endpoint the state lacks
	HintWithdrawn                    // entries of an endpoint the state lacks deleted
	HintMarked                       // the endpoint's observed state changed (names and VIPs follow)
)

func (r HintResult) String() string {
	return [...]string{"ignored", "programmed", "withdrawn", "marked"}[r]
}

// ApplyHint merges a hint received through gossip into the node (see the
// merge rule in the package doc). After HintMarked (and, harmlessly,
// after the others) the caller passes States() to Discovery.Update. The
// hints held are dropped by the next Reconcile: the state decides.
func (n *Node) ApplyHint(h Hint) (HintResult, error) {
	if h.VTEP == n.m.cfg.VTEP {
		return HintIgnored, nil // our own task: the bridge knows it
	}
	n.lock()
	defer n.unlock()
	st := n.states[h.NetworkID]
	key := hintKey{h.NetworkID, h.TaskID}
	if old, ok := n.hints[key]; ok && old.State == h.State && old.VTEP == h.VTEP && old.Address == h.Address {
		return HintIgnored, nil // a repeat (hints arrive directly and by gossip)
	}
	switch mergeHint(st, h) {
	case hintMark:
		if _, ok := n.hints[key]; !ok && len(n.hints) >= MaxHeldHints {
			return HintIgnored, nil
		}
		n.hints[key] = h
		n.hintAt[key] = time.Now()
		return HintMarked, nil
	case hintProgram:
		if _, ok := n.hints[key]; !ok && len(n.hints) >= MaxHeldHints {
			return HintIgnored, nil
		}
		if hintClash(n.hints, h) {
			return HintIgnored, nil
		}
		if err := n.m.hintEntries(st.GetNetwork().GetVni(), h, true); err != nil {
			return HintIgnored, err
		}
		n.hints[key] = h
		n.hintAt[key] = time.Now()
		return HintProgrammed, nil
	case hintWithdraw:
		if old, ok := n.hints[key]; ok && (old.VTEP != h.VTEP || old.Address.Addr() != h.Address.Addr() || !sameMAC(old.MAC, h.MAC)) {
			return HintIgnored, nil // not the endpoint the held hint programmed
		}
		delete(n.hints, key)
		delete(n.hintAt, key)
		if err := n.m.hintEntries(st.GetNetwork().GetVni(), h, false); err != nil {
			return HintIgnored, err
		}
		return HintWithdrawn, nil
	}
	return HintIgnored, nil
}

// HintTTL is how long a held hint counts without the managers' state
// confirming it: a Networks message drops all held hints, but in a quiet
// cluster none may come, and a hint (from a peer that lost a race, or a
// hostile key holder) must not hide a live endpoint from names and VIPs
// for ever. The managers deliver a real change well within it.
const HintTTL = 10 * time.Second

// ExpireHints drops the hints applied before now-HintTTL, deleting the
// FDB/neighbour entries of those that programmed an endpoint the state
// still lacks, and returns how many it dropped (and the deletions that
// failed); the caller then passes
// States() to Discovery.Update.
func (n *Node) ExpireHints(now time.Time) (int, error) {
	n.lock()
	defer n.unlock()
	dropped := 0
	var errs []error
	for k, at := range n.hintAt {
		if now.Sub(at) < HintTTL {
			continue
		}
		h := n.hints[k]
		delete(n.hints, k)
		delete(n.hintAt, k)
		dropped++
		if st := n.states[k.network]; st != nil && mergeHint(st, h) == hintProgram {
			if err := n.m.hintEntries(st.GetNetwork().GetVni(), h, false); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return dropped, errors.Join(errs...)
}

// HeldHints is the number of hints held since the last Reconcile.
func (n *Node) HeldHints() int {
	n.lock()
	defer n.unlock()
	return len(n.hints)
}

// hintEntries adds (up) or deletes (down) the FDB and neighbour entries
// of h on the vxlan device of vni. It never creates a network: a node
// whose devices are not there yet waits for the state. Deletion touches
// only entries that match the hint exactly (same MAC, same VTEP).
func (m *Manager) hintEntries(vni uint32, h Hint, up bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, err := m.h.LinkByName(VXLANName(vni))
	if err != nil {
		if isNotExist(err) {
			return nil
		}
		return err
	}
	vx := l.Attrs().Index
	ip := h.Address.Addr()
	if up {
		if err := m.allowHintVTEP(h.VTEP); err != nil {
			return fmt.Errorf("hint: allow VXLAN from %s: %w", h.VTEP, err)
		}
		f := &netlink.Neigh{LinkIndex: vx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
			Flags: netlink.NTF_SELF, IP: h.VTEP.AsSlice(), HardwareAddr: h.MAC}
		if err := m.h.NeighAppend(f); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("hint: add fdb %s -> %s: %w", h.MAC, h.VTEP, err)
		}
		nb := &netlink.Neigh{LinkIndex: vx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: ip.AsSlice(), HardwareAddr: h.MAC}
		if err := m.h.NeighSet(nb); err != nil {
			return fmt.Errorf("hint: set neighbour %s -> %s: %w", ip, h.MAC, err)
		}
		return nil
	}
	var errs []error
	neighs, err := m.h.NeighList(vx, unix.AF_INET)
	if err != nil {
		return err
	}
	for _, nb := range neighs {
		if nb.IP.Equal(ip.AsSlice()) && sameMAC(nb.HardwareAddr, h.MAC) {
			if err := m.h.NeighDel(&nb); err != nil && !isNotExist(err) {
				errs = append(errs, err)
			}
		}
	}
	fdbs, err := m.h.NeighList(vx, unix.AF_BRIDGE)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, f := range fdbs {
		if f.Flags&netlink.NTF_SELF != 0 && f.Flags&netlink.NTF_MASTER == 0 && sameMAC(f.HardwareAddr, h.MAC) && f.IP.Equal(h.VTEP.AsSlice()) {
			if err := m.h.NeighDel(&f); err != nil && !isNotExist(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func sameMAC(a, b net.HardwareAddr) bool { return a.String() == b.String() }

// statesLocked returns the held states with the marks of the held hints.
func (n *Node) statesLocked() []*shoalv1.NetworkState {
	all := make([]*shoalv1.NetworkState, 0, len(n.states))
	for _, st := range n.states {
		all = append(all, st)
	}
	return markHints(all, n.hints)
}
