package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/shoal-dev/shoal/overlay/vip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// PortsTable is the nftables table (family ip) of published ports in a
// node's network namespace, owned by ProgramPorts.
const PortsTable = "shoal-ports"

// PortsSNATMark is the conntrack mark ProgramPorts sets on connections it
// forwards to a backend with SNAT (so postrouting masquerades only those).
const PortsSNATMark = 0x5301

// PublishedPort is one port a node answers on and the backends new
// connections to it are spread over.
type PublishedPort struct {
	Protocol   string // "tcp" (default) or "udp"
	Port       uint16 // published port on the node's local addresses
	TargetPort uint16 // port of the task
	Backends   []PortBackend
	// NoForwardFrom: sources this port's rule ignores (the other nodes'
	// underlay addresses on a port that forwards to other nodes, so a
	// connection already forwarded once is never forwarded again).
	NoForwardFrom []net.IP
	// Forward: the backends are other nodes. Such a port also ignores
	// connections whose source MAC is one of the NoForwardFrom nodes'
	// (PortsConfig.Peers): a node forwarding without SNAT keeps the
	// client's address, so only the L2 source tells it came from a node.
	Forward bool
}

// PortsConfig is everything ProgramPorts writes in a node namespace.
type PortsConfig struct {
	Ports []PublishedPort
	// Underlay is the node's connected underlay subnet and Uplink its
	// interface: the neighbours there (Peers) get a mark and a routing
	// table each (PortsPeerMark). Without them no neighbour is marked.
	Underlay netip.Prefix
	Uplink   string
	// Peers are the neighbours on the uplink with a known MAC (the
	// neighbour table: other nodes, clients, routers). A new connection
	// to a published port gets the mark of the neighbour it came from
	// (by source MAC), and its replies are routed back through that
	// neighbour: a node that forwarded a client's connection without
	// SNAT gets the replies, and undoes its DNAT so the client sees the
	// address it connected to.
	Peers []PortPeer
	// Hairpin is the node-local task subnet: a connection from it to a
	// published port is masqueraded (else a task reaching its own node's
	// port would get the reply straight from the backend on the same
	// bridge, from an address it did not connect to). Limit: with
	// br_netfilter active on the node-local bridge
	// (bridge-nf-call-iptables=1), a connection DNATed back to a task on
	// that bridge is bridged port to port instead of routed, and the
	// ports of overlay tasks are isolated (agent/network): a task reaching
	// its own node's port is then dropped when the backend is on the same
	// node (it works when the port forwards to another node).
	Hairpin netip.Prefix
}

// PeerRules is how many per-peer policy rules ProgramPorts keeps for c
// (the peers with a mark, one per MAC): what PeerRuleCount finds when the
// kernel is as written.
func (c PortsConfig) PeerRules() int {
	p, err := normPeers(c)
	if err != nil {
		return 0
	}
	return len(p)
}

// PortPeer is a neighbour on the node's underlay subnet.
type PortPeer struct {
	Addr net.IP
	MAC  net.HardwareAddr
}

// Conntrack constants (linux/netfilter/nf_conntrack_common.h) that
// x/sys/unix lacks.
const (
	ctDirOriginal = 0
	ctDirReply    = 1
	ipsDstNAT     = 1 << 5 // IPS_DST_NAT
)

// PortsRulePriority is the priority of the policy-routing rules (fwmark
// PortsPeerMark → table of the same number) ProgramPorts keeps.
const PortsRulePriority = 5300

// PortBackend is one address behind a published port: a task on this
// node, or another node (a Forward port). SNAT makes the node masquerade
// connections it sends there (the task sees the node's address, not the
// client's): needed when the replies would not come back through this
// node by themselves (a node beyond a router). Without SNAT the task sees
// the client's address and its replies must come back through this node:
// a task on this node (its default route is the node), or a node on the
// same underlay subnet (which routes them back by this node's MAC).
type PortBackend struct {
	Addr net.IP
	SNAT bool
}

