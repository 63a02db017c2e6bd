package overlay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// remote is one desired remote endpoint on a vxlan device.
type remote struct {
	ip   netip.Addr
	mac  net.HardwareAddr
	vtep netip.Addr
}

// Reconcile makes the kernel match states, the full desired set of
// overlay networks this node takes part in (see the package doc). It
// carries on past a broken network and returns the errors joined.
func (m *Manager) Reconcile(ctx context.Context, states []*shoalv1.NetworkState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cfg.BridgeOnly {
		// No overlay kernel state here: overlay networks are refused
		// (ErrNoOverlay), so only the bridge networks have any.
		return m.reconcileBridges(states)
	}
	var errs []error
	want := map[uint32]bool{}
	subnets := map[uint32]netip.Prefix{}
	for _, st := range states {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := st.GetNetwork()
		if d := n.GetSpec().GetDriver(); d != "" && d != "overlay" {
			continue
		}
		want[n.GetVni()] = true
		if p, err := netSubnet(n); err == nil {
			subnets[n.GetVni()] = p
		}
		if err := m.reconcileNetwork(st); err != nil {
			errs = append(errs, fmt.Errorf("network %s (vni %d): %w", n.GetMeta().GetId(), n.GetVni(), err))
		}
	}
	kept, err := m.removeUnlisted(want)
	if err != nil {
		errs = append(errs, err)
	}
	for vni := range kept {
		if p, ok := m.subnets[vni]; ok {
			subnets[vni] = p
		}
	}
	m.subnets = subnets
	// VXLAN is accepted from the VTEPs of the endpoints just programmed
	// (the hints' entries are gone with this reconcile, and so are their
	// VTEPs), in the same transaction as the isolation rules.
	m.vteps = stateVTEPs(states, m.cfg.VTEP)
	m.hintVTEPs = nil
	if err := m.syncNFT(false); err != nil {
		errs = append(errs, err)
	}
	if err := m.reconcileBridges(states); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stateVTEPs returns the remote VTEPs of the endpoints of the overlay
// networks in states (the node's own excluded; unparsable ones skipped).
func stateVTEPs(states []*shoalv1.NetworkState, self netip.Addr) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, st := range states {
		if d := st.GetNetwork().GetSpec().GetDriver(); d != "" && d != "overlay" {
			continue
		}
		for _, ep := range st.GetEndpoints() {
			if a, err := netip.ParseAddr(ep.GetNodeAddr()); err == nil && a.Is4() && a != self {
				out[a] = true
			}
		}
	}
	return out
}

func (m *Manager) reconcileNetwork(st *shoalv1.NetworkState) error {
	vx, err := m.ensureNetwork(st.GetNetwork())
	if err != nil {
		return err
	}
	desired := map[netip.Addr]remote{}
	var errs []error
	for _, ep := range st.GetEndpoints() {
		vtep, err := netip.ParseAddr(ep.GetNodeAddr())
		if err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s: node address %q: %w", ep.GetTaskId(), ep.GetNodeAddr(), err))
			continue
		}
		if vtep == m.cfg.VTEP {
			continue // local: the bridge knows it through its veth
		}
		p, err := parseAddr(ep.GetAddress())
		if err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s: address %q: %w", ep.GetTaskId(), ep.GetAddress(), err))
			continue
		}
		mac, err := net.ParseMAC(ep.GetMac())
		if err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s: MAC %q: %w", ep.GetTaskId(), ep.GetMac(), err))
			continue
		}
		desired[p.Addr()] = remote{ip: p.Addr(), mac: mac, vtep: vtep}
	}
	if err := m.syncEntries(vx, desired); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// syncEntries makes the neighbour and FDB entries of the vxlan device vx
