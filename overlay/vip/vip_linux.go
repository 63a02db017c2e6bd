package vip

import (
	"errors"
	"fmt"
	"net"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family ip) owned by this package in
// each task namespace. Nothing else may write to it.
const TableName = "shoal-vip"

// VIP is one service address and the addresses new connections to it
// are spread over.
type VIP struct {
	Addr     net.IP
	Backends []net.IP
}

// Program makes the VIP rules of the namespace at netnsPath exactly
// vips, in one nftables transaction: the table is re-created (add,
// delete, add in one batch), so a reader never sees a half-written set
// and calling it again with the same vips is harmless. Established
// connections are not touched: their NAT mapping lives in conntrack,
// which rules are not consulted for; only NEW connections follow the
// new backends. A VIP with no backend rejects new connections (TCP
// reset / ICMP port unreachable) instead of letting them leave the
// namespace for an address nobody owns.
func Program(netnsPath string, vips []VIP) error {
	norm, err := normalise(vips)
	if err != nil {
		return err
	}
	return withConn(netnsPath, func(c *nftables.Conn) error {
		t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
		ch := c.AddChain(&nftables.Chain{
			Name:     "output",
			Table:    t,
			Type:     nftables.ChainTypeNAT,
			Hooknum:  nftables.ChainHookOutput,
			Priority: nftables.ChainPriorityNATDest,
		})
		var fch *nftables.Chain // filter chain, only when a VIP has no backend
		for _, v := range norm {
			match := []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: v.Addr},
			}
			if len(v.Backends) == 0 {
				if fch == nil {
					fch = c.AddChain(&nftables.Chain{
						Name:     "output-filter",
						Table:    t,
						Type:     nftables.ChainTypeFilter,
						Hooknum:  nftables.ChainHookOutput,
						Priority: nftables.ChainPriorityFilter,
					})
				}
				c.AddRule(&nftables.Rule{Table: t, Chain: fch, Exprs: append(match,
					&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3 /* port unreachable */})})
				continue
			}
			m := &nftables.Set{
				Table:     t,
				Anonymous: true,
				Constant:  true,
				IsMap:     true,
				KeyType:   nftables.TypeInteger,
				DataType:  nftables.TypeIPAddr,
			}
			elems := make([]nftables.SetElement, len(v.Backends))
			for i, b := range v.Backends {
				elems[i] = nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(i)), Val: b}
			}
			if err := c.AddSet(m, elems); err != nil {
				return fmt.Errorf("vip %s: %w", net.IP(v.Addr), err)
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(match,
				&expr.Numgen{Register: 1, Modulus: uint32(len(v.Backends)), Type: unix.NFT_NG_INCREMENTAL},
				&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
			)})
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("vip: program %s: %w", netnsPath, err)
		}
		return nil
	})
}

// Clear removes the package's table from the namespace (no error if it
// is not there). Established connections keep working (conntrack).
func Clear(netnsPath string) error {
	return withConn(netnsPath, func(c *nftables.Conn) error {
		t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
		c.AddTable(t)
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("vip: clear %s: %w", netnsPath, err)
		}
		return nil
	})
}

// RuleCount returns how many VIP rules (one per VIP) the namespace has (0 if the table
// is absent): for tests and for the agent's repair check.
func RuleCount(netnsPath string) (int, error) {
	n := 0
	err := withConn(netnsPath, func(c *nftables.Conn) error {
		t, err := c.ListTableOfFamily(TableName, nftables.TableFamilyIPv4)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil
			}
			return err
		}
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
		if err != nil {
			return err
		}
		for _, ch := range chains {
			if ch.Table.Name != TableName {
				continue
			}
			rules, err := c.GetRules(t, ch)
			if err != nil {
				return err
			}
			n += len(rules)
		}
		return nil
	})
	return n, err
}

type vip4 struct {
	Addr     []byte
	Backends [][]byte
}

func normalise(vips []VIP) ([]vip4, error) {
	seen := map[string]bool{}
	var out []vip4
	for _, v := range vips {
		a := v.Addr.To4()
		if a == nil {
			return nil, fmt.Errorf("vip: address %v is not IPv4", v.Addr)
		}
		if seen[string(a)] {
			return nil, fmt.Errorf("vip: address %v given twice", v.Addr)
		}
		seen[string(a)] = true
		bseen := map[string]bool{}
		var bs [][]byte
		for _, b := range v.Backends {
			b4 := b.To4()
			if b4 == nil {
				return nil, fmt.Errorf("vip %v: backend %v is not IPv4", v.Addr, b)
			}
			if !bseen[string(b4)] {
				bseen[string(b4)] = true
				bs = append(bs, b4)
			}
		}
		// A stable order, so that the same set programs the same map.
		sort.Slice(bs, func(i, j int) bool { return string(bs[i]) < string(bs[j]) })
		out = append(out, vip4{Addr: a, Backends: bs})
	}
	return out, nil
}

// BigBuffers is an nftables.WithSockOptions option for connections that
// send a whole rule set in one batch (Program here, the published ports in
// overlay). Program sends the whole set as one batch and gets one ack
// per message. With the default socket buffers ~100 VIPs overflowed the
// receive side (ENOBUFS: the outcome is then unknown) and ~500 VIPs the
// send side (EMSGSIZE). Capped acks carry no copy of the request, and
// both buffers are forced to 16 MiB (SO_*BUFFORCE: the agent is root;
// plain SO_*BUF, capped by net.core.*mem_max, otherwise), enough for
// thousands of VIPs.
func BigBuffers(c *netlink.Conn) error {
	if err := c.SetOption(netlink.CapAcknowledge, true); err != nil {
		return err
	}
	const size = 16 << 20
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], size) != nil {
				if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], size); err != nil {
					serr = err
				}
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

func withConn(netnsPath string, fn func(*nftables.Conn) error) error {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("vip: open netns %s: %w", netnsPath, err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.WithSockOptions(BigBuffers))
	if err != nil {
		return fmt.Errorf("vip: nftables in %s: %w", netnsPath, err)
	}
	return fn(c)
}
