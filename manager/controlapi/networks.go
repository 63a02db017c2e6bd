package controlapi

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/specrules"
)

// Network allocation defaults and bounds.
var (
	// DefaultAddressPool is ClusterSettings.default_address_pool when unset.
	DefaultAddressPool = netip.MustParsePrefix("10.220.0.0/16")
	// NodeBridgePool is what every node's default bridge may use
	// (10.213.0.0/24 by default, configurable per node within it): no
	// network may overlap it.
	NodeBridgePool = netip.MustParsePrefix("10.213.0.0/16")
)

const (
	// DefaultSubnetSize is ClusterSettings.default_subnet_size when unset.
	DefaultSubnetSize = 24
	// FirstVNI is the first VXLAN id an overlay network gets; lower ones
	// are left to the operator's other uses.
	FirstVNI = 4096
	// MaxVNI is the largest 24-bit VXLAN id.
	MaxVNI = 1<<24 - 1
)

// CreateNetwork validates a network spec, allocates its subnet (from the
// cluster's default pool when none is given), gateway and VNI (overlay),
// and stores it. Overlapping subnets, an exhausted pool and a name clash
// are refused; nothing is stored then.
func (s *Server) CreateNetwork(ctx context.Context, req *shoalv1.CreateNetworkRequest) (*shoalv1.CreateNetworkResponse, error) {
	if err := invalidProblems(specrules.Network(req.GetSpec())); err != nil {
		return nil, err
	}
	spec := proto.Clone(req.GetSpec()).(*shoalv1.NetworkSpec)
	if spec.Driver == "" {
		spec.Driver = specrules.DriverOverlay
	}
	nw := &shoalv1.Network{Meta: &shoalv1.Meta{Id: raftstore.NewID()}, Spec: spec}
	s.netMu.Lock()
	defer s.netMu.Unlock()
	idx, err := s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		if existing := raftstore.Find[*shoalv1.Network](tx, raftstore.IndexName, spec.GetName()); len(existing) > 0 {
			return errdefs.AlreadyExistsf("spec.name: a network named %q exists (%s)", spec.GetName(), existing[0].GetMeta().GetId())
		}
		if err := checkBridgeName(tx, nw); err != nil {
			return err
		}
		return allocateNetwork(tx, nw)
	})
	if err != nil {
		return nil, err
	}
	out := proto.Clone(nw).(*shoalv1.Network)
	out.Meta.Version = idx
	s.log.Info("network created", "network_id", nw.GetMeta().GetId(), "name", spec.GetName(), "driver", spec.GetDriver(), "subnet", nw.GetSubnet(), "vni", nw.GetVni())
	return &shoalv1.CreateNetworkResponse{Network: out}, nil
}

// checkBridgeName refuses a bridge network whose Linux bridge name another
// bridge network already uses: both would share one bridge on a node,
// joining their tasks.
func checkBridgeName(r raftstore.Reader, nw *shoalv1.Network) error {
	if nw.GetSpec().GetDriver() != specrules.DriverBridge {
		return nil
	}
	name := specrules.BridgeName(nw)
	for _, o := range raftstore.List[*shoalv1.Network](r) {
		if o.GetSpec().GetDriver() == specrules.DriverBridge && specrules.BridgeName(o) == name {
			return errdefs.AlreadyExistsf("spec.bridge_name: the bridge %q is network %q's already", name, o.GetSpec().GetName())
		}
	}
	return nil
}

// allocateNetwork fills nw's subnet, gateway and VNI against the networks
// in tx, then creates it.
func allocateNetwork(tx raftstore.WriteTx, nw *shoalv1.Network) error {
	spec := nw.GetSpec()
	others := raftstore.List[*shoalv1.Network](tx)
	if spec.GetDriver() != specrules.DriverHost {
		var subnet netip.Prefix
		nodes := nodeAddrs(tx)
		if spec.GetSubnet() != "" {
			subnet = netip.MustParsePrefix(spec.GetSubnet()) // validated
			if err := checkOverlap(subnet, others, nodes); err != nil {
				return errdefs.InvalidArgumentf("spec.subnet: %v", err)
			}
		} else {
			pool, size, err := addressPool(tx)
			if err != nil {
				return err
			}
			subnet, err = subnetFromPool(pool, size, others, nodes)
			if err != nil {
				return errdefs.ResourceExhaustedf("spec.subnet: %v; give --subnet or widen the cluster's default address pool", err)
			}
		}
		nw.Subnet = subnet.String()
		if g := spec.GetGateway(); g != "" {
			nw.Gateway = g
		} else {
			nw.Gateway = subnet.Addr().Next().String()
		}
	}
	if spec.GetDriver() == specrules.DriverOverlay {
		vni, err := freeVNI(others)
		if err != nil {
			return err
		}
		nw.Vni = vni
	}
	return tx.Create(nw)
}

