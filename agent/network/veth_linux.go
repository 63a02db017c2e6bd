package network

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ensureVeth makes sure the host veth `name` exists, is paired with eth0
// in the task namespace, is a port of the bridge and is up. An intact
// pair in an existing namespace is kept; anything else of that name that
// is a veth is replaced. It returns the host veth's index and whether it
// created the pair.
func (m *Manager) ensureVeth(nsFD netns.NsHandle, nsH *netlink.Handle, name string, addr netip.Addr, nsExisted bool) (idx int, created bool, err error) {
	hl, err := lookupHostVeth(m.host, name)
	if err != nil {
		return 0, false, err
	}
	if hl != nil && nsExisted {
		el, err := nsH.LinkByName(taskIfName)
		if err == nil && el.Type() == "veth" &&
			el.Attrs().ParentIndex == hl.Attrs().Index && hl.Attrs().ParentIndex == el.Attrs().Index {
			return hl.Attrs().Index, false, m.attachHostVeth(hl)
		}
	}
	if hl != nil {
		// Stale: its peer is in a namespace that is gone or not ours.
		if err := m.host.LinkDel(hl); err != nil && !isNotFound(err) {
			return 0, false, fmt.Errorf("delete stale veth %q: %w", name, err)
		}
	}
	if nsExisted {
		if el, err := nsH.LinkByName(taskIfName); err == nil {
			if err := nsH.LinkDel(el); err != nil && !isNotFound(err) {
				return 0, false, fmt.Errorf("delete stale %s in task netns: %w", taskIfName, err)
			}
		}
	}

	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MTU = m.cfg.MTU
	veth := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         taskIfName,
		PeerNamespace:    netlink.NsFd(nsFD),
		PeerMTU:          uint32(m.cfg.MTU),
		PeerHardwareAddr: taskMAC(addr),
	}
	if err := m.host.LinkAdd(veth); err != nil {
		return 0, false, fmt.Errorf("create veth %q: %w", name, err)
	}
	hl, err = m.host.LinkByName(name)
	if err != nil {
		m.host.LinkDel(veth)
		return 0, false, fmt.Errorf("look up new veth %q: %w", name, err)
	}
	return hl.Attrs().Index, true, m.attachHostVeth(hl)
}

// lookupHostVeth returns the host link `name`, nil if there is none, or
// an error if the name is taken by something that is not a veth (which
// is not ours to delete).
func lookupHostVeth(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up veth %q: %w", name, err)
	}
	if l.Type() != "veth" {
		return nil, fmt.Errorf("%w: link %q exists and is a %s, not a veth", ErrFailedPrecondition, name, l.Type())
	}
	return l, nil
}

// attachHostVeth enslaves the host veth to the bridge and sets it up.
func (m *Manager) attachHostVeth(l netlink.Link) error {
	name := l.Attrs().Name
	if l.Attrs().MasterIndex != m.bridge {
		if err := m.host.LinkSetMasterByIndex(l, m.bridge); err != nil {
			return fmt.Errorf("add veth %q to bridge: %w", name, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := m.host.LinkSetUp(l); err != nil {
			return fmt.Errorf("set veth %q up: %w", name, err)
		}
	}
	return nil
}

// loopbackIndex is lo's ifindex in every network namespace.
const loopbackIndex = 1

// configureTaskNS brings lo up and gives eth0 the address and the default
// route. Every call is a replace, so it repairs as well as sets up.
func (m *Manager) configureTaskNS(h *netlink.Handle, addr netip.Addr) error {
	lo := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: loopbackIndex, Name: "lo"}}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up in task netns: %w", err)
	}
	eth, err := h.LinkByName(taskIfName)
	if err != nil {
		return fmt.Errorf("look up %s in task netns: %w", taskIfName, err)
	}
	p := netip.PrefixFrom(addr, m.cfg.Subnet.Bits())
	if err := h.AddrReplace(eth, &netlink.Addr{IPNet: prefixToIPNet(p)}); err != nil {
		return fmt.Errorf("add %s to %s: %w", p, taskIfName, err)
	}
	if eth.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(eth); err != nil {
			return fmt.Errorf("set %s up: %w", taskIfName, err)
		}
	}
	route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: m.gateway.AsSlice()}
	if err := h.RouteReplace(route); err != nil {
		return fmt.Errorf("add default route via %s: %w", m.gateway, err)
	}
	return nil
}

// deleteHostVeth deletes the veth `name` in the host namespace (and with
// it its peer); a missing one is fine, a non-veth is left alone.
func deleteHostVeth(h *netlink.Handle, name string) error {
	l, err := lookupHostVeth(h, name)
	if err != nil || l == nil {
		return err
	}
	if err := h.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete veth %q: %w", name, err)
	}
	return nil
}

