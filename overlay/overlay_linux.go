package overlay

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/shoal-dev/shoal/errdefs"
	"github.com/shoal-dev/shoal/netnsrun"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// VXLANPort is the IANA VXLAN UDP port.
const VXLANPort = 4789

// vxlanOverhead is what VXLAN over IPv4 adds to a frame.
const vxlanOverhead = 50

// Config says where a Manager works.
type Config struct {
	// NetNS is the node's network namespace; netns.None() (-1) or 0
	// means the calling process's current namespace at New.
	NetNS netns.NsHandle
	// VTEP is the node's underlay address (local end of the tunnels).
	// Unused when BridgeOnly.
	VTEP netip.Addr
	// Uplink is the underlay interface (MTU source, masquerade out).
	// Optional when BridgeOnly: without one, bridge networks get MTU
	// 1500 and route out nowhere (their tasks keep their node-local
	// default route).
	Uplink string
	// BridgeOnly runs the node-local data plane only, for a node whose
	// underlay cannot carry VXLAN (a loopback advertise address, as in
	// `shoal dev`): bridge networks work as everywhere, an overlay
	// network is refused (ErrNoOverlay) and has no kernel state, and the
	// overlay's table (TableName: VXLAN filter, isolation, masquerade)
	// is not written.
	BridgeOnly bool
	// LocalSubnet is the node-local task subnet to masquerade on the
	// uplink; invalid (zero) means no masquerade rule.
	LocalSubnet netip.Prefix
	// EnableForwarding sets net.ipv4.ip_forward=1 in the node namespace
	// (needed for egress).
	EnableForwarding bool
	Logger           *slog.Logger
}

// Manager programs the overlay networks of one node. Safe for
// concurrent use.
type Manager struct {
	cfg    Config
	ns     netns.NsHandle // owned duplicate
	h      *netlink.Handle
	log    *slog.Logger
	uplink int
	upMTU  int

	mu sync.Mutex
	// subnets of the networks last reconciled or attached, by VNI, for
	// the isolation rules.
	subnets map[uint32]netip.Prefix
	nftSig  string
	// bridges: the bridge networks with a local task, by network id, for
	// the rules of table shoal-bridge (bridge_linux.go).
	bridges   map[string]bridgeNet
	bridgeSig string
	// vteps: the remote VTEPs of the endpoints last reconciled;
	// hintVTEPs: those of hints programmed since. VXLAN is accepted from
	// these only (nft_linux.go).
	vteps, hintVTEPs map[netip.Addr]bool
}

// AttachResult describes what Attach did in the task namespace.
type AttachResult struct {
	// Interface is the task-side interface name (eth1, eth2, ...).
	Interface string
	// NoEgress: the network is internal; the task's default routes were
	// deleted and the agent must not add one.
	NoEgress bool
}

// ErrNoOverlay is what a BridgeOnly Manager (and a Node around it)
// answers for an overlay network: the node cannot take part in one. It is
// a failed precondition (errdefs), so the agent rejects the task rather
// than retrying it here.
var ErrNoOverlay = errdefs.FailedPreconditionf(
	"this node runs no overlay networks (its advertise address must be a non-loopback IPv4 address)")

// defaultMTU is the MTU of a BridgeOnly Manager without an uplink.
const defaultMTU = 1500

// New opens handles in the node namespace, checks the uplink and
// installs the nftables rules.
func New(cfg Config) (*Manager, error) {
	if !cfg.BridgeOnly && !cfg.VTEP.Is4() {
		return nil, fmt.Errorf("overlay: VTEP %v is not an IPv4 address", cfg.VTEP)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var ns netns.NsHandle
	var err error
	if cfg.NetNS == 0 || cfg.NetNS == netns.None() {
		ns, err = netns.Get()
	} else {
		var fd int
		fd, err = unix.Dup(int(cfg.NetNS))
		ns = netns.NsHandle(fd)
	}
	if err != nil {
		return nil, fmt.Errorf("overlay: node namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("overlay: netlink handle: %w", err)
	}
	m := &Manager{cfg: cfg, ns: ns, h: h, log: cfg.Logger, subnets: map[uint32]netip.Prefix{},
		bridges: map[string]bridgeNet{}, bridgeSig: bridgeSigUnknown}
	m.upMTU = defaultMTU
	if !cfg.BridgeOnly || cfg.Uplink != "" {
		up, err := h.LinkByName(cfg.Uplink)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("overlay: uplink %q: %w", cfg.Uplink, err)
		}
		m.uplink, m.upMTU = up.Attrs().Index, up.Attrs().MTU
	}
	if cfg.BridgeOnly {
		if cfg.EnableForwarding && cfg.Uplink != "" {
			if err := m.setForwarding(); err != nil {
				m.Close()
				return nil, err
			}
		}
		return m, nil
	}
	if cfg.EnableForwarding {
		if err := m.setForwarding(); err != nil {
			m.Close()
			return nil, err
		}
	}
	if err := m.syncNFT(true); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// BridgeOnly reports whether m runs bridge networks only (Config.BridgeOnly).
func (m *Manager) BridgeOnly() bool { return m.cfg.BridgeOnly }

// Close releases the handles; kernel state stays.
func (m *Manager) Close() error {
	if m.h != nil {
		m.h.Close()
	}
	return m.ns.Close()
}

func (m *Manager) setForwarding() error {
	// /proc/sys/net resolves against the opening thread's namespace.
	err := netnsrun.Run(m.ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0)
	})
	if err != nil {
		return fmt.Errorf("overlay: enable forwarding: %w", err)
	}
	return nil
}