// exactly desired, touching only what differs.
func (m *Manager) syncEntries(vx int, desired map[netip.Addr]remote) error {
	neighs, err := m.h.NeighList(vx, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list neighbours: %w", err)
	}
	fdbs, err := m.h.NeighList(vx, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("list fdb: %w", err)
	}
	wantMAC := map[string]netip.Addr{} // MAC -> VTEP
	for _, r := range desired {
		wantMAC[r.mac.String()] = r.vtep
	}
	var errs []error
	haveNeigh := map[netip.Addr]bool{}
	for _, n := range neighs {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		r, want := desired[ip]
		if want && n.State&netlink.NUD_PERMANENT != 0 && bytes.Equal(n.HardwareAddr, r.mac) {
			haveNeigh[ip] = true
			continue
		}
		if !want {
			if err := m.h.NeighDel(&n); err != nil && !isNotExist(err) {
				errs = append(errs, fmt.Errorf("delete neighbour %s: %w", ip, err))
			}
			m.log.Debug("neighbour entry deleted", "vxlan", vx, "ip", ip)
		}
	}
	haveFDB := map[string]bool{}
	for _, f := range fdbs {
		if f.Flags&netlink.NTF_SELF == 0 || f.Flags&netlink.NTF_MASTER != 0 || len(f.HardwareAddr) != 6 {
			continue
		}
		mac := f.HardwareAddr.String()
		vtep, want := wantMAC[mac]
		ip, _ := netip.AddrFromSlice(f.IP)
		if want && ip.Unmap() == vtep && f.State&netlink.NUD_PERMANENT != 0 {
			haveFDB[mac] = true
			continue
		}
		// Wrong VTEP (an address reused on another host) or not desired:
		// delete this exact entry (a vxlan MAC can have several remotes).
		if err := m.h.NeighDel(&f); err != nil && !isNotExist(err) {
			errs = append(errs, fmt.Errorf("delete fdb %s -> %s: %w", mac, ip, err))
		}
	}
	for _, r := range desired {
		if !haveFDB[r.mac.String()] {
			f := &netlink.Neigh{LinkIndex: vx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
				Flags: netlink.NTF_SELF, IP: r.vtep.AsSlice(), HardwareAddr: r.mac}
			if err := m.h.NeighAppend(f); err != nil && !errors.Is(err, unix.EEXIST) {
				errs = append(errs, fmt.Errorf("add fdb %s -> %s: %w", r.mac, r.vtep, err))
			}
		}
		if !haveNeigh[r.ip] {
			n := &netlink.Neigh{LinkIndex: vx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
				IP: r.ip.AsSlice(), HardwareAddr: r.mac}
			if err := m.h.NeighSet(n); err != nil {
				errs = append(errs, fmt.Errorf("set neighbour %s -> %s: %w", r.ip, r.mac, err))
			}
			m.log.Debug("neighbour entry set", "vxlan", vx, "ip", r.ip)
		}
	}
	return errors.Join(errs...)
}

// removeUnlisted deletes the devices of networks not in want, unless a
// local task is still attached; it returns the VNIs kept for that reason.
func (m *Manager) removeUnlisted(want map[uint32]bool) (map[uint32]bool, error) {
	links, err := m.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	kept := map[uint32]bool{}
	var errs []error
	for _, l := range links {
		var vni uint32
		if _, err := fmt.Sscanf(l.Attrs().Name, "shb-%d", &vni); err != nil || l.Type() != "bridge" || BridgeName(vni) != l.Attrs().Name || want[vni] {
			continue
		}
		busy := false
		for _, o := range links {
			if o.Attrs().MasterIndex == l.Attrs().Index && strings.HasPrefix(o.Attrs().Name, hostVethPrefix) {
				busy = true
			}
		}
		if busy {
			// The network is gone from the desired state but a local
			// task still uses it: keep its devices, drop every remote
			// entry (nothing says where its peers are any more).
			kept[vni] = true
			if vx, err := m.h.LinkByName(VXLANName(vni)); err == nil {
				if err := m.syncEntries(vx.Attrs().Index, nil); err != nil {
					errs = append(errs, err)
				}
			}
			continue
		}
		if vx, err := m.h.LinkByName(VXLANName(vni)); err == nil {
			if err := m.h.LinkDel(vx); err != nil && !isNotExist(err) {
				errs = append(errs, err)
			}
		}
		if err := m.h.LinkDel(l); err != nil && !isNotExist(err) {
			errs = append(errs, err)
		}
	}
	return kept, errors.Join(errs...)
}
