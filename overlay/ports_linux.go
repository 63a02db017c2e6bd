package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sort"

	"github.com/shoal-dev/shoal/overlay/vip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
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
}

// PortBackend is one task address behind a published port. SNAT makes the
// node masquerade connections it sends there (the task sees the node's
// address, not the client's): needed when the task's replies would not
// come back through this node (a task on another host). Without SNAT the
// task sees the client's address and must route replies through this node
// (a task on this node: its default route is the node).
type PortBackend struct {
	Addr net.IP
	SNAT bool
}

// ProgramPorts makes the published-port rules of the namespace at
// netnsPath exactly ports, in one nftables transaction (add, delete, add
// the table): calling it again with the same ports is harmless, and
// established connections keep their mapping (conntrack). Rules:
//
//	chain prerouting (nat, prerouting, dstnat) and output (nat, output, dstnat):
//	  meta l4proto P th dport PUB fib daddr type local [ip saddr != NODE ...]
//	    [ct mark set 0x5301]   (only if some backend has SNAT)
//	    dnat to numgen inc mod N map { 0: B0, ... } : TARGET
//	chain postrouting (nat, postrouting, srcnat):
//	  ct mark 0x5301 ip daddr B masquerade     (per SNAT backend)
//
// A port with no backend is left out (the node refuses the connection as
// it would for any closed port). Only IPv4.
func ProgramPorts(netnsPath string, ports []PublishedPort) error {
	norm, err := normPorts(ports)
	if err != nil {
		return err
	}
	return withPortsConn(netnsPath, func(c *nftables.Conn) error {
		t := &nftables.Table{Name: PortsTable, Family: nftables.TableFamilyIPv4}
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
		accept := nftables.ChainPolicyAccept
		pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept})
		out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest, Policy: &accept})
		post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
		snatted := map[string]bool{}
		for _, p := range norm {
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
		if err := c.Flush(); err != nil {
			return fmt.Errorf("ports: program %s: %w", netnsPath, err)
		}
		return nil
	})
}

func portRule(c *nftables.Conn, t *nftables.Table, p PublishedPort) ([]expr.Any, error) {
	proto := byte(unix.IPPROTO_TCP)
	if p.Protocol == "udp" {
		proto = unix.IPPROTO_UDP
	}
	port := make([]byte, 2)
	binary.BigEndian.PutUint16(port, p.Port)
	target := make([]byte, 2)
	binary.BigEndian.PutUint16(target, p.TargetPort)
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port},
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
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

// ClearPorts removes PortsTable from the namespace (no error if absent).
func ClearPorts(netnsPath string) error {
	return withPortsConn(netnsPath, func(c *nftables.Conn) error {
		t := &nftables.Table{Name: PortsTable, Family: nftables.TableFamilyIPv4}
		c.AddTable(t)
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("ports: clear %s: %w", netnsPath, err)
		}
		return nil
	})
}

// PortRuleCount returns how many DNAT rules the prerouting chain of
// PortsTable has (one per programmed port; 0 if the table is absent): for
// tests and a repair check.
func PortRuleCount(netnsPath string) (int, error) {
	n := 0
	err := withPortsConn(netnsPath, func(c *nftables.Conn) error {
		t := &nftables.Table{Name: PortsTable, Family: nftables.TableFamilyIPv4}
		rs, err := c.GetRules(t, &nftables.Chain{Name: "prerouting", Table: t})
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
