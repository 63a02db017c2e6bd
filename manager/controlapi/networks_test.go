package controlapi

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func createNet(t *testing.T, s *Server, spec *shoalv1.NetworkSpec) *shoalv1.Network {
	t.Helper()
	resp, err := s.CreateNetwork(context.Background(), &shoalv1.CreateNetworkRequest{Spec: spec})
	if err != nil {
		t.Fatalf("create network %s: %v", spec.GetName(), err)
	}
	return resp.GetNetwork()
}

// TestCreateNetworkAllocates: the driver defaults to overlay, a subnet comes
// from the default pool (skipping taken ones), the gateway is the first
// address, VNIs start at 4096 and a freed VNI and subnet are reused.
func TestCreateNetworkAllocates(t *testing.T) {
	s, _ := newServer(t)
	a := createNet(t, s, &shoalv1.NetworkSpec{Name: "a"})
	if a.GetSpec().GetDriver() != "overlay" || a.GetSubnet() != "10.220.0.0/24" || a.GetGateway() != "10.220.0.1" || a.GetVni() != 4096 {
		t.Fatalf("a = driver %q subnet %s gw %s vni %d", a.GetSpec().GetDriver(), a.GetSubnet(), a.GetGateway(), a.GetVni())
	}
	// A given subnet inside the pool is skipped by later allocations.
	createNet(t, s, &shoalv1.NetworkSpec{Name: "given", Subnet: "10.220.1.0/24", Gateway: "10.220.1.254"})
	c := createNet(t, s, &shoalv1.NetworkSpec{Name: "c"})
	if c.GetSubnet() != "10.220.2.0/24" || c.GetVni() != 4098 {
		t.Fatalf("c = %s vni %d, want 10.220.2.0/24 vni 4098", c.GetSubnet(), c.GetVni())
	}
	br := createNet(t, s, &shoalv1.NetworkSpec{Name: "br", Driver: "bridge", BridgeName: "br-app"})
	if br.GetVni() != 0 || br.GetSubnet() != "10.220.3.0/24" {
		t.Fatalf("bridge: vni %d subnet %s, want no VNI, 10.220.3.0/24", br.GetVni(), br.GetSubnet())
	}
	h := createNet(t, s, &shoalv1.NetworkSpec{Name: "hostnet", Driver: "host"})
	if h.GetVni() != 0 || h.GetSubnet() != "" || h.GetGateway() != "" {
		t.Fatalf("host: %v", h)
	}
	if _, err := s.RemoveNetwork(context.Background(), &shoalv1.RemoveNetworkRequest{Ref: "a"}); err != nil {
		t.Fatal(err)
	}
	d := createNet(t, s, &shoalv1.NetworkSpec{Name: "d"})
	if d.GetVni() != 4096 || d.GetSubnet() != "10.220.0.0/24" {
		t.Fatalf("after rm: d = %s vni %d, want the freed 10.220.0.0/24 and 4096", d.GetSubnet(), d.GetVni())
	}
}

// TestCreateNetworkRefuses: a name clash, overlapping subnets (with another
// network, with the node bridge pool), invalid specs; nothing is stored.
func TestCreateNetworkRefuses(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	createNet(t, s, &shoalv1.NetworkSpec{Name: "a", Subnet: "10.50.0.0/16"})
	for _, tt := range []struct {
		spec *shoalv1.NetworkSpec
		code codes.Code
		msg  string
	}{
		{&shoalv1.NetworkSpec{Name: "a"}, codes.AlreadyExists, `spec.name: a network named "a" exists`},
		{&shoalv1.NetworkSpec{Name: "b", Subnet: "10.50.3.0/24"}, codes.InvalidArgument, `spec.subnet: 10.50.3.0/24 overlaps the subnet 10.50.0.0/16 of network "a"`},
		{&shoalv1.NetworkSpec{Name: "b", Subnet: "10.0.0.0/8"}, codes.InvalidArgument, `spec.subnet: 10.0.0.0/8 overlaps`},
		{&shoalv1.NetworkSpec{Name: "b", Subnet: "10.213.5.0/24"}, codes.InvalidArgument, "reserved for the nodes' default bridge"},
		{&shoalv1.NetworkSpec{Name: "b", Mtu: 100}, codes.InvalidArgument, "spec.mtu"},
		{&shoalv1.NetworkSpec{Name: "b", Driver: "weave"}, codes.InvalidArgument, "spec.driver"},
		{&shoalv1.NetworkSpec{Name: "b", Subnet: "10.60.0.0/24", Gateway: "10.60.0.255"}, codes.InvalidArgument, "spec.gateway"},
	} {
		_, err := s.CreateNetwork(ctx, &shoalv1.CreateNetworkRequest{Spec: tt.spec})
		wantCode(t, err, tt.code, tt.msg)
	}
	if n := len(raftstore.List[*shoalv1.Network](st.View())); n != 1 {
		t.Fatalf("%d networks stored, want 1", n)
	}
}