// ProgramPorts makes the published-port rules of the namespace at
// netnsPath exactly cfg, in one nftables transaction (add, delete, add
// the table), then the policy routes of cfg.Peers: calling it again with
// the same cfg is harmless, and established connections keep their
// mapping (conntrack). Rules:
//
//	set nodes { ether_addr: the MACs of the peers in some NoForwardFrom }
//	map hops { ether_addr : mark } (every peer: PortsPeerMark)
//	chain mark (filter, prerouting, mangle):
//	  ct direction reply ct mark & 0xff000000 == 0x53000000 meta mark set ct mark
//	  meta l4proto P th dport PUB fib daddr type local ct direction original
//	    ct mark 0 iifname UPLINK ct mark set ether saddr map @hops   (per port)
//	chain prerouting (nat, prerouting, dstnat) and output (nat, output, dstnat):
//	  meta l4proto P th dport PUB ether saddr @nodes accept   (Forward ports, prerouting)
//	  meta l4proto P th dport PUB fib daddr type local [ip saddr != NODE ...]
//	    [ct mark set 0x5301]   (only if some backend has SNAT)
//	    dnat to numgen inc mod N map { 0: B0, ... } : TARGET
//	chain postrouting (nat, postrouting, srcnat):
//	  ct mark 0x5301 ip daddr B masquerade     (per SNAT backend)
//	  ip saddr HAIRPIN ct status dnat masquerade
//	ip rule fwmark M lookup M priority 5300; table M: default via PEER dev UPLINK onlink
//
// The replies of a marked connection carry its mark from prerouting on
// (before the routing decision), so they leave through the neighbour the
// connection came from; the reverse DNAT happens after routing, in
// postrouting, which does not change where they go. A port with no
// backend is left out (the node refuses the connection as it would for
// any closed port). Only IPv4.
func ProgramPorts(netnsPath string, cfg PortsConfig) error {
	norm, err := normPorts(cfg.Ports)
	if err != nil {
		return err
	}
	peers, err := normPeers(cfg)
	if err != nil {
		return err
	}
	if cfg.Hairpin.IsValid() && !cfg.Hairpin.Addr().Is4() {
		return fmt.Errorf("ports: hairpin subnet %v is not IPv4", cfg.Hairpin)
	}
	nodeAddrs := map[string]bool{}
	for _, p := range norm {
		for _, a := range p.NoForwardFrom {
			nodeAddrs[a.To4().String()] = true
		}
	}
	err = withPortsConn(netnsPath, func(c *nftables.Conn) error {
		t := &nftables.Table{Name: PortsTable, Family: nftables.TableFamilyIPv4}
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
		nodes := &nftables.Set{Table: t, Name: "nodes", KeyType: nftables.TypeEtherAddr}
		hops := &nftables.Set{Table: t, Name: "hops", IsMap: true, KeyType: nftables.TypeEtherAddr, DataType: nftables.TypeMark}
		var nodeElems, hopElems []nftables.SetElement
		for _, pe := range peers {
			hopElems = append(hopElems, nftables.SetElement{Key: pe.mac, Val: binaryutil.NativeEndian.PutUint32(pe.mark)})
		}
		nodeMACs := map[string]bool{}
		for _, pe := range cfg.Peers { // by MAC: any address of it a node's
			if a := pe.Addr.To4(); a != nil && nodeAddrs[a.String()] && len(pe.MAC) == 6 && !nodeMACs[string(pe.MAC)] {
				nodeMACs[string(pe.MAC)] = true
				nodeElems = append(nodeElems, nftables.SetElement{Key: append([]byte(nil), pe.MAC...)})
			}
		}
		if err := c.AddSet(nodes, nodeElems); err != nil {
			return fmt.Errorf("ports: set nodes: %w", err)
		}
		if err := c.AddSet(hops, hopElems); err != nil {
			return fmt.Errorf("ports: map hops: %w", err)
		}
		accept := nftables.ChainPolicyAccept
		mark := c.AddChain(&nftables.Chain{Name: "mark", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept})
		pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept})
		out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest, Policy: &accept})
		post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
		c.AddRule(&nftables.Rule{Table: t, Chain: mark, Exprs: []expr.Any{
			&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{ctDirReply}},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(PortsPeerMarkMask), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(PortsPeerMarkBase)},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
		}})
		snatted := map[string]bool{}
		for _, p := range norm {
			if len(hopElems) > 0 {
				e := portMatch(p)
				e = append(e,
					&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
					&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{ctDirOriginal}},
					&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
					&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(cfg.Uplink)},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
					&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: hops.Name, SetID: hops.ID},
					&expr.Counter{},
					&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true})
				c.AddRule(&nftables.Rule{Table: t, Chain: mark, Exprs: e})
			}
			if p.Forward && len(nodeElems) > 0 {
				e := portMatch(p)
				e = append(e,
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
					&expr.Lookup{SourceRegister: 1, SetName: nodes.Name, SetID: nodes.ID},
					&expr.Counter{},
					&expr.Verdict{Kind: expr.VerdictAccept})
				c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: e})
			}
			for _, ch := range []*nftables.Chain{pre, out} {
				e, err := portRule(c, t, p)
				if err != nil {
					return err
				}
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: e})
			}
			for _, b := range p.Backends {
				if !b.SNAT || snatted[b.Addr.String()] {
					continue
				}
				snatted[b.Addr.String()] = true
				c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
					&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(PortsSNATMark)},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b.Addr.To4()},
					&expr.Counter{},
					&expr.Masq{},
				}})
			}
		}
		if cfg.Hairpin.IsValid() && len(norm) > 0 {
			e := matchPrefix(12, cfg.Hairpin, expr.CmpOpEq)
			e = append(e,
				&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
				&expr.Counter{},
				&expr.Masq{})
			c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: e})
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("ports: program %s: %w", netnsPath, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return syncPeerRoutes(netnsPath, cfg.Uplink, peers)
}