// BridgeName and VXLANName are the device names of a network with vni.
func BridgeName(vni uint32) string { return fmt.Sprintf("shb-%d", vni) }

// VXLANName is the VXLAN device name of a network with vni.
func VXLANName(vni uint32) string { return fmt.Sprintf("shx-%d", vni) }

// hostVethPrefix starts the host-side veth names of overlay attachments.
const hostVethPrefix = "shv"

// HostVethName is the host-side veth name of a task's attachment.
func HostVethName(taskNetNSPath, networkID string) string {
	f := fnv.New64a()
	f.Write([]byte(taskNetNSPath))
	f.Write([]byte{0})
	f.Write([]byte(networkID))
	return fmt.Sprintf("%s%012x", hostVethPrefix, f.Sum64()&0xffffffffffff)
}

// MTU is the MTU the network's devices get on this node.
func (m *Manager) MTU(n *shoalv1.Network) int {
	if n.GetSpec().GetMtu() > 0 {
		return int(n.GetSpec().GetMtu())
	}
	return m.upMTU - vxlanOverhead
}

func netSubnet(n *shoalv1.Network) (netip.Prefix, error) {
	s := n.GetSubnet()
	if s == "" {
		s = n.GetSpec().GetSubnet()
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("network %s: subnet %q: %w", n.GetMeta().GetId(), s, err)
	}
	return p.Masked(), nil
}

// parseAddr accepts "a.b.c.d/len" or "a.b.c.d".
func parseAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func isNotExist(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV)
}

// ensureNetwork makes the bridge and the vxlan device of n exist, right
// and up; it returns the vxlan device's index.
func (m *Manager) ensureNetwork(n *shoalv1.Network) (vx int, err error) {
	if m.cfg.BridgeOnly {
		return 0, fmt.Errorf("network %s: %w", n.GetMeta().GetId(), ErrNoOverlay)
	}
	vni := n.GetVni()
	if vni == 0 || vni > 1<<24-1 {
		return 0, fmt.Errorf("network %s: invalid VNI %d", n.GetMeta().GetId(), vni)
	}
	mtu := m.MTU(n)
	br, err := m.h.LinkByName(BridgeName(vni))
	if err != nil && !isNotExist(err) {
		return 0, err
	}
	if br != nil && br.Type() != "bridge" {
		if err := m.h.LinkDel(br); err != nil {
			return 0, err
		}
		br = nil
	}
	if br == nil {
		a := netlink.NewLinkAttrs()
		a.Name, a.MTU = BridgeName(vni), mtu
		if err := m.h.LinkAdd(&netlink.Bridge{LinkAttrs: a}); err != nil && !errors.Is(err, unix.EEXIST) {
			return 0, fmt.Errorf("create bridge %s: %w", a.Name, err)
		}
		if br, err = m.h.LinkByName(a.Name); err != nil {
			return 0, err
		}
	}
	l, err := m.h.LinkByName(VXLANName(vni))
	if err != nil && !isNotExist(err) {
		return 0, err
	}
	if l != nil {
		v, ok := l.(*netlink.Vxlan)
		if !ok || v.VxlanId != int(vni) || v.Port != VXLANPort || v.Learning || !v.SrcAddr.Equal(m.cfg.VTEP.AsSlice()) {
			if err := m.h.LinkDel(l); err != nil && !isNotExist(err) {
				return 0, fmt.Errorf("delete wrong vxlan %s: %w", VXLANName(vni), err)
			}
			l = nil
		}
	}
	if l == nil {
		a := netlink.NewLinkAttrs()
		a.Name, a.MTU = VXLANName(vni), mtu
		v := &netlink.Vxlan{LinkAttrs: a, VxlanId: int(vni), VtepDevIndex: m.uplink,
			SrcAddr: m.cfg.VTEP.AsSlice(), Port: VXLANPort, Learning: false, Proxy: true}
		if err := m.h.LinkAdd(v); err != nil && !errors.Is(err, unix.EEXIST) {
			return 0, fmt.Errorf("create vxlan %s: %w", a.Name, err)
		}
		if l, err = m.h.LinkByName(a.Name); err != nil {
			return 0, err
		}
	}
	for _, d := range []netlink.Link{br, l} {
		if d.Attrs().MTU != mtu {
			if err := m.h.LinkSetMTU(d, mtu); err != nil {
				return 0, fmt.Errorf("set MTU of %s: %w", d.Attrs().Name, err)
			}
		}
	}
	if l.Attrs().MasterIndex != br.Attrs().Index {
		if err := m.h.LinkSetMaster(l, br); err != nil {
			return 0, fmt.Errorf("enslave %s: %w", l.Attrs().Name, err)
		}
		if err := m.h.LinkSetLearning(l, false); err != nil {
			return 0, fmt.Errorf("bridge learning off on %s: %w", l.Attrs().Name, err)
		}
	}
	for _, d := range []netlink.Link{br, l} {
		if d.Attrs().Flags&net.FlagUp == 0 {
			if err := m.h.LinkSetUp(d); err != nil {
				return 0, fmt.Errorf("set %s up: %w", d.Attrs().Name, err)
			}
		}
	}
	return l.Attrs().Index, nil
}