// TestCreateNetworkPoolExhausted: a /28 pool of /29 subnets holds two.
func TestCreateNetworkPoolExhausted(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
		c := proto.Clone(raftstore.List[*shoalv1.Cluster](tx)[0]).(*shoalv1.Cluster)
		c.Settings = &shoalv1.ClusterSettings{DefaultAddressPool: "10.99.0.0/28", DefaultSubnetSize: 29}
		return tx.Update(c)
	}); err != nil {
		t.Fatal(err)
	}
	if got := createNet(t, s, &shoalv1.NetworkSpec{Name: "n1"}).GetSubnet(); got != "10.99.0.0/29" {
		t.Fatalf("n1 subnet %s", got)
	}
	createNet(t, s, &shoalv1.NetworkSpec{Name: "n2"})
	_, err := s.CreateNetwork(ctx, &shoalv1.CreateNetworkRequest{Spec: &shoalv1.NetworkSpec{Name: "n3"}})
	wantCode(t, err, codes.ResourceExhausted, "the address pool 10.99.0.0/28 has no free /29 left")
}

// TestSubnetFromPoolSkipsLargeTaken: a taken /16 inside a /8 pool is
// skipped in one step, not /24 by /24.
func TestSubnetFromPoolSkipsLargeTaken(t *testing.T) {
	others := []*shoalv1.Network{{Spec: &shoalv1.NetworkSpec{Name: "big"}, Subnet: "10.0.0.0/16"}}
	got, err := subnetFromPool(netip.MustParsePrefix("10.0.0.0/8"), 24, others, nil)
	if err != nil || got.String() != "10.1.0.0/24" {
		t.Fatalf("got %v %v, want 10.1.0.0/24", got, err)
	}
	// 10.213.0.0/16 (the node bridges) is skipped too.
	others = nil
	for i := 0; i < 256; i++ {
		others = append(others, &shoalv1.Network{Subnet: fmt.Sprintf("10.212.%d.0/24", i)})
	}
	got, err = subnetFromPool(netip.MustParsePrefix("10.212.0.0/15"), 24, others, nil)
	if err == nil {
		t.Fatalf("got %v, want exhausted (10.212/16 taken, 10.213/16 reserved)", got)
	}
}