// addressPool returns the cluster's default address pool and subnet size.
func addressPool(r raftstore.Reader) (netip.Prefix, int, error) {
	pool, size := DefaultAddressPool, DefaultSubnetSize
	if c, ok := raftstore.ClusterOf(r); ok {
		if p := c.GetSettings().GetDefaultAddressPool(); p != "" {
			pr, err := netip.ParsePrefix(p)
			if err != nil || !pr.Addr().Is4() {
				return pool, size, errdefs.FailedPreconditionf("the cluster setting default_address_pool %q is not an IPv4 CIDR", p)
			}
			pool = pr.Masked()
		}
		if n := c.GetSettings().GetDefaultSubnetSize(); n != 0 {
			size = int(n)
		}
	}
	if size < pool.Bits() || size < specrules.MinSubnetPrefix || size > specrules.MaxSubnetPrefix {
		return pool, size, errdefs.FailedPreconditionf("the cluster setting default_subnet_size /%d does not fit the pool %s (prefix %d..%d)", size, pool, max(pool.Bits(), specrules.MinSubnetPrefix), specrules.MaxSubnetPrefix)
	}
	return pool, size, nil
}

// nodeAddr is a node's underlay (advertise) address.
type nodeAddr struct {
	addr netip.Addr
	name string
}

// nodeAddrs returns the underlay addresses of the nodes known (NodeStatus.addr,
// "host:port" or "host"; nodes that have not said theirs are left out).
func nodeAddrs(r raftstore.Reader) []nodeAddr {
	var out []nodeAddr
	for _, n := range raftstore.List[*shoalv1.Node](r) {
		a := n.GetStatus().GetAddr()
		if h, _, err := net.SplitHostPort(a); err == nil {
			a = h
		}
		ip, err := netip.ParseAddr(a)
		if err != nil {
			continue
		}
		name := n.GetSpec().GetName()
		if name == "" {
			name = n.GetMeta().GetId()
		}
		out = append(out, nodeAddr{addr: ip.Unmap(), name: name})
	}
	return out
}

// reserved returns the subnets a new one may not overlap: every network's,
// the nodes' default bridge pool and each node's underlay address.
func reserved(others []*shoalv1.Network, nodes []nodeAddr) []netip.Prefix {
	out := []netip.Prefix{NodeBridgePool}
	for _, n := range others {
		if p, err := netip.ParsePrefix(n.GetSubnet()); err == nil {
			out = append(out, p)
		}
	}
	for _, n := range nodes {
		if n.addr.Is4() {
			out = append(out, netip.PrefixFrom(n.addr, 32))
		}
	}
	return out
}

// checkOverlap refuses a subnet overlapping another network's or the node
// bridge pool, or holding a node's underlay address (tasks would be given
// node addresses and the gateway's route would shadow the node's LAN),
// naming it.
func checkOverlap(subnet netip.Prefix, others []*shoalv1.Network, nodes []nodeAddr) error {
	if subnet.Overlaps(NodeBridgePool) {
		return fmt.Errorf("%s overlaps %s, reserved for the nodes' default bridge", subnet, NodeBridgePool)
	}
	for _, n := range others {
		if p, err := netip.ParsePrefix(n.GetSubnet()); err == nil && p.Overlaps(subnet) {
			return fmt.Errorf("%s overlaps the subnet %s of network %q", subnet, p, n.GetSpec().GetName())
		}
	}
	for _, n := range nodes {
		if subnet.Contains(n.addr) {
			return fmt.Errorf("%s holds the address %s of node %q (the underlay); choose a subnet clear of the nodes' network", subnet, n.addr, n.name)
		}
	}
	return nil
}

