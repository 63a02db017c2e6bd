package overlay

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family ip) of the overlay.
const TableName = "shoal-overlay"

// syncNFT rewrites the table atomically when the wanted rules differ
// from the last ones written or when the table is not as written (some
// one deleted or changed it). Caller holds m.mu or is New.
func (m *Manager) syncNFT(force bool) error {
	var subs []netip.Prefix
	for _, p := range m.subnets {
		subs = append(subs, p)
	}
	slices.SortFunc(subs, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	c, err := nftables.New(nftables.WithNetNSFd(int(m.ns)))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer c.CloseLasting()
	if m.vteps == nil {
		// First write (New): keep the VTEPs a previous run allowed until
		// the first Reconcile, so that a restarted agent does not cut its
		// healthy peers' tunnels meanwhile.
		m.vteps = map[netip.Addr]bool{}
		for _, a := range m.kernelVTEPs(c) {
			m.vteps[a] = true
		}
	}
	vteps := m.allowedVTEPs()
	sig := fmt.Sprint(m.cfg.LocalSubnet, m.cfg.Uplink, subs, vteps)
	nRules := 2*len(subs) + 2 // + the VXLAN filter and the forged-VXLAN drop
	if m.cfg.LocalSubnet.IsValid() {
		nRules++
	}
	if !force && sig == m.nftSig && m.nftIntact(c, nRules, len(vteps)) {
		return nil
	}
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	// VXLAN (UDP VXLANPort) is accepted only from the VTEPs of the
	// endpoints this node programs (set "vteps"): anyone else on the
	// underlay could otherwise inject frames into an overlay network by
	// guessing its VNI.
	set := &nftables.Set{Table: t, Name: VTEPSetName, KeyType: nftables.TypeIPAddr}
	var elems []nftables.SetElement
	for _, a := range vteps {
		elems = append(elems, nftables.SetElement{Key: a.AsSlice()})
	}
	if err := c.AddSet(set, elems); err != nil {
		return fmt.Errorf("nftables: set %s: %w", VTEPSetName, err)
	}
	in := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(VXLANPort)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, Invert: true},
		&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop},
	}})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	// No routed packet leaves through the uplink to the VXLAN port: a
	// task's would be masqueraded onto this node's address, which every
	// peer's filter above accepts, and so inject frames of its making
	// into any overlay network (this node's own tunnels send from the
	// node, never through forward).
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(m.cfg.Uplink)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(VXLANPort)},
		&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop},
	}})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	// Bridged overlay frames also pass this hook when br_netfilter is
	// loaded (bridge-nf-call-iptables=1), with the bridge device (shb-…)
	// as input and output: those are left alone. The bridges have no
	// address, so the node never routes into or out of one; every other
	// packet from or to an overlay subnet is routed and dropped.
	for _, p := range subs {
		for _, x := range []struct {
			off uint32
			key expr.MetaKey
		}{{12, expr.MetaKeyIIFNAME}, {16, expr.MetaKeyOIFNAME}} { // saddr, daddr
			e := matchPrefix(x.off, p, expr.CmpOpEq)
			e = append(e,
				&expr.Meta{Key: x.key, Register: 1},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte("shb-")},
				&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
			c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: e})
		}
	}
	if m.cfg.LocalSubnet.IsValid() {
		e := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(m.cfg.Uplink)},
		}
		e = append(e, matchPrefix(12, m.cfg.LocalSubnet, expr.CmpOpEq)...)
		e = append(e, matchPrefix(16, m.cfg.LocalSubnet, expr.CmpOpNeq)...)
		e = append(e, &expr.Counter{}, &expr.Masq{})
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: e})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: write table %s: %w", TableName, err)
	}
	m.nftSig = sig
	return nil
}

// nftIntact reports whether the table has its three chains with n rules
// and its VTEP set nVTEPs elements.
func (m *Manager) nftIntact(c *nftables.Conn, n, nVTEPs int) bool {
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
	got := 0
	for _, ch := range []string{"forward", "postrouting", "input"} {
		rs, err := c.GetRules(t, &nftables.Chain{Name: ch, Table: t})
		if err != nil {
			return false
		}
		got += len(rs)
	}
	set, err := c.GetSetByName(t, VTEPSetName)
	if err != nil {
		return false
	}
	els, err := c.GetSetElements(set)
	return err == nil && got == n && len(els) == nVTEPs
}

// VTEPSetName is the set (in TableName) of the underlay addresses VXLAN
// is accepted from.
const VTEPSetName = "vteps"

// allowedVTEPs is the VTEPs of the endpoints in the networks last
// reconciled plus those of the hints programmed since, sorted. Caller
// holds m.mu.
func (m *Manager) allowedVTEPs() []netip.Addr {
	var out []netip.Addr
	for a := range m.vteps {
		out = append(out, a)
	}
	for a := range m.hintVTEPs {
		if !m.vteps[a] {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// kernelVTEPs reads the VTEP set as the kernel has it (nil if absent).
func (m *Manager) kernelVTEPs(c *nftables.Conn) []netip.Addr {
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
	set, err := c.GetSetByName(t, VTEPSetName)
	if err != nil {
		return nil
	}
	els, err := c.GetSetElements(set)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, e := range els {
		if a, ok := netip.AddrFromSlice(e.Key); ok && a.Is4() {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// AllowedVTEPs returns the addresses the kernel accepts VXLAN from (the
// set as it is in the node namespace, sorted): for checks and tests.
func (m *Manager) AllowedVTEPs() ([]netip.Addr, error) {
	c, err := nftConn(m)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	return m.kernelVTEPs(c), nil
}

// VXLANDropped returns the packets the VXLAN filter has dropped since the
// table was last written (its rule's counter): for checks and tests.
func (m *Manager) VXLANDropped() (uint64, error) {
	c, err := nftConn(m)
	if err != nil {
		return 0, err
	}
	defer c.CloseLasting()
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
	rs, err := c.GetRules(t, &nftables.Chain{Name: "input", Table: t})
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, r := range rs {
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				n += ctr.Packets
			}
		}
	}
	return n, nil
}

// allowHintVTEP adds a hinted endpoint's VTEP to the set before its FDB
// entry is written (the next Reconcile resets the hint VTEPs, as it
// removes the hints' entries). Caller holds m.mu.
func (m *Manager) allowHintVTEP(a netip.Addr) error {
	if m.vteps[a] || m.hintVTEPs[a] {
		return nil
	}
	if m.hintVTEPs == nil {
		m.hintVTEPs = map[netip.Addr]bool{}
	}
	m.hintVTEPs[a] = true
	return m.syncNFT(false)
}

func matchPrefix(off uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	p = p.Masked()
	mask := make([]byte, 4)
	bits := p.Bits()
	for i := 0; i < 4; i++ {
		switch {
		case bits >= 8:
			mask[i] = 0xff
			bits -= 8
		case bits > 0:
			mask[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: p.Addr().AsSlice()},
	}
}

func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}

func nftConn(m *Manager) (*nftables.Conn, error) {
	return nftables.New(nftables.WithNetNSFd(int(m.ns)))
}