// TestNetworkInUse: services attach by name, the stored spec holds the id;
// rm of a used network names the services, prune keeps it and removes
// the unused; an unknown network in a service names the field.
func TestNetworkInUse(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	front := createNet(t, s, &shoalv1.NetworkSpec{Name: "front"})
	createNet(t, s, &shoalv1.NetworkSpec{Name: "unused"})

	spec := validSpec()
	spec.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "front", Aliases: []string{"web"}}}
	resp, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetService().GetSpec().GetTask().GetNetworks()[0].GetTarget(); got != front.GetMeta().GetId() {
		t.Fatalf("stored target %q, want the network id %q", got, front.GetMeta().GetId())
	}
	bad := validSpec()
	bad.Name = "other"
	bad.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "front"}, {Target: "nosuch"}}
	_, err = s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: bad})
	wantCode(t, err, codes.InvalidArgument, `spec.task.networks[1].target: unknown network "nosuch"`)
	bad.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "front"}, {Target: front.GetMeta().GetId()}}
	_, err = s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: bad})
	wantCode(t, err, codes.InvalidArgument, `spec.task.networks[1].target: network "front" is already networks[0]`)

	_, err = s.RemoveNetwork(ctx, &shoalv1.RemoveNetworkRequest{Ref: "front"})
	wantCode(t, err, codes.FailedPrecondition, `network "front" is in use by service(s) web`)

	pr, err := s.PruneNetworks(ctx, &shoalv1.PruneNetworksRequest{})
	if err != nil || !slices.Equal(pr.GetRemoved(), []string{"unused"}) {
		t.Fatalf("prune: %v %v, want [unused]", pr.GetRemoved(), err)
	}

	// Update by name again: the same id, spec_version unchanged.
	upd := proto.Clone(spec).(*shoalv1.ServiceSpec)
	uresp, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: resp.GetService().GetMeta().GetId(), Spec: upd, IgnoreVersion: true})
	if err != nil {
		t.Fatal(err)
	}
	if uresp.GetService().GetSpecVersion() != resp.GetService().GetSpecVersion() {
		t.Errorf("an update naming the same network by name bumped spec_version")
	}
	// Detach, and the previous spec still pins the network (rollback).
	upd.Task.Networks = nil
	if _, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: resp.GetService().GetMeta().GetId(), Spec: upd, IgnoreVersion: true}); err != nil {
		t.Fatal(err)
	}
	_, err = s.RemoveNetwork(ctx, &shoalv1.RemoveNetworkRequest{Ref: "front"})
	wantCode(t, err, codes.FailedPrecondition, "web")
	if _, err := s.RemoveService(ctx, &shoalv1.RemoveServiceRequest{Ref: "web"}); err != nil {
		t.Fatal(err)
	}
	// A live task still attached holds it.
	if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}, ServiceId: "gone",
			Status:   &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING},
			Networks: []*shoalv1.NetworkAttachment{{NetworkId: front.GetMeta().GetId(), Address: "10.220.0.2/24"}}})
	}); err != nil {
		t.Fatal(err)
	}
	_, err = s.RemoveNetwork(ctx, &shoalv1.RemoveNetworkRequest{Ref: "front"})
	wantCode(t, err, codes.FailedPrecondition, "1 task(s) attached")
	if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error { return tx.Delete(raftstore.KindTask, "t1", 0) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveNetwork(ctx, &shoalv1.RemoveNetworkRequest{Ref: "front"}); err != nil {
		t.Fatal(err)
	}
}

func TestListNetworksFilters(t *testing.T) {
	s, _ := newServer(t)
	ctx := context.Background()
	createNet(t, s, &shoalv1.NetworkSpec{Name: "a", Labels: map[string]string{"env": "prod"}})
	createNet(t, s, &shoalv1.NetworkSpec{Name: "b", Driver: "bridge"})
	for f, want := range map[string][]string{"driver=bridge": {"b"}, "label=env=prod": {"a"}, "name=a": {"a"}, "": {"a", "b"}} {
		filters := map[string]string{}
		if k, v, ok := cut(f); ok {
			filters[k] = v
		}
		resp, err := s.ListNetworks(ctx, &shoalv1.ListNetworksRequest{Filters: filters})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, n := range resp.GetNetworks() {
			got = append(got, n.GetSpec().GetName())
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("filter %q: %v, want %v", f, got, want)
		}
	}
	_, err := s.ListNetworks(ctx, &shoalv1.ListNetworksRequest{Filters: map[string]string{"scope": "x"}})
	wantCode(t, err, codes.InvalidArgument, "unknown key")
	g, err := s.GetNetwork(ctx, &shoalv1.GetNetworkRequest{Ref: "b"})
	if err != nil || g.GetNetwork().GetSpec().GetName() != "b" {
		t.Fatal(g, err)
	}
}

func cut(f string) (string, string, bool) {
	for i := 0; i < len(f); i++ {
		if f[i] == '=' {
			return f[:i], f[i+1:], true
		}
	}
	return "", "", false
}