// subnetFromPool returns the first /size subnet of pool that overlaps
// nothing reserved.
func subnetFromPool(pool netip.Prefix, size int, others []*shoalv1.Network, nodes []nodeAddr) (netip.Prefix, error) {
	taken := reserved(others, nodes)
	step := uint64(1) << (32 - size)
	start := u32(pool.Addr())
	end := uint64(start) + uint64(1)<<(32-pool.Bits())
	for a := uint64(start); a < end; a += step {
		cand := netip.PrefixFrom(fromU32(uint32(a)), size)
		free := true
		for _, t := range taken {
			if t.Overlaps(cand) {
				free = false
				// Skip to the end of the taken prefix when it is larger.
				if t.Bits() < size {
					a = uint64(u32(t.Masked().Addr())) + uint64(1)<<(32-t.Bits()) - step
				}
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("the address pool %s has no free /%d left", pool, size)
}

// freeVNI returns the smallest VNI from FirstVNI no overlay network holds.
func freeVNI(others []*shoalv1.Network) (uint32, error) {
	used := make(map[uint32]bool, len(others))
	for _, n := range others {
		if n.GetVni() != 0 {
			used[n.GetVni()] = true
		}
	}
	for v := uint32(FirstVNI); v <= MaxVNI; v++ {
		if !used[v] {
			return v, nil
		}
	}
	return 0, errdefs.ResourceExhaustedf("no free VXLAN id left")
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromU32(n uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// GetNetwork resolves a network by id, name or unique id prefix.
func (s *Server) GetNetwork(ctx context.Context, req *shoalv1.GetNetworkRequest) (*shoalv1.GetNetworkResponse, error) {
	r, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	nw, err := raftstore.ResolveRef[*shoalv1.Network](r, req.GetRef())
	if err != nil {
		return nil, err
	}
	return &shoalv1.GetNetworkResponse{Network: nw}, nil
}

// ListNetworks returns the networks matching the filters (id prefix, name,
// driver, label).
func (s *Server) ListNetworks(ctx context.Context, req *shoalv1.ListNetworksRequest) (*shoalv1.ListNetworksResponse, error) {
	if err := checkFilters(req.GetFilters(), "id", "name", "driver", "label"); err != nil {
		return nil, err
	}
	r, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	resp := &shoalv1.ListNetworksResponse{}
	for _, nw := range raftstore.List[*shoalv1.Network](r) {
		if networkMatches(nw, req.GetFilters()) {
			resp.Networks = append(resp.Networks, nw)
		}
	}
	return resp, nil
}

func networkMatches(nw *shoalv1.Network, f map[string]string) bool {
	for k, v := range f {
		switch k {
		case "id":
			if !strings.HasPrefix(nw.GetMeta().GetId(), v) {
				return false
			}
		case "name":
			if nw.GetSpec().GetName() != v {
				return false
			}
		case "driver":
			if nw.GetSpec().GetDriver() != v {
				return false
			}
		case "label":
			if !labelMatches(nw.GetSpec().GetLabels(), v) {
				return false
			}
		}
	}
	return true
}

// networkUsers names what keeps a network from being removed: services
// whose spec (or previous spec, for a rollback) attaches to it, and tasks
// not yet ended that still hold an address on it.
func networkUsers(r raftstore.Reader, id string) (services []string, tasks int) {
	for _, svc := range raftstore.List[*shoalv1.Service](r) {
		if specUses(svc.GetSpec(), id) || specUses(svc.GetPreviousSpec(), id) {
			services = append(services, svc.GetSpec().GetName())
		}
	}
	for _, t := range raftstore.List[*shoalv1.Task](r) {
		if t.GetStatus().GetState() >= shoalv1.TaskState_TASK_STATE_COMPLETE {
			continue
		}
		for _, a := range t.GetNetworks() {
			if a.GetNetworkId() == id {
				tasks++
				break
			}
		}
	}
	sort.Strings(services)
	return services, tasks
}

func specUses(spec *shoalv1.ServiceSpec, id string) bool {
	for _, n := range spec.GetTask().GetNetworks() {
		if n.GetTarget() == id {
			return true
		}
	}
	return false
}

// RemoveNetwork deletes a network no service uses and no live task is
// attached to; otherwise it fails naming the services.
func (s *Server) RemoveNetwork(ctx context.Context, req *shoalv1.RemoveNetworkRequest) (*shoalv1.RemoveNetworkResponse, error) {
	var id string
	s.netMu.Lock()
	defer s.netMu.Unlock()
	_, err := s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		nw, err := raftstore.ResolveRef[*shoalv1.Network](tx, req.GetRef())
		if err != nil {
			return err
		}
		id = nw.GetMeta().GetId()
		services, tasks := networkUsers(tx, id)
		if len(services) > 0 {
			return errdefs.FailedPreconditionf("network %q is in use by service(s) %s; remove them or detach them first (service update --network-rm)", nw.GetSpec().GetName(), strings.Join(services, ", "))
		}
		if tasks > 0 {
			return errdefs.FailedPreconditionf("network %q still has %d task(s) attached that have not ended; try again once they stopped", nw.GetSpec().GetName(), tasks)
		}
		return tx.Delete(raftstore.KindNetwork, id, nw.GetMeta().GetVersion())
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("network removed", "network_id", id)
	return &shoalv1.RemoveNetworkResponse{}, nil
}

// PruneNetworks removes every network that no service uses and no live
// task is attached to, in one transaction.
func (s *Server) PruneNetworks(ctx context.Context, _ *shoalv1.PruneNetworksRequest) (*shoalv1.PruneNetworksResponse, error) {
	var removed []string
	s.netMu.Lock()
	defer s.netMu.Unlock()
	_, err := s.store.Update(ctx, func(tx raftstore.WriteTx) error {
		removed = removed[:0]
		for _, nw := range raftstore.List[*shoalv1.Network](tx) {
			if svcs, tasks := networkUsers(tx, nw.GetMeta().GetId()); len(svcs) > 0 || tasks > 0 {
				continue
			}
			if err := tx.Delete(raftstore.KindNetwork, nw.GetMeta().GetId(), nw.GetMeta().GetVersion()); err != nil {
				return err
			}
			removed = append(removed, nw.GetSpec().GetName())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(removed) > 0 {
		s.log.Info("networks pruned", "names", removed)
	}
	return &shoalv1.PruneNetworksResponse{Removed: removed}, nil
}

// resolveTaskNetworks replaces each spec.task.networks[i].target (a name,
// id or unique id prefix) by the network's id, in the transaction that
// stores the service, so that a network renamed or removed later cannot
// change what the service is attached to, and checks what the networks'
// drivers allow (specrules.NetworkDrivers). spec is changed in place.
func resolveTaskNetworks(r raftstore.Reader, spec *shoalv1.ServiceSpec) error {
	var fe fieldErrors
	seen := map[string]int{}
	var drivers []string
	var internal []bool
	for i, n := range spec.GetTask().GetNetworks() {
		f := fmt.Sprintf("spec.task.networks[%d].target", i)
		nw, err := raftstore.ResolveRef[*shoalv1.Network](r, n.GetTarget())
		if err != nil {
			fe.add(f, "unknown network %q: %v", n.GetTarget(), err)
			continue
		}
		id := nw.GetMeta().GetId()
		if j, dup := seen[id]; dup {
			fe.add(f, "network %q is already networks[%d]", nw.GetSpec().GetName(), j)
			continue
		}
		seen[id] = i
		drivers = append(drivers, nw.GetSpec().GetDriver())
		internal = append(internal, nw.GetSpec().GetInternal())
		n.Target = id
	}
	if err := fe.err(); err != nil {
		return err
	}
	// Host networks stand alone and publish nothing; ingress ports need
	// an overlay (specrules.NetworkDrivers); internal networks publish
	// nothing (specrules.InternalPorts).
	p := specrules.NetworkDrivers(spec, drivers)
	p = append(p, specrules.InternalPorts(spec, internal)...)
	return invalidProblems(p)
}

// validatePoolSettings checks default_address_pool (an IPv4 CIDR, /8 to
// /29, host bits clear, clear of the nodes' bridge pool) and
// default_subnet_size (0, or a prefix length that fits the pool, at most
// /29). Networks already allocated are not moved.
func validatePoolSettings(s *shoalv1.ClusterSettings) error {
	pool := DefaultAddressPool
	if p := s.GetDefaultAddressPool(); p != "" {
		pr, err := specrules.ParseSubnet(p)
		if err != nil {
			return errdefs.InvalidArgumentf("settings.default_address_pool: %v", err)
		}
		if pr.Overlaps(NodeBridgePool) {
			return errdefs.InvalidArgumentf("settings.default_address_pool: %s overlaps %s, reserved for the nodes' default bridge", pr, NodeBridgePool)
		}
		pool = pr
	}
	if n := int(s.GetDefaultSubnetSize()); n != 0 && (n < pool.Bits() || n < specrules.MinSubnetPrefix || n > specrules.MaxSubnetPrefix) {
		return errdefs.InvalidArgumentf("settings.default_subnet_size: %d is out of range (0 for the default %d, or %d to %d for the pool %s)",
			n, DefaultSubnetSize, max(pool.Bits(), specrules.MinSubnetPrefix), specrules.MaxSubnetPrefix, pool)
	}
	return nil
}