// portMatch: meta l4proto P th dport PUB.
func portMatch(p PublishedPort) []expr.Any {
	proto := byte(unix.IPPROTO_TCP)
	if p.Protocol == "udp" {
		proto = unix.IPPROTO_UDP
	}
	port := make([]byte, 2)
	binary.BigEndian.PutUint16(port, p.Port)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port},
	}
}

type peerMark struct {
	addr net.IP
	mac  []byte
	mark uint32
}

// normPeers keeps the peers PortsPeerMark accepts on cfg.Underlay, one
// per MAC (a neighbour with several addresses, as a client with two, is
// one next hop: its lowest address, the same MAC either way), sorted by
// mark; a peer with a bad MAC is an error, as are peers without an
// uplink.
func normPeers(cfg PortsConfig) ([]peerMark, error) {
	if len(cfg.Peers) == 0 {
		return nil, nil
	}
	if cfg.Uplink == "" || !cfg.Underlay.IsValid() {
		return nil, fmt.Errorf("ports: %d peers without an uplink and its subnet", len(cfg.Peers))
	}
	var all []peerMark
	for _, p := range cfg.Peers {
		if len(p.MAC) != 6 {
			return nil, fmt.Errorf("ports: peer %v: MAC %q is not 6 bytes", p.Addr, p.MAC)
		}
		if m, ok := PortsPeerMark(cfg.Underlay, p.Addr); ok {
			all = append(all, peerMark{addr: p.Addr.To4(), mac: append([]byte(nil), p.MAC...), mark: m})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].mark < all[j].mark })
	var out []peerMark
	macs := map[string]bool{}
	for _, p := range all {
		if macs[string(p.mac)] || (len(out) > 0 && out[len(out)-1].mark == p.mark) {
			continue
		}
		macs[string(p.mac)] = true
		out = append(out, p)
	}
	return out, nil
}

func isPeerTable(table int) bool {
	return uint32(table)&PortsPeerMarkMask == PortsPeerMarkBase
}

// syncPeerRoutes makes the per-peer policy routes exactly peers: table M
// (M = the peer's mark) holds "default via PEER dev uplink onlink" and
// rule "fwmark M lookup M" at PortsRulePriority; tables and rules in the
// mark range that are not wanted (a peer gone) are removed.
func syncPeerRoutes(netnsPath, uplink string, peers []peerMark) error {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("ports: open netns %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("ports: netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()
	want := map[int]peerMark{}
	for _, p := range peers {
		want[int(p.mark)] = p
	}
	var link netlink.Link
	if len(peers) > 0 {
		if link, err = h.LinkByName(uplink); err != nil {
			return fmt.Errorf("ports: uplink %q: %w", uplink, err)
		}
	}
	var errs []error
	// Rules first (a rule without its table would send the marked
	// replies to the main table: harmless, the old path).
	rules, err := h.RuleList(netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("ports: list rules: %w", err)
	}
	haveRule := map[int]bool{}
	for _, r := range rules {
		if r.Priority != PortsRulePriority || !isPeerTable(r.Table) {
			continue
		}
		if _, ok := want[r.Table]; ok && r.Mark == uint32(r.Table) && !haveRule[r.Table] {
			haveRule[r.Table] = true
			continue
		}
		r := r
		if err := h.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("ports: delete rule table %#x: %w", r.Table, err))
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("ports: list routes: %w", err)
	}
	for _, r := range routes {
		if !isPeerTable(r.Table) {
			continue
		}
		if p, ok := want[r.Table]; ok && r.Dst == nil && r.Gw.Equal(p.addr) && r.LinkIndex == link.Attrs().Index {
			continue
		}
		r := r
		if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("ports: delete route table %#x: %w", r.Table, err))
		}
	}
	for _, p := range peers {
		rt := &netlink.Route{Table: int(p.mark), Gw: p.addr, LinkIndex: link.Attrs().Index,
			Flags: int(netlink.FLAG_ONLINK), Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}
		if err := h.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("ports: route via %v: %w", p.addr, err))
			continue
		}
		if haveRule[int(p.mark)] {
			continue
		}
		r := netlink.NewRule()
		r.Family = netlink.FAMILY_V4
		r.Priority = PortsRulePriority
		r.Mark = p.mark
		mask := uint32(0xffffffff)
		r.Mask = &mask
		r.Table = int(p.mark)
		if err := h.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("ports: rule for %v: %w", p.addr, err))
		}
	}
	return errors.Join(errs...)
}