// TestGossipKeysNeverLeave: the cluster's gossip keys are stripped like
// its CA key from GetCluster.
func TestGossipKeysNeverLeave(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
		c := proto.Clone(raftstore.List[*shoalv1.Cluster](tx)[0]).(*shoalv1.Cluster)
		c.GossipKeys = [][]byte{[]byte("0123456789abcdef0123456789abcdef")}
		return tx.Update(c)
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := s.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetCluster().GetGossipKeys()) != 0 {
		t.Fatal("GetCluster returned the gossip keys")
	}
}

func TestValidatePoolSettings(t *testing.T) {
	for _, tt := range []struct {
		set  *shoalv1.ClusterSettings
		want string // "" valid
	}{
		{&shoalv1.ClusterSettings{}, ""},
		{&shoalv1.ClusterSettings{DefaultAddressPool: "10.128.0.0/12", DefaultSubnetSize: 26}, ""},
		{&shoalv1.ClusterSettings{DefaultAddressPool: "10.128.0.1/12"}, "settings.default_address_pool"},
		{&shoalv1.ClusterSettings{DefaultAddressPool: "10.0.0.0/8"}, "nodes' default bridge"},
		{&shoalv1.ClusterSettings{DefaultAddressPool: "127.0.0.0/8"}, "settings.default_address_pool: \"127.0.0.0/8\" overlaps 127.0.0.0/8 (loopback)"},
		{&shoalv1.ClusterSettings{DefaultSubnetSize: 12}, "settings.default_subnet_size: 12 is out of range"},
		{&shoalv1.ClusterSettings{DefaultSubnetSize: 30}, "settings.default_subnet_size"},
	} {
		err := validateSettings(tt.set)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%v: %v", tt.set, err)
			}
			continue
		}
		wantCode(t, err, codes.InvalidArgument, tt.want)
	}
}

// TestServiceNetworkDriverRules: services on bridge and host networks are
// stored; a host network with another network or with published ports,
// and an ingress port with bridge networks only, are refused at create and
// at update with the field, and nothing is stored.
func TestServiceNetworkDriverRules(t *testing.T) {
	s, _ := newServer(t)
	ctx := context.Background()
	createNet(t, s, &shoalv1.NetworkSpec{Name: "ov"})
	createNet(t, s, &shoalv1.NetworkSpec{Name: "br", Driver: "bridge", BridgeName: "br-app"})
	createNet(t, s, &shoalv1.NetworkSpec{Name: "hostnet", Driver: "host"})
	ingress := &shoalv1.PortConfig{PublishedPort: 8080, TargetPort: 8080}
	hostPort := &shoalv1.PortConfig{PublishedPort: 9090, TargetPort: 8080, PublishMode: "host"}

	for _, tt := range []struct {
		nets  []string
		ports []*shoalv1.PortConfig
		want  string
	}{
		{[]string{"ov", "hostnet"}, nil, `spec.task.networks[1].target: a host network shares the node's network namespace`},
		{[]string{"hostnet"}, []*shoalv1.PortConfig{hostPort}, `spec.endpoint.ports[0]: a service on a host network publishes no port`},
		{[]string{"br"}, []*shoalv1.PortConfig{ingress}, `spec.endpoint.ports[0].publish_mode: an ingress port needs an overlay network`},
	} {
		spec := validSpec()
		spec.Name = "bad"
		for _, n := range tt.nets {
			spec.Task.Networks = append(spec.Task.Networks, &shoalv1.NetworkAttachmentConfig{Target: n})
		}
		spec.Endpoint = &shoalv1.EndpointSpec{Ports: tt.ports}
		_, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec})
		wantCode(t, err, codes.InvalidArgument, tt.want)
	}
	if l, err := s.ListServices(ctx, &shoalv1.ListServicesRequest{}); err != nil || len(l.GetServices()) != 0 {
		t.Fatalf("stored: %v %v", l.GetServices(), err)
	}

	for i, tt := range []struct {
		nets  []string
		ports []*shoalv1.PortConfig
	}{
		{[]string{"hostnet"}, nil},
		{[]string{"br"}, []*shoalv1.PortConfig{hostPort}},
		{[]string{"br", "ov"}, []*shoalv1.PortConfig{ingress}},
	} {
		spec := validSpec()
		spec.Name = fmt.Sprintf("ok%d", i)
		for _, n := range tt.nets {
			spec.Task.Networks = append(spec.Task.Networks, &shoalv1.NetworkAttachmentConfig{Target: n})
		}
		spec.Endpoint = &shoalv1.EndpointSpec{Ports: tt.ports}
		resp, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec})
		if err != nil {
			t.Fatalf("%v: %v", tt.nets, err)
		}
		if i != 1 {
			continue
		}
		// Update: the bridge service may not switch its host port to
		// ingress, nor add the host network.
		upd := proto.Clone(resp.GetService().GetSpec()).(*shoalv1.ServiceSpec)
		upd.Endpoint.Ports[0].PublishMode = "ingress"
		_, err = s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: resp.GetService().GetMeta().GetId(), Spec: upd, IgnoreVersion: true})
		wantCode(t, err, codes.InvalidArgument, `spec.endpoint.ports[0].publish_mode: an ingress port needs an overlay network`)
		upd = proto.Clone(resp.GetService().GetSpec()).(*shoalv1.ServiceSpec)
		upd.Endpoint = nil
		upd.Task.Networks = append(upd.Task.Networks, &shoalv1.NetworkAttachmentConfig{Target: "hostnet"})
		_, err = s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: resp.GetService().GetMeta().GetId(), Spec: upd, IgnoreVersion: true})
		wantCode(t, err, codes.InvalidArgument, `spec.task.networks[1].target: a host network shares`)
	}
}

