package overlay

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
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
	sig := fmt.Sprint(m.cfg.LocalSubnet, m.cfg.Uplink, subs)
	c, err := nftables.New(nftables.WithNetNSFd(int(m.ns)))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer c.CloseLasting()
	nRules := 2 * len(subs)
	if m.cfg.LocalSubnet.IsValid() {
		nRules++
	}
	if !force && sig == m.nftSig && m.nftIntact(c, nRules) {
		return nil
	}
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
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

// nftIntact reports whether the table has its two chains with n rules.
func (m *Manager) nftIntact(c *nftables.Conn, n int) bool {
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
	got := 0
	for _, ch := range []string{"forward", "postrouting"} {
		rs, err := c.GetRules(t, &nftables.Chain{Name: ch, Table: t})
		if err != nil {
			return false
		}
		got += len(rs)
	}
	return got == n
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
