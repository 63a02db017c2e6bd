package specrules

import (
	"net/netip"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestNetwork(t *testing.T) {
	for _, tt := range []struct {
		name string
		mod  func(*shoalv1.NetworkSpec)
		want []string // substrings of the error; nil: valid
	}{
		{"minimal", func(*shoalv1.NetworkSpec) {}, nil},
		{"full overlay", func(s *shoalv1.NetworkSpec) {
			s.Driver, s.Subnet, s.Gateway, s.Mtu = "overlay", "10.9.0.0/24", "10.9.0.254", 1450
		}, nil},
		{"no name", func(s *shoalv1.NetworkSpec) { s.Name = "" }, []string{"spec.name: required"}},
		{"bad name", func(s *shoalv1.NetworkSpec) { s.Name = "a b" }, []string{"spec.name", "not a valid name"}},
		{"unknown driver", func(s *shoalv1.NetworkSpec) { s.Driver = "macvlan" }, []string{"spec.driver: must be overlay, bridge or host"}},
		{"subnet not CIDR", func(s *shoalv1.NetworkSpec) { s.Subnet = "10.0.0.1" }, []string{"spec.subnet", "not an IPv4 CIDR"}},
		{"subnet IPv6", func(s *shoalv1.NetworkSpec) { s.Subnet = "fd00::/64" }, []string{"spec.subnet", "not an IPv4 CIDR"}},
		{"subnet /30", func(s *shoalv1.NetworkSpec) { s.Subnet = "10.0.0.0/30" }, []string{"spec.subnet", "prefix length must be 8 to 29, got 30"}},
		{"subnet /7", func(s *shoalv1.NetworkSpec) { s.Subnet = "10.0.0.0/7" }, []string{"prefix length"}},
		{"subnet host bits", func(s *shoalv1.NetworkSpec) { s.Subnet = "10.0.0.5/24" }, []string{"host bits set", "10.0.0.0/24"}},
		{"subnet /29", func(s *shoalv1.NetworkSpec) { s.Subnet = "10.0.0.8/29" }, nil},
		// Addresses no network can use: the gateway on a node bridge
		// would take over loopback (and the tasks' DNS at 127.0.0.11),
		// multicast or "this network".
		{"subnet loopback", func(s *shoalv1.NetworkSpec) { s.Subnet = "127.0.0.0/24" }, []string{"spec.subnet", "127.0.0.0/8 (loopback)"}},
		{"subnet inside loopback", func(s *shoalv1.NetworkSpec) { s.Subnet = "127.5.0.0/16" }, []string{"spec.subnet", "loopback"}},
		{"subnet this-network", func(s *shoalv1.NetworkSpec) { s.Subnet = "0.0.0.0/8" }, []string{"spec.subnet", "0.0.0.0/8"}},
		{"subnet link-local", func(s *shoalv1.NetworkSpec) { s.Subnet = "169.254.1.0/24" }, []string{"spec.subnet", "link-local"}},
		{"subnet multicast", func(s *shoalv1.NetworkSpec) { s.Subnet = "239.1.0.0/16" }, []string{"spec.subnet", "multicast"}},
		{"subnet reserved", func(s *shoalv1.NetworkSpec) { s.Subnet = "250.0.0.0/24" }, []string{"spec.subnet", "240.0.0.0/4"}},
		{"subnet public", func(s *shoalv1.NetworkSpec) { s.Subnet = "100.64.0.0/24" }, nil},
		{"gateway outside", func(s *shoalv1.NetworkSpec) { s.Subnet, s.Gateway = "10.0.0.0/24", "10.0.1.1" }, []string{"spec.gateway", "not inside the subnet"}},
		{"gateway network addr", func(s *shoalv1.NetworkSpec) { s.Subnet, s.Gateway = "10.0.0.0/24", "10.0.0.0" }, []string{"spec.gateway", "network address"}},
		{"gateway broadcast", func(s *shoalv1.NetworkSpec) { s.Subnet, s.Gateway = "10.0.0.0/24", "10.0.0.255" }, []string{"spec.gateway", "broadcast"}},
		{"gateway without subnet", func(s *shoalv1.NetworkSpec) { s.Gateway = "10.0.0.1" }, []string{"spec.gateway: needs spec.subnet"}},
		{"gateway garbage", func(s *shoalv1.NetworkSpec) { s.Subnet, s.Gateway = "10.0.0.0/24", "x" }, []string{"spec.gateway", "not an IPv4 address"}},
		{"mtu low", func(s *shoalv1.NetworkSpec) { s.Mtu = 575 }, []string{"spec.mtu: must be 0 (the default) or 576 to 9000, got 575"}},
		{"mtu high", func(s *shoalv1.NetworkSpec) { s.Mtu = 9001 }, []string{"spec.mtu"}},
		{"mtu bounds", func(s *shoalv1.NetworkSpec) { s.Mtu = 9000 }, nil},
		{"bridge name on overlay", func(s *shoalv1.NetworkSpec) { s.BridgeName = "br0" }, []string{"spec.bridge_name: only for the bridge driver"}},
		{"bridge name", func(s *shoalv1.NetworkSpec) { s.Driver, s.BridgeName = "bridge", "br-app" }, nil},
		{"bridge name too long", func(s *shoalv1.NetworkSpec) { s.Driver, s.BridgeName = "bridge", "br-0123456789abc" }, []string{"spec.bridge_name", "1 to 15 bytes"}},
		{"bridge name slash", func(s *shoalv1.NetworkSpec) { s.Driver, s.BridgeName = "bridge", "br/0" }, []string{"spec.bridge_name", "no '/'"}},
		// The kernel takes a '%' in a new link's name as a format: "br%d"
		// creates "br0" (then "br1", … each time), never "br%d".
		{"bridge name percent", func(s *shoalv1.NetworkSpec) { s.Driver, s.BridgeName = "bridge", "br%d" }, []string{"spec.bridge_name", "'%'"}},
		{"bridge name lo", func(s *shoalv1.NetworkSpec) { s.Driver, s.BridgeName = "bridge", "lo" }, []string{"spec.bridge_name", "loopback"}},
		{"bridge name of an overlay bridge", func(s *shoalv1.NetworkSpec) { s.Driver, s.BridgeName = "bridge", "shb-4096" }, []string{"spec.bridge_name", `starting with "shb-"`}},
		{"bridge name of a derived bridge", func(s *shoalv1.NetworkSpec) { s.Driver, s.BridgeName = "bridge", "shbr-abc" }, []string{"spec.bridge_name", `starting with "shbr-"`}},
		{"bridge name of a task veth", func(s *shoalv1.NetworkSpec) { s.Driver, s.BridgeName = "bridge", "sh0123456789ab" }, []string{"spec.bridge_name", "task veth"}},
		{"host with mtu", func(s *shoalv1.NetworkSpec) { s.Driver, s.Mtu = "host", 1400 }, []string{"spec.mtu: a host network has no devices"}},
		{"host", func(s *shoalv1.NetworkSpec) { s.Driver = "host" }, nil},
		// Not "needs spec.subnet", which a host network may not have either.
		{"host with gateway", func(s *shoalv1.NetworkSpec) { s.Driver, s.Gateway = "host", "10.0.0.1" }, []string{"spec.gateway: a host network has no gateway"}},
		{"host with subnet", func(s *shoalv1.NetworkSpec) { s.Driver, s.Subnet = "host", "10.0.0.0/24" }, []string{"spec.subnet: a host network has no subnet"}},
		{"bad label", func(s *shoalv1.NetworkSpec) { s.Labels = map[string]string{"": "x"} }, []string{"spec.labels"}},
		{"several", func(s *shoalv1.NetworkSpec) { s.Name = ""; s.Mtu = 1 }, []string{"spec.name", "spec.mtu"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &shoalv1.NetworkSpec{Name: "front"}
			tt.mod(s)
			err := Network(s).Err()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want %q, got nil", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestBroadcast(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.0/24": "10.0.0.255", "10.8.0.0/13": "10.15.255.255", "192.168.1.8/29": "192.168.1.15"} {
		if got := Broadcast(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("Broadcast(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestDefaultBridgeName(t *testing.T) {
	n := &shoalv1.Network{Meta: &shoalv1.Meta{Id: "k3j4h5g6f7d8s9a0"}, Spec: &shoalv1.NetworkSpec{Driver: DriverBridge}}
	if got := BridgeName(n); got != "shbr-k3j4h5g6f7" || len(got) > MaxIfaceName {
		t.Errorf("BridgeName = %q, want shbr-k3j4h5g6f7 (15 bytes)", got)
	}
	n.Spec.BridgeName = "shtest0"
	if got := BridgeName(n); got != "shtest0" {
		t.Errorf("BridgeName with spec.bridge_name = %q, want shtest0", got)
	}
	if got := DefaultBridgeName("abc"); got != "shbr-abc" {
		t.Errorf("DefaultBridgeName(abc) = %q", got)
	}
}

func TestNetworkDrivers(t *testing.T) {
	ingress := &shoalv1.PortConfig{PublishedPort: 8080, TargetPort: 80}
	host := &shoalv1.PortConfig{PublishedPort: 9090, TargetPort: 80, PublishMode: "host"}
	for _, tt := range []struct {
		name    string
		drivers []string
		ports   []*shoalv1.PortConfig
		want    []string // substrings; nil: valid
	}{
		{"overlay with ingress", []string{"overlay"}, []*shoalv1.PortConfig{ingress}, nil},
		{"default driver with ingress", []string{""}, []*shoalv1.PortConfig{ingress}, nil},
		{"bridge alone", []string{"bridge"}, nil, nil},
		{"bridge with host port", []string{"bridge"}, []*shoalv1.PortConfig{host}, nil},
		{"bridge with ingress port", []string{"bridge"}, []*shoalv1.PortConfig{host, ingress},
			[]string{"spec.endpoint.ports[1].publish_mode: an ingress port needs an overlay network"}},
		{"bridge and overlay with ingress", []string{"bridge", "overlay"}, []*shoalv1.PortConfig{ingress}, nil},
		{"host alone", []string{"host"}, nil, nil},
		{"host with another", []string{"overlay", "host"}, nil,
			[]string{"spec.task.networks[1].target: a host network shares the node's network namespace: it must be the service's only network (2 given)"}},
		{"host with ports", []string{"host"}, []*shoalv1.PortConfig{host, ingress},
			[]string{"spec.endpoint.ports[0]: a service on a host network publishes no port", "spec.endpoint.ports[1]"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spec := &shoalv1.ServiceSpec{Endpoint: &shoalv1.EndpointSpec{Ports: tt.ports}}
			err := NetworkDrivers(spec, tt.drivers).Err()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want %q, got nil", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestNetworkDriversHostAliases: an alias on a host network is refused (a
// host-network task has no address and no 127.0.0.11: the name would
// answer nothing); on a bridge network it is fine.
func TestNetworkDriversHostAliases(t *testing.T) {
	spec := func() *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Task: &shoalv1.TaskSpec{Networks: []*shoalv1.NetworkAttachmentConfig{{Target: "n", Aliases: []string{"foo"}}}}}
	}
	err := NetworkDrivers(spec(), []string{"host"}).Err()
	if err == nil || !strings.Contains(err.Error(), "spec.task.networks[0].aliases: a host network has no names") {
		t.Fatalf("alias on a host network: %v", err)
	}
	if err := NetworkDrivers(spec(), []string{"bridge"}).Err(); err != nil {
		t.Fatalf("alias on a bridge network: %v", err)
	}
}

// TestInternalPorts: a published port is refused when one of the
// service's networks is internal (its task has no default route, so the
// port could never answer); without ports, or with no internal network,
// anything goes.
func TestInternalPorts(t *testing.T) {
	port := &shoalv1.PortConfig{PublishedPort: 9090, TargetPort: 80, PublishMode: "host"}
	for _, tt := range []struct {
		name     string
		internal []bool
		ports    []*shoalv1.PortConfig
		want     string // "" valid
	}{
		{"no internal", []bool{false, false}, []*shoalv1.PortConfig{port}, ""},
		{"internal, no port", []bool{true}, nil, ""},
		{"internal with a port", []bool{true}, []*shoalv1.PortConfig{port}, "spec.endpoint.ports[0]: spec.task.networks[0] is an internal network"},
		{"mixed with ports", []bool{false, true}, []*shoalv1.PortConfig{port, port}, "spec.endpoint.ports[1]: spec.task.networks[1] is an internal network"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spec := &shoalv1.ServiceSpec{Endpoint: &shoalv1.EndpointSpec{Ports: tt.ports}}
			err := InternalPorts(spec, tt.internal).Err()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}
