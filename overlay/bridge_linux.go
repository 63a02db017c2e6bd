package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/specrules"
)

// Bridge networks (driver "bridge") are node-local: on each node running a
// task on one, a Linux bridge (specrules.BridgeName: spec.bridge_name or
// shbr-<id>) carries the network's gateway address, and each task is
// joined with a veth exactly as on an overlay network (same host-side
// name, eth1, eth2, … in the task). No VXLAN device, no remote entries:
// the managers deliver only the node's own endpoints of such a network.
//
// A bridge Shoal creates is marked with the alias bridgeAliasPrefix+id
// and deleted when its last task veth leaves (Detach, or the next
// Reconcile); a bridge the operator made beforehand is used as it is (the
// gateway address added when missing) and never deleted; the node's
// task bridge and its uplink are refused.

// bridgeAliasPrefix starts the IFLA_IFALIAS of a bridge Shoal created for
// a bridge network: only those are ever deleted.
const bridgeAliasPrefix = "shoal-bridge:"

// BridgeTableName is the nftables table (family ip) of bridge networks.
const BridgeTableName = "shoal-bridge"

// bridgeSigUnknown is Manager.bridgeSig before the first write: the table
// a previous agent left is rewritten (or deleted) by the first sync, never
// taken as current.
const bridgeSigUnknown = "unknown"

// bridgeNet is what the nftables rules need of one bridge network on the
// node.
type bridgeNet struct {
	bridge   string
	subnet   netip.Prefix
	internal bool
}

// bridgeMTU is the MTU of a bridge network's devices: the spec's, or the
// uplink's (no encapsulation).
func (m *Manager) bridgeMTU(n *shoalv1.Network) int {
	if v := n.GetSpec().GetMtu(); v > 0 {
		return int(v)
	}
	return m.upMTU
}

// ensureBridge makes the bridge of network n exist and be up with the
// gateway address; it returns the bridge. Its errors do not name the
// network (the callers do). Caller holds m.mu.
func (m *Manager) ensureBridge(n *shoalv1.Network, subnet netip.Prefix) (netlink.Link, error) {
	name := specrules.BridgeName(n)
	if err := specrules.IfaceName(name); err != nil {
		// A network stored before the Control API checked this: refuse
		// before the kernel makes a link under another name.
		return nil, fmt.Errorf("bridge name: %w", err)
	}
	gw, err := netip.ParseAddr(n.GetGateway())
	if err != nil || !subnet.Contains(gw) {
		return nil, fmt.Errorf("gateway %q is not an address of %s", n.GetGateway(), subnet)
	}
	if name == m.cfg.Uplink {
		// Its rules would cut every other network's egress, and the
		// gateway would sit on the node's LAN.
		return nil, fmt.Errorf("the bridge %q is the node's uplink", name)
	}
	br, err := m.h.LinkByName(name)
	if err != nil && !isNotExist(err) {
		return nil, err
	}
	if br != nil && br.Type() != "bridge" {
		return nil, fmt.Errorf("the link %q exists and is a %s, not a bridge", name, br.Type())
	}
	if err := m.subnetClear(subnet, br); err != nil {
		return nil, err
	}
	if br == nil {
		a := netlink.NewLinkAttrs()
		a.Name, a.MTU = name, m.bridgeMTU(n)
		if err := m.h.LinkAdd(&netlink.Bridge{LinkAttrs: a}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if br, err = m.h.LinkByName(name); err != nil {
			return nil, err
		}
		if err := m.h.LinkSetAlias(br, bridgeAliasPrefix+n.GetMeta().GetId()); err != nil {
			m.h.LinkDel(br)
			return nil, fmt.Errorf("mark bridge %s: %w", name, err)
		}
	}
	addrs, err := m.h.AddrList(br, unix.AF_INET)
	if err != nil {
		return nil, err
	}
	have := false
	for _, a := range addrs {
		p, _ := netip.AddrFromSlice(a.IP)
		p = p.Unmap()
		if m.cfg.VTEP.IsValid() && p == m.cfg.VTEP {
			return nil, fmt.Errorf("the bridge %q holds the node's underlay address %s (it is the node's uplink)", name, p)
		}
		if m.cfg.LocalSubnet.IsValid() && m.cfg.LocalSubnet.Contains(p) {
			return nil, fmt.Errorf("the bridge %q is the node's task bridge (it holds %s)", name, p)
		}
		ones, _ := a.Mask.Size()
		if p == gw && ones == subnet.Bits() {
			have = true
		}
	}
	if !have {
		if err := m.h.AddrReplace(br, &netlink.Addr{IPNet: &net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(subnet.Bits(), 32)}}); err != nil {
			return nil, fmt.Errorf("gateway %s on %s: %w", gw, name, err)
		}
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := m.h.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("set %s up: %w", name, err)
		}
	}
	return br, nil
}

// subnetClear refuses a subnet that holds an address of a link of the
// node other than the network's own bridge (br, nil when not made yet):
// the bridge's route would take that address's network away from the
// node (its LAN, when the node joined after the network was made; a
// VPN's, another container engine's). Caller holds m.mu.
func (m *Manager) subnetClear(subnet netip.Prefix, br netlink.Link) error {
	addrs, err := m.h.AddrList(nil, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list the node's addresses: %w", err)
	}
	for _, a := range addrs {
		if br != nil && a.LinkIndex == br.Attrs().Index {
			continue
		}
		p, ok := netip.AddrFromSlice(a.IP)
		if !ok || !subnet.Contains(p.Unmap()) {
			continue
		}
		link := fmt.Sprint("link ", a.LinkIndex)
		if l, err := m.h.LinkByIndex(a.LinkIndex); err == nil {
			link = fmt.Sprintf("%q", l.Attrs().Name)
		}
		return fmt.Errorf("the subnet %s holds the node's address %s of %s", subnet, p.Unmap(), link)
	}
	return nil
}

