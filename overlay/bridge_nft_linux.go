package overlay

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// syncBridgeNFT rewrites table ip "shoal-bridge" when the wanted rules
// differ from the last written or the table is not as written. Per bridge
// network B on the node (a table of its own, so the overlay's rules stay
// as they are):
//
//	forward:     oifname B ct state established,related accept
//	             oifname B iifname != B drop            (nothing opens into B)
//	             iifname B oifname != UPLINK drop       (egress via the uplink only)
//	             iifname B oifname != B drop            (--internal: no egress at all)
//	postrouting: ip saddr S oifname UPLINK masquerade   (not --internal)
//
// so bridge networks are isolated from each other, from overlay networks
// and from the node-local task bridge, in both directions. Caller holds
// m.mu or is New.
func (m *Manager) syncBridgeNFT(force bool) error {
	var bns []bridgeNet
	for _, bn := range m.bridges {
		bns = append(bns, bn)
	}
	slices.SortFunc(bns, func(a, b bridgeNet) int { return strings.Compare(a.bridge, b.bridge) })
	sig := fmt.Sprint(m.cfg.Uplink, bns)
	c, err := nftConn(m)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer c.CloseLasting()
	t := &nftables.Table{Name: BridgeTableName, Family: nftables.TableFamilyIPv4}
	if len(bns) == 0 {
		if m.bridgeSig == "" && !force {
			return nil
		}
		// No bridge network on the node: no table at all.
		c.AddTable(t)
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("nftables: delete table %s: %w", BridgeTableName, err)
		}
		m.bridgeSig = ""
		return nil
	}
	nRules := 0
	for _, bn := range bns {
		nRules += 3
		if !bn.internal {
			nRules++
		}
	}
	if !force && sig == m.bridgeSig && m.bridgeNFTIntact(c, nRules) {
		return nil
	}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	ifc := func(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
		return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: ifname(name)}}
	}
	rule := func(ch *nftables.Chain, parts ...[]expr.Any) {
		var e []expr.Any
		for _, p := range parts {
			e = append(e, p...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: e})
	}
	drop := []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
	established := []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
	for _, bn := range bns {
		rule(fwd, ifc(expr.MetaKeyOIFNAME, expr.CmpOpEq, bn.bridge), established)
		rule(fwd, ifc(expr.MetaKeyOIFNAME, expr.CmpOpEq, bn.bridge), ifc(expr.MetaKeyIIFNAME, expr.CmpOpNeq, bn.bridge), drop)
		if bn.internal {
			rule(fwd, ifc(expr.MetaKeyIIFNAME, expr.CmpOpEq, bn.bridge), ifc(expr.MetaKeyOIFNAME, expr.CmpOpNeq, bn.bridge), drop)
			continue
		}
		rule(fwd, ifc(expr.MetaKeyIIFNAME, expr.CmpOpEq, bn.bridge), ifc(expr.MetaKeyOIFNAME, expr.CmpOpNeq, bn.bridge),
			ifc(expr.MetaKeyOIFNAME, expr.CmpOpNeq, m.cfg.Uplink), drop)
		rule(post, matchPrefix(12, bn.subnet, expr.CmpOpEq), ifc(expr.MetaKeyOIFNAME, expr.CmpOpEq, m.cfg.Uplink),
			[]expr.Any{&expr.Counter{}, &expr.Masq{}})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: write table %s: %w", BridgeTableName, err)
	}
	m.bridgeSig = sig
	return nil
}

// bridgeNFTIntact reports whether the table has its two chains with n
// rules.
func (m *Manager) bridgeNFTIntact(c *nftables.Conn, n int) bool {
	t := &nftables.Table{Name: BridgeTableName, Family: nftables.TableFamilyIPv4}
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