func portRule(c *nftables.Conn, t *nftables.Table, p PublishedPort) ([]expr.Any, error) {
	target := make([]byte, 2)
	binary.BigEndian.PutUint16(target, p.TargetPort)
	e := append(portMatch(p),
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	)
	for _, a := range p.NoForwardFrom {
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: a.To4()})
	}
	for _, b := range p.Backends {
		if b.SNAT {
			e = append(e,
				&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(PortsSNATMark)},
				&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true})
			break
		}
	}
	e = append(e, &expr.Counter{})
	if len(p.Backends) == 1 {
		e = append(e, &expr.Immediate{Register: 1, Data: p.Backends[0].Addr.To4()})
	} else {
		m := &nftables.Set{Table: t, Anonymous: true, Constant: true, IsMap: true,
			KeyType: nftables.TypeInteger, DataType: nftables.TypeIPAddr}
		elems := make([]nftables.SetElement, len(p.Backends))
		for i, b := range p.Backends {
			elems[i] = nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(i)), Val: b.Addr.To4()}
		}
		if err := c.AddSet(m, elems); err != nil {
			return nil, fmt.Errorf("ports: %d/%s: %w", p.Port, p.Protocol, err)
		}
		e = append(e,
			&expr.Numgen{Register: 1, Modulus: uint32(len(p.Backends)), Type: unix.NFT_NG_INCREMENTAL},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID})
	}
	e = append(e,
		&expr.Immediate{Register: 2, Data: target},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2})
	return e, nil
}

// normPorts checks and sorts: protocol tcp|udp, ports non-zero, IPv4
// backends (sorted, deduplicated); ports without backends are dropped.
func normPorts(ports []PublishedPort) ([]PublishedPort, error) {
	var out []PublishedPort
	seen := map[string]bool{}
	for _, p := range ports {
		switch p.Protocol {
		case "":
			p.Protocol = "tcp"
		case "tcp", "udp":
		default:
			return nil, fmt.Errorf("ports: protocol %q (want tcp or udp)", p.Protocol)
		}
		if p.Port == 0 || p.TargetPort == 0 {
			return nil, fmt.Errorf("ports: %d->%d/%s: ports must be non-zero", p.Port, p.TargetPort, p.Protocol)
		}
		key := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if seen[key] {
			return nil, fmt.Errorf("ports: %s given twice", key)
		}
		seen[key] = true
		for _, a := range p.NoForwardFrom {
			if a.To4() == nil {
				return nil, fmt.Errorf("ports: %s: source %v is not IPv4", key, a)
			}
		}
		byAddr := map[string]PortBackend{}
		for _, b := range p.Backends {
			if b.Addr.To4() == nil {
				return nil, fmt.Errorf("ports: %s: backend %v is not IPv4", key, b.Addr)
			}
			byAddr[b.Addr.To4().String()] = PortBackend{Addr: b.Addr.To4(), SNAT: b.SNAT || byAddr[b.Addr.To4().String()].SNAT}
		}
		if len(byAddr) == 0 {
			continue
		}
		bs := make([]PortBackend, 0, len(byAddr))
		for _, b := range byAddr {
			bs = append(bs, b)
		}
		sort.Slice(bs, func(i, j int) bool { return bs[i].Addr.String() < bs[j].Addr.String() })
		p.Backends = bs
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Protocol != out[j].Protocol {
			return out[i].Protocol < out[j].Protocol
		}
		return out[i].Port < out[j].Port
	})
	return out, nil
}