// attachBridge joins the task namespace to bridge network n (see the
// comment at the top of this file). Caller holds m.mu.
func (m *Manager) attachBridge(taskNetNSPath string, n *shoalv1.Network, addr netip.Prefix, mac net.HardwareAddr) (AttachResult, error) {
	subnet, err := netSubnet(n)
	if err != nil {
		return AttachResult{}, err
	}
	br, err := m.ensureBridge(n, subnet)
	if err != nil {
		return AttachResult{}, err
	}
	bn := bridgeNet{bridge: br.Attrs().Name, subnet: subnet, internal: n.GetSpec().GetInternal()}
	if cur, ok := m.bridges[n.GetMeta().GetId()]; !ok || cur != bn {
		m.bridges[n.GetMeta().GetId()] = bn
		if err := m.syncBridgeNFT(false); err != nil {
			return AttachResult{}, err
		}
	}
	tns, err := netns.GetFromPath(taskNetNSPath)
	if err != nil {
		return AttachResult{}, fmt.Errorf("open task netns %s: %w", taskNetNSPath, err)
	}
	defer tns.Close()
	th, err := netlink.NewHandleAt(tns)
	if err != nil {
		return AttachResult{}, err
	}
	defer th.Close()
	return m.configureTask(th, tns, taskNetNSPath, n, addr, mac, m.bridgeMTU(n), br)
}

// bridgeOf returns the bridge a host-side veth is plugged into when it is
// a bridge network's (ours or the operator's; nil for an overlay bridge
// or none).
func (m *Manager) bridgeOf(hl netlink.Link) netlink.Link {
	if hl.Attrs().MasterIndex == 0 {
		return nil
	}
	br, err := m.h.LinkByIndex(hl.Attrs().MasterIndex)
	if err != nil || br.Type() != "bridge" || strings.HasPrefix(br.Attrs().Name, "shb-") {
		return nil
	}
	return br
}

// removeIdleBridges deletes the bridges Shoal created for bridge networks
// that no task veth is plugged into any more, and forgets their rules.
// Caller holds m.mu.
func (m *Manager) removeIdleBridges() error {
	links, err := m.h.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		if l.Type() != "bridge" || !strings.HasPrefix(l.Attrs().Alias, bridgeAliasPrefix) {
			continue
		}
		busy := false
		for _, o := range links {
			if o.Attrs().MasterIndex == l.Attrs().Index && strings.HasPrefix(o.Attrs().Name, hostVethPrefix) {
				busy = true
				break
			}
		}
		if busy {
			continue
		}
		if err := m.h.LinkDel(l); err != nil && !isNotExist(err) {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", l.Attrs().Name, err))
			continue
		}
		m.log.Info("bridge network: last local task left, bridge deleted", "bridge", l.Attrs().Name)
	}
	// Rules only for bridges that still carry a task of ours (an
	// operator's bridge keeps its rules while a task veth is plugged in).
	live := map[string]bool{}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, hostVethPrefix) && l.Attrs().MasterIndex != 0 {
			if br, err := m.h.LinkByIndex(l.Attrs().MasterIndex); err == nil {
				live[br.Attrs().Name] = true
			}
		}
	}
	for id, bn := range m.bridges {
		if !live[bn.bridge] {
			delete(m.bridges, id)
		}
	}
	if err := m.syncBridgeNFT(false); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// reconcileBridges repairs the bridges of the held bridge networks that
// have a local task (gateway address, up, rules) and removes idle ones.
// Caller holds m.mu.
func (m *Manager) reconcileBridges(states []*shoalv1.NetworkState) error {
	var errs []error
	for _, st := range states {
		n := st.GetNetwork()
		if n.GetSpec().GetDriver() != specrules.DriverBridge {
			continue
		}
		l, err := m.h.LinkByName(specrules.BridgeName(n))
		if err != nil {
			continue // no local task made it yet
		}
		subnet, err := netSubnet(n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !m.hasTaskPort(l) {
			continue
		}
		if _, err := m.ensureBridge(n, subnet); err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", n.GetMeta().GetId(), err))
			continue
		}
		m.bridges[n.GetMeta().GetId()] = bridgeNet{bridge: l.Attrs().Name, subnet: subnet, internal: n.GetSpec().GetInternal()}
	}
	if err := m.removeIdleBridges(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (m *Manager) hasTaskPort(br netlink.Link) bool {
	links, err := m.h.LinkList()
	if err != nil {
		return false
	}
	for _, o := range links {
		if o.Attrs().MasterIndex == br.Attrs().Index && strings.HasPrefix(o.Attrs().Name, hostVethPrefix) {
			return true
		}
	}
	return false
}

// BridgeNetworks lists the bridge networks the node has rules for
// (bridge names, sorted): for checks and tests.
func (m *Manager) BridgeNetworks() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, bn := range m.bridges {
		out = append(out, bn.bridge)
	}
	slices.Sort(out)
	return out
}

// detachCleanup runs after a task veth was deleted from bridge br (nil:
// not a bridge network's): a bridge Shoal made goes when that veth was its
// last, and the network's rules with it. Caller holds m.mu.
func (m *Manager) detachCleanup(br netlink.Link) error {
	if br == nil {
		return nil
	}
	return m.removeIdleBridges()
}