// waitPortReady returns once the host veth (index idx) and the bridge
// are operationally up. Until the kernel's linkwatch has processed the
// carrier change that bringing eth0 up caused, the bridge port is still
// disabled and the veth has no qdisc; and a bridge that just got its
// first port has no carrier and no qdisc either. Packets to the task
// (the host's first ARP request) are dropped meanwhile and only retried
// a second later. Linkwatch runs from a workqueue, at most once a second
// for devices like the bridge, so Setup would otherwise race it:
// measured here, about one connect in three right after Setup took 1 s.
//
// RTM_GETLINK synchronises the device's pending linkwatch work on
// current kernels (rtnl_getlink calls linkwatch_sync_dev), so normally
// the first look-ups already say up: the veth first, because enabling
// its port is what gives the bridge its carrier. On a kernel without
// that, the state is re-read with a short back-off; linkwatch runs
// within a second, so this ends quickly, and if it does not (or ctx
// ends) the attachment still works: only its first packets are late.
func (m *Manager) waitPortReady(ctx context.Context, idx int) error {
	delay := time.Millisecond
	deadline := time.Now().Add(2 * time.Second)
	for _, i := range []int{idx, m.bridge} {
		for {
			l, err := m.host.LinkByIndex(i)
			if err != nil {
				return fmt.Errorf("look up link %d: %w", i, err)
			}
			// Unknown counts as up, as for the kernel (netif_oper_up): a
			// device whose carrier never changed stays "unknown".
			if st := l.Attrs().OperState; st == netlink.OperUp || st == netlink.OperUnknown {
				break
			}
			if time.Now().After(deadline) {
				m.log.Warn("link not operationally up yet; a task's first packets may be delayed",
					"link", l.Attrs().Name, "operstate", l.Attrs().OperState.String())
				return nil
			}
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			delay = min(2*delay, 50*time.Millisecond)
		}
	}
	return nil
}

// vethReaper deletes host veths for Teardown, in batches. Deleting a
// network device waits for RCU grace periods (about 18 ms per veth
// here), and deletions are serialised by the kernel's RTNL lock, so 100
// Teardowns one by one take seconds. Deletions that queue up while one
// is running are instead put into one netdev group and deleted with a
// single RTM_DELLINK for that group: the kernel unregisters them in one
// batch, sharing the grace periods (80 veths in about 60 ms, measured).
type vethReaper struct {
	h     *netlink.Handle
	sock  *nl.NetlinkSocket // NETLINK_ROUTE in the host namespace; used only by run
	group uint32            // netdev group of the doomed, random per Manager
	reqs  chan reapReq
	quit  chan struct{}
	done  chan struct{}
	// stopOnce guards closing quit.
	stopOnce sync.Once
}

type reapReq struct {
	name  string
	reply chan error // buffered (1)
}

// newVethReaper must be called on a thread in the host namespace (the
// group-delete socket is opened in the calling thread's namespace).
func newVethReaper(h *netlink.Handle, group uint32) (*vethReaper, error) {
	sock, err := nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	r := &vethReaper{h: h, sock: sock, group: group,
		reqs: make(chan reapReq), quit: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r, nil
}

// delete deletes the host veth `name` (and so its peer); a missing one
// is fine, a link of that name that is not a veth is left alone and is
// an error.
func (r *vethReaper) delete(ctx context.Context, name string) error {
	q := reapReq{name: name, reply: make(chan error, 1)}
	select {
	case r.reqs <- q:
	case <-r.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-q.reply
}

func (r *vethReaper) run() {
	defer close(r.done)
	for {
		var batch []reapReq
		select {
		case q := <-r.reqs:
			batch = append(batch, q)
		case <-r.quit:
			return
		}
	drain:
		for {
			select {
			case q := <-r.reqs:
				batch = append(batch, q)
			default:
				break drain
			}
		}
		r.reap(batch)
	}
}

func (r *vethReaper) reap(batch []reapReq) {
	errs := make([]error, len(batch))
	if len(batch) == 1 {
		errs[0] = deleteHostVeth(r.h, batch[0].name)
	} else {
		var grouped []int
		for i, q := range batch {
			l, err := lookupHostVeth(r.h, q.name)
			if err != nil || l == nil {
				errs[i] = err
				continue
			}
			if err := r.h.LinkSetGroup(l, int(r.group)); err != nil {
				errs[i] = deleteHostVeth(r.h, q.name)
				continue
			}
			grouped = append(grouped, i)
		}
		if len(grouped) > 0 {
			if err := r.deleteGroup(); err != nil && !errors.Is(err, unix.ENODEV) {
				// Whatever went wrong, one by one still works.
				for _, i := range grouped {
					errs[i] = deleteHostVeth(r.h, batch[i].name)
				}
			}
		}
	}
	for i, q := range batch {
		q.reply <- errs[i]
	}
}

// deleteGroup deletes every link in r.group with one RTM_DELLINK
// (netlink's Handle has no call for it).
func (r *vethReaper) deleteGroup() error {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: r.sock}}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, r.group)
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, b))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

func (r *vethReaper) stop() {
	r.stopOnce.Do(func() { close(r.quit) })
	<-r.done
	r.sock.Close()
}