// TestCreateBridgeNetworkNameClash: two bridge networks cannot share a
// Linux bridge name (given, or given equal to another's derived one).
func TestCreateBridgeNetworkNameClash(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	createNet(t, s, &shoalv1.NetworkSpec{Name: "b1", Driver: "bridge", BridgeName: "br-app"})
	_, err := s.CreateNetwork(ctx, &shoalv1.CreateNetworkRequest{Spec: &shoalv1.NetworkSpec{Name: "b2", Driver: "bridge", BridgeName: "br-app"}})
	wantCode(t, err, codes.AlreadyExists, `spec.bridge_name: the bridge "br-app" is network "b1"'s already`)
	createNet(t, s, &shoalv1.NetworkSpec{Name: "b3", Driver: "bridge"})
	if n := len(raftstore.List[*shoalv1.Network](st.View())); n != 2 {
		t.Fatalf("%d networks stored, want 2", n)
	}
}

// TestCreateNetworkConcurrent: creates racing each other never get the
// same VNI or overlapping subnets. Each transaction is built on a view of
// the store and a create of a new id conflicts with nothing in the FSM, so
// without serialisation two creates read the same free VNI and /24.
func TestCreateNetworkConcurrent(t *testing.T) {
	s, _ := newServer(t)
	const n = 64
	nets := make([]*shoalv1.Network, n)
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		go func(i int) {
			<-start
			resp, err := s.CreateNetwork(context.Background(), &shoalv1.CreateNetworkRequest{Spec: &shoalv1.NetworkSpec{Name: fmt.Sprintf("race%d", i)}})
			nets[i] = resp.GetNetwork()
			errs <- err
		}(i)
	}
	close(start)
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("create: %v", err)
		}
	}
	vnis := map[uint32]string{}
	for i, a := range nets {
		if b, dup := vnis[a.GetVni()]; dup {
			t.Errorf("%s and %s both have VNI %d", b, a.GetSpec().GetName(), a.GetVni())
		}
		vnis[a.GetVni()] = a.GetSpec().GetName()
		pa := netip.MustParsePrefix(a.GetSubnet())
		for _, b := range nets[:i] {
			if netip.MustParsePrefix(b.GetSubnet()).Overlaps(pa) {
				t.Errorf("%s (%s) overlaps %s (%s)", a.GetSpec().GetName(), a.GetSubnet(), b.GetSpec().GetName(), b.GetSubnet())
			}
		}
	}
}

