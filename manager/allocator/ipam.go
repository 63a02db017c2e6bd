package allocator

import (
	"fmt"
	"net/netip"
)

// Pool hands out the host addresses of one network's subnet: never the
// network, gateway or broadcast address. Addresses never handed out come
// first (in order); after that the least recently freed one, so that an
// address just freed is reused as late as possible — a peer that still
// holds a stale neighbour or FDB entry for it gets time to drop it.
type Pool struct {
	subnet      netip.Prefix
	gateway     netip.Addr
	base, size  uint32 // first address and number of addresses
	next        uint32 // offset of the next never-handed-out address
	owner       map[netip.Addr]string
	freed       []netip.Addr // FIFO: least recently freed first
	freedAt     map[netip.Addr]int
	freedOffset int // index in the FIFO's history of freed[0]
}

// NewPool returns an empty pool for subnet (CIDR) with gateway (an
// address; empty: none reserved).
func NewPool(subnet, gateway string) (*Pool, error) {
	p, err := netip.ParsePrefix(subnet)
	if err != nil || !p.Addr().Is4() {
		return nil, fmt.Errorf("subnet %q is not an IPv4 CIDR", subnet)
	}
	pool := &Pool{subnet: p.Masked(), base: u32(p.Masked().Addr()), size: 1 << (32 - p.Bits()),
		owner: map[netip.Addr]string{}, freedAt: map[netip.Addr]int{}}
	if gateway != "" {
		g, err := netip.ParseAddr(gateway)
		if err != nil {
			return nil, fmt.Errorf("gateway %q: %v", gateway, err)
		}
		pool.gateway = g
	}
	return pool, nil
}

// Subnet returns the pool's subnet.
func (p *Pool) Subnet() netip.Prefix { return p.subnet }

// usable reports whether a is a host address that is not the gateway.
func (p *Pool) usable(a netip.Addr) bool {
	if !p.subnet.Contains(a) || a == p.gateway {
		return false
	}
	off := u32(a) - p.base
	return off != 0 && off != p.size-1
}

// Reserve marks a in use by owner (rebuilding from the store). It fails
// when a is not a usable address of the pool or another owner holds it.
func (p *Pool) Reserve(a netip.Addr, owner string) error {
	if !p.usable(a) {
		return fmt.Errorf("%s is not a usable address of %s", a, p.subnet)
	}
	if o, ok := p.owner[a]; ok && o != owner {
		return fmt.Errorf("%s is already held by %s", a, o)
	}
	p.owner[a] = owner
	if off := u32(a) - p.base; off >= p.next {
		// Everything below a that is free counts as freed (in order),
		// so that new addresses keep coming from above.
		for o := p.next; o < off; o++ {
			if c := fromU32(p.base + o); p.usable(c) {
				if _, used := p.owner[c]; !used {
					p.pushFreed(c)
				}
			}
		}
		p.next = off + 1
	}
	return nil
}

func (p *Pool) pushFreed(a netip.Addr) {
	p.freedAt[a] = p.freedOffset + len(p.freed)
	p.freed = append(p.freed, a)
}

// Allocate hands out an address to owner.
func (p *Pool) Allocate(owner string) (netip.Addr, error) {
	for p.next < p.size {
		a := fromU32(p.base + p.next)
		p.next++
		if _, used := p.owner[a]; used || !p.usable(a) {
			continue
		}
		p.owner[a] = owner
		return a, nil
	}
	for len(p.freed) > 0 {
		a := p.freed[0]
		p.freed = p.freed[1:]
		p.freedOffset++
		if p.freedAt[a] != p.freedOffset-1 {
			continue // freed again later: a newer entry stands
		}
		delete(p.freedAt, a)
		if _, used := p.owner[a]; used {
			continue
		}
		p.owner[a] = owner
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("the subnet %s has no free address left", p.subnet)
}

// Release frees a if owner holds it; it reports whether it did. A release
// by anyone else (a stale event of a task whose address was already freed
// and handed out again) changes nothing.
func (p *Pool) Release(a netip.Addr, owner string) bool {
	if o, ok := p.owner[a]; !ok || o != owner {
		return false
	}
	delete(p.owner, a)
	p.pushFreed(a)
	return true
}

// InUse returns how many addresses are held.
func (p *Pool) InUse() int { return len(p.owner) }

// Owner returns who holds a ("" if nobody).
func (p *Pool) Owner(a netip.Addr) string { return p.owner[a] }

// MAC derives a MAC address from an IPv4 address as Docker does:
// 02:42:a:b:c:d.
func MAC(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromU32(n uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}
