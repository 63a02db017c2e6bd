package overlay

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/specrules"
)

// Attach joins the task namespace at taskNetNSPath to network n with the
// attachment's address and MAC (see the package doc). Idempotent: an
// intact attachment is kept, a broken one is rebuilt.
func (m *Manager) Attach(ctx context.Context, taskNetNSPath string, a *shoalv1.NetworkAttachment, n *shoalv1.Network) (AttachResult, error) {
	if err := ctx.Err(); err != nil {
		return AttachResult{}, err
	}
	addr, err := parseAddr(a.GetAddress())
	if err != nil {
		return AttachResult{}, fmt.Errorf("attachment address %q: %w", a.GetAddress(), err)
	}
	subnet, err := netSubnet(n)
	if err != nil {
		return AttachResult{}, err
	}
	if addr.Bits() == addr.Addr().BitLen() {
		addr = netip.PrefixFrom(addr.Addr(), subnet.Bits())
	}
	mac, err := net.ParseMAC(a.GetMac())
	if err != nil {
		return AttachResult{}, fmt.Errorf("attachment MAC %q: %w", a.GetMac(), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if n.GetSpec().GetDriver() == specrules.DriverBridge {
		return m.attachBridge(taskNetNSPath, n, addr, mac)
	}
	if _, err := m.ensureNetwork(n); err != nil {
		return AttachResult{}, err
	}
	br, err := m.h.LinkByName(BridgeName(n.GetVni()))
	if err != nil {
		return AttachResult{}, err
	}
	if _, ok := m.subnets[n.GetVni()]; !ok {
		m.subnets[n.GetVni()] = subnet
		if err := m.syncNFT(false); err != nil {
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
	return m.configureTask(th, tns, taskNetNSPath, n, addr, mac, m.MTU(n), br)
}

// configureTask plugs the task's veth for n into br and configures its
// side: address, up, and no default route on an internal network.
func (m *Manager) configureTask(th *netlink.Handle, tns netns.NsHandle, taskNetNSPath string, n *shoalv1.Network, addr netip.Prefix, mac net.HardwareAddr, mtu int, br netlink.Link) (AttachResult, error) {
	hostName := HostVethName(taskNetNSPath, n.GetMeta().GetId())
	ifName, err := m.ensureVeth(th, tns, hostName, mac, mtu, br)
	if err != nil {
		return AttachResult{}, err
	}
	tl, err := th.LinkByName(ifName)
	if err != nil {
		return AttachResult{}, err
	}
	if err := th.AddrReplace(tl, &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(),
		Mask: net.CIDRMask(addr.Bits(), 32)}}); err != nil {
		return AttachResult{}, fmt.Errorf("address %s on %s: %w", addr, ifName, err)
	}
	if tl.Attrs().Flags&net.FlagUp == 0 {
		if err := th.LinkSetUp(tl); err != nil {
			return AttachResult{}, err
		}
	}
	res := AttachResult{Interface: ifName}
	if n.GetSpec().GetInternal() {
		res.NoEgress = true
		routes, err := th.RouteList(nil, unix.AF_INET)
		if err != nil {
			return res, err
		}
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask) {
				if err := th.RouteDel(&r); err != nil && !isNotExist(err) && err != unix.ESRCH {
					return res, fmt.Errorf("delete default route: %w", err)
				}
			}
		}
	}
	return res, nil
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}

// ensureVeth keeps an intact pair (host `hostName` on br, peer in the
// task namespace with the MAC and MTU) or rebuilds it; it returns the
// task-side name.
func (m *Manager) ensureVeth(th *netlink.Handle, tns netns.NsHandle, hostName string, mac net.HardwareAddr, mtu int, br netlink.Link) (string, error) {
	hl, err := m.h.LinkByName(hostName)
	if err != nil && !isNotExist(err) {
		return "", err
	}
	if hl != nil && hl.Type() != "veth" {
		return "", fmt.Errorf("link %q exists and is a %s, not a veth", hostName, hl.Type())
	}
	links, err := th.LinkList()
	if err != nil {
		return "", err
	}
	if hl != nil {
		for _, l := range links {
			if l.Type() == "veth" && bytes.Equal(l.Attrs().HardwareAddr, mac) &&
				l.Attrs().ParentIndex == hl.Attrs().Index && hl.Attrs().ParentIndex == l.Attrs().Index {
				if l.Attrs().MTU != mtu {
					th.LinkSetMTU(l, mtu)
				}
				if hl.Attrs().MTU != mtu {
					m.h.LinkSetMTU(hl, mtu)
				}
				return l.Attrs().Name, m.plugHost(hl, br)
			}
		}
		if err := m.h.LinkDel(hl); err != nil && !isNotExist(err) {
			return "", fmt.Errorf("delete stale veth %s: %w", hostName, err)
		}
	}
	used := map[string]bool{}
	for _, l := range links {
		// A leftover of ours (same MAC) goes.
		if bytes.Equal(l.Attrs().HardwareAddr, mac) && l.Type() == "veth" {
			th.LinkDel(l)
			continue
		}
		used[l.Attrs().Name] = true
	}
	ifName := ""
	for i := 1; ; i++ {
		if c := fmt.Sprintf("eth%d", i); !used[c] {
			ifName = c
			break
		}
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = hostName, mtu
	v := &netlink.Veth{LinkAttrs: attrs, PeerName: ifName, PeerNamespace: netlink.NsFd(tns),
		PeerMTU: uint32(mtu), PeerHardwareAddr: mac}
	if err := m.h.LinkAdd(v); err != nil {
		return "", fmt.Errorf("create veth %s: %w", hostName, err)
	}
	hl, err = m.h.LinkByName(hostName)
	if err != nil {
		return "", err
	}
	return ifName, m.plugHost(hl, br)
}

func (m *Manager) plugHost(hl, br netlink.Link) error {
	if hl.Attrs().MasterIndex != br.Attrs().Index {
		if err := m.h.LinkSetMaster(hl, br); err != nil {
			return fmt.Errorf("enslave %s: %w", hl.Attrs().Name, err)
		}
	}
	if hl.Attrs().Flags&net.FlagUp == 0 {
		if err := m.h.LinkSetUp(hl); err != nil {
			return err
		}
	}
	return nil
}

// Detach removes the task's attachment to n (the veth pair). A missing
// one is fine.
func (m *Manager) Detach(ctx context.Context, taskNetNSPath string, a *shoalv1.NetworkAttachment, n *shoalv1.Network) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	hl, err := m.h.LinkByName(HostVethName(taskNetNSPath, n.GetMeta().GetId()))
	if err != nil {
		if isNotExist(err) {
			return nil
		}
		return err
	}
	if hl.Type() != "veth" {
		return nil
	}
	br := m.bridgeOf(hl)
	if err := m.h.LinkDel(hl); err != nil && !isNotExist(err) {
		return fmt.Errorf("delete veth %s: %w", hl.Attrs().Name, err)
	}
	return m.detachCleanup(br)
}