// TestCreateNetworkAvoidsNodeAddresses: a network's subnet never holds a
// node's underlay address (tasks would get the addresses of nodes, and
// the gateway's route on each node would shadow its own LAN): an
// automatic subnet skips it, a given one is refused naming the node.
func TestCreateNetworkAvoidsNodeAddresses(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	for id, addr := range map[string]string{"n1": "10.220.0.7:4243", "n2": "10.60.1.5", "n3": ""} {
		if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
			return tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: id}, Role: shoalv1.NodeRole_NODE_ROLE_WORKER,
				Spec: &shoalv1.NodeSpec{Name: id}, Status: &shoalv1.NodeStatus{Addr: addr}})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if a := createNet(t, s, &shoalv1.NetworkSpec{Name: "auto"}); a.GetSubnet() != "10.220.1.0/24" {
		t.Fatalf("automatic subnet %s, want 10.220.1.0/24 (10.220.0.0/24 holds node n1)", a.GetSubnet())
	}
	for _, spec := range []*shoalv1.NetworkSpec{
		{Name: "given", Subnet: "10.60.0.0/16"},
		{Name: "local", Driver: "bridge", Subnet: "10.60.1.0/29"},
	} {
		_, err := s.CreateNetwork(ctx, &shoalv1.CreateNetworkRequest{Spec: spec})
		wantCode(t, err, codes.InvalidArgument, `spec.subnet: `+spec.GetSubnet()+` holds the address 10.60.1.5 of node "n2"`)
	}
	if n := len(raftstore.List[*shoalv1.Network](st.View())); n != 1 {
		t.Fatalf("%d networks stored, want 1", n)
	}
}

// TestServicePortsOnInternalNetwork: a service with a published port on
// an internal network (overlay or bridge, alone or beside another) is
// refused at create and update: its task has no default route, the port
// would never answer.
func TestServicePortsOnInternalNetwork(t *testing.T) {
	s, _ := newServer(t)
	ctx := context.Background()
	createNet(t, s, &shoalv1.NetworkSpec{Name: "ov"})
	createNet(t, s, &shoalv1.NetworkSpec{Name: "ovint", Internal: true})
	createNet(t, s, &shoalv1.NetworkSpec{Name: "brint", Driver: "bridge", Internal: true})
	hostPort := &shoalv1.PortConfig{PublishedPort: 9090, TargetPort: 8080, PublishMode: "host"}
	ingress := &shoalv1.PortConfig{PublishedPort: 8080, TargetPort: 8080}
	for _, tt := range []struct {
		nets []string
		port *shoalv1.PortConfig
		want string
	}{
		{[]string{"ovint"}, hostPort, "spec.endpoint.ports[0]: spec.task.networks[0] is an internal network"},
		{[]string{"ov", "ovint"}, ingress, "spec.endpoint.ports[0]: spec.task.networks[1] is an internal network"},
		{[]string{"brint"}, hostPort, "spec.endpoint.ports[0]: spec.task.networks[0] is an internal network"},
	} {
		spec := validSpec()
		spec.Name = "bad"
		for _, n := range tt.nets {
			spec.Task.Networks = append(spec.Task.Networks, &shoalv1.NetworkAttachmentConfig{Target: n})
		}
		spec.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{tt.port}}
		_, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec})
		wantCode(t, err, codes.InvalidArgument, tt.want)
	}
	spec := validSpec()
	spec.Name = "priv"
	spec.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "ovint"}}
	resp, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	upd := proto.Clone(resp.GetService().GetSpec()).(*shoalv1.ServiceSpec)
	upd.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{hostPort}}
	_, err = s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: resp.GetService().GetMeta().GetId(), Spec: upd, IgnoreVersion: true})
	wantCode(t, err, codes.InvalidArgument, "spec.endpoint.ports[0]: spec.task.networks[0] is an internal network")
}