// ClearPorts removes PortsTable and the per-peer policy routes from the
// namespace (no error if absent).
func ClearPorts(netnsPath string) error {
	err := withPortsConn(netnsPath, func(c *nftables.Conn) error {
		t := &nftables.Table{Name: PortsTable, Family: nftables.TableFamilyIPv4}
		c.AddTable(t)
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("ports: clear %s: %w", netnsPath, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return syncPeerRoutes(netnsPath, "", nil)
}

// PortRuleCount returns how many DNAT rules the output chain of
// PortsTable has (one per programmed port; 0 if the table is absent) and
// how many per-peer policy rules the namespace has: for tests and a
// repair check.
func PortRuleCount(netnsPath string) (int, error) {
	n := 0
	err := withPortsConn(netnsPath, func(c *nftables.Conn) error {
		t := &nftables.Table{Name: PortsTable, Family: nftables.TableFamilyIPv4}
		rs, err := c.GetRules(t, &nftables.Chain{Name: "output", Table: t})
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil
			}
			return err
		}
		n = len(rs)
		return nil
	})
	return n, err
}

// PeerRuleCount returns how many per-peer policy-routing rules
// (PortsRulePriority, a table in the mark range) the namespace has.
func PeerRuleCount(netnsPath string) (int, error) {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return 0, fmt.Errorf("ports: open netns %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return 0, fmt.Errorf("ports: netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()
	rules, err := h.RuleList(netlink.FAMILY_V4)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range rules {
		if r.Priority == PortsRulePriority && isPeerTable(r.Table) {
			n++
		}
	}
	return n, nil
}

// PortsUnderlay returns the interface of the namespace holding addr (the
// node's advertise address) and the connected subnet of that address.
func PortsUnderlay(netnsPath string, addr netip.Addr) (string, netip.Prefix, error) {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return "", netip.Prefix{}, fmt.Errorf("ports: open netns %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return "", netip.Prefix{}, fmt.Errorf("ports: netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, unix.AF_INET)
	if err != nil {
		return "", netip.Prefix{}, err
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok || ip != addr.Unmap() {
			continue
		}
		ones, _ := a.Mask.Size()
		l, err := h.LinkByIndex(a.LinkIndex)
		if err != nil {
			return "", netip.Prefix{}, err
		}
		return l.Attrs().Name, netip.PrefixFrom(ip, ones).Masked(), nil
	}
	return "", netip.Prefix{}, fmt.Errorf("ports: no interface holds %s", addr)
}

// PortNeighbours returns the neighbours of the uplink in the underlay
// subnet whose MAC is known (a valid neighbour-table entry), and asks the
// kernel to resolve each address of resolve that has none (NTF_USE: an
// ARP request now; the answer is there for the next call). Resolving is
// how a node learns the MAC of a node that will forward connections to
// it before the first one comes.
func PortNeighbours(netnsPath, uplink string, underlay netip.Prefix, resolve []net.IP) ([]PortPeer, int, error) {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return nil, 0, fmt.Errorf("ports: open netns %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, 0, fmt.Errorf("ports: netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()
	link, err := h.LinkByName(uplink)
	if err != nil {
		return nil, 0, fmt.Errorf("ports: uplink %q: %w", uplink, err)
	}
	neighs, err := h.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return nil, 0, fmt.Errorf("ports: neighbours of %s: %w", uplink, err)
	}
	const valid = netlink.NUD_PERMANENT | netlink.NUD_NOARP | netlink.NUD_REACHABLE | netlink.NUD_PROBE |
		netlink.NUD_STALE | netlink.NUD_DELAY
	var out []PortPeer
	known := map[string]bool{}
	for _, n := range neighs {
		a, ok := netip.AddrFromSlice(n.IP.To4())
		if !ok || !underlay.Contains(a) || n.State&valid == 0 || len(n.HardwareAddr) != 6 {
			continue
		}
		known[a.String()] = true
		out = append(out, PortPeer{Addr: n.IP.To4(), MAC: n.HardwareAddr})
	}
	asked := 0
	for _, ip := range resolve {
		a, ok := netip.AddrFromSlice(ip.To4())
		if !ok || !underlay.Contains(a) || known[a.String()] {
			continue
		}
		asked++
		if err := h.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4,
			IP: ip.To4(), Flags: netlink.NTF_USE, State: netlink.NUD_NONE}); err != nil {
			return out, asked, fmt.Errorf("ports: resolve %v: %w", ip, err)
		}
	}
	return out, asked, nil
}

func withPortsConn(netnsPath string, fn func(*nftables.Conn) error) error {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("ports: open netns %s: %w", netnsPath, err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.WithSockOptions(vip.BigBuffers))
	if err != nil {
		return fmt.Errorf("ports: nftables in %s: %w", netnsPath, err)
	}
	defer c.CloseLasting()
	return fn(c)
}
