package allocator

import (
	"fmt"
	"net/netip"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

const (
	stateRunning  = shoalv1.TaskState_TASK_STATE_RUNNING
	statePending  = shoalv1.TaskState_TASK_STATE_PENDING
	stateComplete = shoalv1.TaskState_TASK_STATE_COMPLETE
	driverHost    = "host"
)

// Allocated reports whether a task has its network attachments: one per
// network of its spec. Tasks without networks are always allocated. The
// scheduler places only allocated tasks.
func Allocated(t *shoalv1.Task) bool {
	return len(t.GetNetworks()) >= len(t.GetSpec().GetNetworks())
}

// Ended reports whether a task no longer holds its addresses: it reached
// a terminal state (COMPLETE and after).
func Ended(t *shoalv1.Task) bool { return t.GetStatus().GetState() >= stateComplete }

// VIPMode reports whether a service gets virtual addresses (endpoint mode
// vip, the default).
func VIPMode(svc *shoalv1.Service) bool {
	m := svc.GetSpec().GetEndpoint().GetMode()
	return m == "" || m == "vip"
}

func vipOwner(serviceID string) string { return "vip:" + serviceID }

// State is the address bookkeeping of every network: which address each
// task and VIP holds. It is rebuilt from the store when this manager
// becomes leader and then kept by the allocator's goroutine alone.
type State struct {
	pools map[string]*Pool // by network id; host networks have none
}

// NewState returns an empty state.
func NewState() *State { return &State{pools: map[string]*Pool{}} }

// Rebuild returns the state the stored objects imply: every address held
// by a task that has not ended, and every service VIP. Conflicting
// holders (which would be a bug) are reported, the first one kept.
func Rebuild(networks []*shoalv1.Network, tasks []*shoalv1.Task, services []*shoalv1.Service) (*State, []error) {
	s := NewState()
	var errs []error
	s.SyncNetworks(networks)
	for _, svc := range services {
		for _, v := range svc.GetVips() {
			if err := s.reserve(v.GetNetworkId(), v.GetAddress(), vipOwner(svc.GetMeta().GetId())); err != nil {
				errs = append(errs, fmt.Errorf("service %s: %w", svc.GetMeta().GetId(), err))
			}
		}
	}
	for _, t := range tasks {
		if Ended(t) {
			continue
		}
		for _, a := range t.GetNetworks() {
			if a.GetAddress() == "" {
				continue
			}
			if err := s.reserve(a.GetNetworkId(), a.GetAddress(), t.GetMeta().GetId()); err != nil {
				errs = append(errs, fmt.Errorf("task %s: %w", t.GetMeta().GetId(), err))
			}
		}
	}
	return s, errs
}

func (s *State) reserve(networkID, cidr, owner string) error {
	p := s.pools[networkID]
	if p == nil {
		return nil // network gone (or host): nothing to hold
	}
	pr, err := netip.ParsePrefix(cidr)
	if err != nil {
		return fmt.Errorf("address %q: %v", cidr, err)
	}
	return p.Reserve(pr.Addr(), owner)
}

// SyncNetworks adds a pool for each new network with a subnet and drops
// those of networks that are gone.
func (s *State) SyncNetworks(networks []*shoalv1.Network) {
	seen := make(map[string]bool, len(networks))
	for _, n := range networks {
		id := n.GetMeta().GetId()
		seen[id] = true
		if _, ok := s.pools[id]; ok || n.GetSubnet() == "" {
			continue
		}
		if p, err := NewPool(n.GetSubnet(), n.GetGateway()); err == nil {
			s.pools[id] = p
		}
	}
	for id := range s.pools {
		if !seen[id] {
			delete(s.pools, id)
		}
	}
}

// lookupNetworks reads into nets the stored networks that cfgs name (for
// a pass over a few objects, which lists no networks), adding the pool of
// one with a subnet that has none yet: its event may not have reached the
// allocator, and without a pool an attachment would get no address.
func (s *State) lookupNetworks(r raftstore.Reader, cfgs []*shoalv1.NetworkAttachmentConfig, nets map[string]*shoalv1.Network) {
	for _, cfg := range cfgs {
		id := cfg.GetTarget()
		if _, ok := nets[id]; ok {
			continue
		}
		n, ok := raftstore.Get[*shoalv1.Network](r, id)
		if !ok {
			continue
		}
		nets[id] = n
		if _, ok := s.pools[id]; !ok && n.GetSubnet() != "" {
			if p, err := NewPool(n.GetSubnet(), n.GetGateway()); err == nil {
				s.pools[id] = p
			}
		}
	}
}

// Pool returns a network's pool (nil for none).
func (s *State) Pool(networkID string) *Pool { return s.pools[networkID] }

// Undo reverts allocations made for a transaction that was not committed.
type Undo []UndoStep

// UndoStep is one revert: Frees says it frees an address the transaction
// handed out (the others hold again an address it freed).
type UndoStep struct {
	Fn    func()
	Frees bool
}

// Run reverts in reverse order: the transaction is known not to be
// committed.
func (u Undo) Run() {
	for i := len(u) - 1; i >= 0; i-- {
		u[i].Fn()
	}
}

// RunHolds reverts only the frees of the transaction (its addresses are
// held again) and keeps what it handed out: for a transaction whose fate
// is unknown (leadership lost while in flight: it may still commit).
// Holding too much leaks an address until the next rebuild; freeing what
// the store may hold would hand it out twice.
func (u Undo) RunHolds() {
	for i := len(u) - 1; i >= 0; i-- {
		if !u[i].Frees {
			u[i].Fn()
		}
	}
}

// AllocateTask returns a copy of t with one attachment per network of its
// spec (address and MAC for networks with a subnet; none for host
// networks), recording the addresses as t's. On error nothing is held.
func (s *State) AllocateTask(t *shoalv1.Task, networks map[string]*shoalv1.Network, undo *Undo) (*shoalv1.Task, error) {
	out := proto.Clone(t).(*shoalv1.Task)
	out.Networks = nil
	owner := t.GetMeta().GetId()
	var local Undo
	for i, cfg := range t.GetSpec().GetNetworks() {
		n := networks[cfg.GetTarget()]
		if n == nil {
			local.Run()
			return nil, fmt.Errorf("spec.networks[%d]: network %q does not exist", i, cfg.GetTarget())
		}
		att := &shoalv1.NetworkAttachment{NetworkId: n.GetMeta().GetId(), Aliases: cfg.GetAliases()}
		if p := s.pools[n.GetMeta().GetId()]; p != nil {
			a, err := p.Allocate(owner)
			if err != nil {
				local.Run()
				return nil, fmt.Errorf("network %q: %v", n.GetSpec().GetName(), err)
			}
			local = append(local, UndoStep{Fn: func() { p.Release(a, owner) }, Frees: true})
			att.Address = netip.PrefixFrom(a, p.Subnet().Bits()).String()
			att.Mac = MAC(a)
		}
		out.Networks = append(out.Networks, att)
	}
	*undo = append(*undo, local...)
	return out, nil
}

// ReleaseTask frees the addresses t holds (when it ended or was
// deleted). Addresses already handed to someone else stay theirs.
func (s *State) ReleaseTask(t *shoalv1.Task) {
	s.release(t.GetNetworks(), t.GetMeta().GetId())
}

func (s *State) release(atts []*shoalv1.NetworkAttachment, owner string) {
	for _, a := range atts {
		if p := s.pools[a.GetNetworkId()]; p != nil {
			if pr, err := netip.ParsePrefix(a.GetAddress()); err == nil {
				p.Release(pr.Addr(), owner)
			}
		}
	}
}

// ReleaseService frees a deleted service's VIPs.
func (s *State) ReleaseService(svc *shoalv1.Service) {
	for _, v := range svc.GetVips() {
		if p := s.pools[v.GetNetworkId()]; p != nil {
			if pr, err := netip.ParsePrefix(v.GetAddress()); err == nil {
				p.Release(pr.Addr(), vipOwner(svc.GetMeta().GetId()))
			}
		}
	}
}

// ServiceVIPs returns a service's VIPs as they should be — one per
// network of its spec that has a subnet, in vip mode; none in dnsrr —
// keeping those it has, allocating the missing and freeing the rest. It
// returns nil when nothing changes. On error nothing changes (the service
// is not written, so the VIPs it has stay held).
func (s *State) ServiceVIPs(svc *shoalv1.Service, networks map[string]*shoalv1.Network, undo *Undo) ([]*shoalv1.ServiceVIP, bool, error) {
	owner := vipOwner(svc.GetMeta().GetId())
	want := map[string]bool{}
	var order []string
	if VIPMode(svc) {
		for _, cfg := range svc.GetSpec().GetTask().GetNetworks() {
			if n := networks[cfg.GetTarget()]; n != nil && s.pools[cfg.GetTarget()] != nil && !want[cfg.GetTarget()] {
				want[cfg.GetTarget()] = true
				order = append(order, cfg.GetTarget())
			}
		}
	}
	have := map[string]*shoalv1.ServiceVIP{}
	changed := false
	var local Undo
	for _, v := range svc.GetVips() {
		if want[v.GetNetworkId()] && have[v.GetNetworkId()] == nil {
			have[v.GetNetworkId()] = v
			continue
		}
		changed = true
		if p := s.pools[v.GetNetworkId()]; p != nil {
			if pr, err := netip.ParsePrefix(v.GetAddress()); err == nil && p.Release(pr.Addr(), owner) {
				local = append(local, UndoStep{Fn: func() { _ = p.Reserve(pr.Addr(), owner) }})
			}
		}
	}
	out := make([]*shoalv1.ServiceVIP, 0, len(order))
	for _, id := range order {
		if v := have[id]; v != nil {
			out = append(out, v)
			continue
		}
		p := s.pools[id]
		a, err := p.Allocate(owner)
		if err != nil {
			// The service is not written: what it held stays held.
			local.Run()
			return nil, false, fmt.Errorf("network %q: %v", networks[id].GetSpec().GetName(), err)
		}
		local = append(local, UndoStep{Fn: func() { p.Release(a, owner) }, Frees: true})
		out = append(out, &shoalv1.ServiceVIP{NetworkId: id, Address: netip.PrefixFrom(a, p.Subnet().Bits()).String()})
		changed = true
	}
	*undo = append(*undo, local...)
	return out, changed, nil
}
