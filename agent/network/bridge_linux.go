package network

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ensureBridge creates the bridge with the gateway address, or adopts an
// existing one: a bridge that already has the gateway address (or no
// IPv4 address at all) is reused; a link of that name that is not a
// bridge, or a bridge with another IPv4 address, is refused rather than
// changed. It also refuses a subnet that overlaps an address of another
// link, which would make the tasks unreachable from the node. It returns
// the bridge's index and whether it was created by this call.
func ensureBridge(h *netlink.Handle, name string, subnet netip.Prefix, mtu int) (idx int, created bool, err error) {
	gw := netip.PrefixFrom(gatewayOf(subnet), subnet.Bits())
	link, err := h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		link, created, err = createBridge(h, name, mtu)
		if err != nil {
			return 0, false, err
		}
		if created {
			defer func() {
				if err != nil {
					h.LinkDel(link)
				}
			}()
		}
	}
	switch {
	case err != nil:
		return 0, false, fmt.Errorf("look up bridge %q: %w", name, err)
	case link.Type() != "bridge":
		return 0, false, fmt.Errorf("%w: link %q exists and is a %s, not a bridge", ErrFailedPrecondition, name, link.Type())
	}
	idx = link.Attrs().Index

	if err := checkOverlap(h, idx, subnet); err != nil {
		return 0, false, err
	}

	addrs, err := listAddrs(h, link)
	if err != nil {
		return 0, false, fmt.Errorf("list addresses of bridge %q: %w", name, err)
	}
	has := false
	for _, a := range addrs {
		p := ipNetToPrefix(a.IPNet)
		switch {
		case p == gw:
			has = true
		case p.Addr().Is4():
			return 0, false, fmt.Errorf("%w: bridge %q has address %s, want %s (remove the bridge or configure its subnet)", ErrFailedPrecondition, name, p, gw)
		}
	}
	if !has {
		if err := h.AddrAdd(link, &netlink.Addr{IPNet: prefixToIPNet(gw)}); err != nil && !errors.Is(err, unix.EEXIST) {
			return 0, false, fmt.Errorf("add %s to bridge %q: %w", gw, name, err)
		}
	}
	if !created {
		// Pin the MAC of an adopted bridge too (setting it marks it as
		// chosen), see createBridge.
		if err := h.LinkSetHardwareAddr(link, link.Attrs().HardwareAddr); err != nil {
			return 0, false, fmt.Errorf("pin MAC of bridge %q: %w", name, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return 0, false, fmt.Errorf("set bridge %q up: %w", name, err)
		}
	}
	return idx, created, nil
}

// createBridge adds a bridge with an explicit random MAC: a bridge whose
// MAC was never set takes the smallest MAC of its ports and changes it
// as tasks come and go, which leaves the gateway's old MAC in the tasks'
// ARP caches.
func createBridge(h *netlink.Handle, name string, mtu int) (link netlink.Link, created bool, err error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, false, err
	}
	mac[0] = mac[0]&^0x01 | 0x02 // unicast, locally administered
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MTU = mtu
	attrs.HardwareAddr = mac
	err = h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
	switch {
	case err == nil:
		created = true
	case errors.Is(err, unix.EEXIST):
		// Made meanwhile by someone else: adopt it like any other.
	default:
		return nil, false, fmt.Errorf("create bridge %q: %w", name, err)
	}
	link, err = h.LinkByName(name)
	if err != nil {
		return nil, false, fmt.Errorf("look up bridge %q: %w", name, err)
	}
	return link, created, nil
}

// checkOverlap refuses subnet if a link other than the bridge (index
// brIdx) has an IPv4 address within it or covering it.
func checkOverlap(h *netlink.Handle, brIdx int, subnet netip.Prefix) error {
	addrs, err := listAddrs(h, nil)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.LinkIndex == brIdx {
			continue
		}
		p := ipNetToPrefix(a.IPNet)
		if p.Addr().Is4() && p.Overlaps(subnet) {
			name := fmt.Sprint(a.LinkIndex)
			if l, err := h.LinkByIndex(a.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			return fmt.Errorf("%w: subnet %s overlaps address %s of link %q", ErrFailedPrecondition, subnet, p, name)
		}
	}
	return nil
}

// listAddrs lists IPv4 addresses (of link, or of every link when nil),
// retrying a dump that a concurrent change interrupted.
func listAddrs(h *netlink.Handle, link netlink.Link) ([]netlink.Addr, error) {
	for i := 0; ; i++ {
		addrs, err := h.AddrList(link, netlink.FAMILY_V4)
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < 10 {
			continue
		}
		return addrs, err
	}
}

func ipNetToPrefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
