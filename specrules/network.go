package specrules

import (
	"fmt"
	"net/netip"
	"strings"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Network drivers.
const (
	DriverOverlay = "overlay" // VXLAN, cluster-wide (the default)
	DriverBridge  = "bridge"  // node-local bridge with a chosen name
	DriverHost    = "host"    // the task shares the node's namespace
)

// Bounds of a network spec.
const (
	MinSubnetPrefix = 8
	MaxSubnetPrefix = 29
	MinMTU          = 576
	MaxMTU          = 9000
	MaxAliases      = 32
	// MaxIfaceName is the kernel's IFNAMSIZ-1.
	MaxIfaceName = 15
)

// Network checks a network spec. The Control API fills the driver
// (overlay) and, without a subnet, allocates one from the cluster's pool.
func Network(spec *shoalv1.NetworkSpec) Problems {
	var p Problems
	if spec == nil {
		p.Add("spec", "required")
		return p
	}
	switch n := spec.GetName(); {
	case n == "":
		p.Add("spec.name", "required")
	case !ValidName(n):
		p.Add("spec.name", "%q is not a valid name (letters, digits, '_', '.', '-'; at most 63; starts with a letter or digit)", n)
	}
	labels(&p, "spec.labels", spec.GetLabels())
	driver := spec.GetDriver()
	switch driver {
	case "", DriverOverlay, DriverBridge, DriverHost:
	default:
		p.Add("spec.driver", "must be overlay, bridge or host, got %q", driver)
	}
	var subnet netip.Prefix
	if s := spec.GetSubnet(); s != "" {
		pr, err := ParseSubnet(s)
		if err != nil {
			p.Add("spec.subnet", "%v", err)
		} else {
			subnet = pr
		}
	}
	if g := spec.GetGateway(); g != "" {
		a, err := netip.ParseAddr(g)
		switch {
		case driver == DriverHost:
			p.Add("spec.gateway", "a host network has no gateway (its tasks use the node's routes)")
		case err != nil || !a.Is4():
			p.Add("spec.gateway", "%q is not an IPv4 address", g)
		case spec.GetSubnet() == "":
			p.Add("spec.gateway", "needs spec.subnet")
		case subnet.IsValid():
			if err := GatewayIn(subnet, a); err != nil {
				p.Add("spec.gateway", "%v", err)
			}
		}
	}
	if m := spec.GetMtu(); m != 0 && (m < MinMTU || m > MaxMTU) {
		p.Add("spec.mtu", "must be 0 (the default) or %d to %d, got %d", MinMTU, MaxMTU, m)
	}
	if b := spec.GetBridgeName(); b != "" {
		if driver != DriverBridge {
			p.Add("spec.bridge_name", "only for the bridge driver")
		} else if err := IfaceName(b); err != nil {
			p.Add("spec.bridge_name", "%v", err)
		} else if b == "lo" {
			// Every node has it and it is never a bridge: the tasks
			// would only fail on every node.
			p.Add("spec.bridge_name", "%q is the loopback device, not a bridge", b)
		} else if pre := reservedIfacePrefix(b); pre != "" {
			p.Add("spec.bridge_name", "%q: names starting with %s are Shoal's own devices", b, pre)
		}
	}
	if driver == DriverHost {
		if spec.GetSubnet() != "" {
			p.Add("spec.subnet", "a host network has no subnet")
		}
		if spec.GetInternal() {
			p.Add("spec.internal", "a host network cannot be internal")
		}
		if spec.GetMtu() != 0 {
			p.Add("spec.mtu", "a host network has no devices of its own (the node's MTU applies)")
		}
	}
	return p
}

// BridgeNamePrefix starts the bridge name Shoal derives for a bridge
// network without spec.bridge_name (DefaultBridgeName).
const BridgeNamePrefix = "shbr-"

// DefaultBridgeName is the Linux bridge of a bridge network that names
// none: BridgeNamePrefix and the first 10 characters of its id (15 bytes,
// the kernel's limit).
func DefaultBridgeName(networkID string) string {
	id := networkID
	if len(id) > MaxIfaceName-len(BridgeNamePrefix) {
		id = id[:MaxIfaceName-len(BridgeNamePrefix)]
	}
	return BridgeNamePrefix + id
}

// BridgeName is the Linux bridge a bridge network uses on a node.
func BridgeName(n *shoalv1.Network) string {
	if b := n.GetSpec().GetBridgeName(); b != "" {
		return b
	}
	return DefaultBridgeName(n.GetMeta().GetId())
}

// reservedIfacePrefix returns the prefix of Shoal's own device names
// (overlay bridges and VXLAN devices, task veths, derived bridge names)
// that name starts with, or "".
func reservedIfacePrefix(name string) string {
	for _, pre := range []string{"shb-", "shx-", "shv", BridgeNamePrefix, "shoal-"} {
		if strings.HasPrefix(name, pre) {
			return fmt.Sprintf("%q", pre)
		}
	}
	// The node network's task veths: "sh" and 12 hex digits.
	if len(name) == 14 && strings.HasPrefix(name, "sh") && strings.Trim(name[2:], "0123456789abcdef") == "" {
		return "sh<12 hex digits> (a task veth)"
	}
	return ""
}

// unusableRanges are the IPv4 ranges no network's subnet (nor the
// address pool) may overlap: the kernel drops loopback addresses seen off
// lo as martians, and the others are not unicast host addresses a task
// could be given.
var unusableRanges = []struct {
	p    netip.Prefix
	what string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this network"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
}

// ParseSubnet parses an IPv4 CIDR whose prefix length is 8..29, whose
// host bits are zero and that overlaps none of unusableRanges.
func ParseSubnet(s string) (netip.Prefix, error) {
	pr, err := netip.ParsePrefix(s)
	if err != nil || !pr.Addr().Is4() {
		return netip.Prefix{}, errorf("%q is not an IPv4 CIDR such as 10.1.2.0/24", s)
	}
	if b := pr.Bits(); b < MinSubnetPrefix || b > MaxSubnetPrefix {
		return netip.Prefix{}, errorf("%q: the prefix length must be %d to %d, got %d", s, MinSubnetPrefix, MaxSubnetPrefix, b)
	}
	if pr.Masked() != pr {
		return netip.Prefix{}, errorf("%q has host bits set (did you mean %s?)", s, pr.Masked())
	}
	for _, u := range unusableRanges {
		if pr.Overlaps(u.p) {
			return netip.Prefix{}, errorf("%q overlaps %s (%s): not usable for a network", s, u.p, u.what)
		}
	}
	return pr, nil
}

// GatewayIn checks that a is a host address of subnet: inside it and
// neither its network nor its broadcast address.
func GatewayIn(subnet netip.Prefix, a netip.Addr) error {
	if !subnet.Contains(a) {
		return errorf("%s is not inside the subnet %s", a, subnet)
	}
	if a == subnet.Addr() {
		return errorf("%s is the network address of %s", a, subnet)
	}
	if a == Broadcast(subnet) {
		return errorf("%s is the broadcast address of %s", a, subnet)
	}
	return nil
}

// Broadcast returns the last address of an IPv4 prefix.
func Broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n |= (1<<(32-p.Bits()) - 1)
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// IfaceName checks a Linux interface name: 1-15 bytes, no '/', ':',
// '%', whitespace or NUL, not "." or "..". The kernel takes a '%' in a new
// link's name as a format ("br%d" creates br0, br1, …), so such a name
// would never be found again under the name asked for.
func IfaceName(n string) error {
	if n == "" || len(n) > MaxIfaceName {
		return errorf("%q: an interface name has 1 to %d bytes", n, MaxIfaceName)
	}
	if n == "." || n == ".." {
		return errorf("%q is not a valid interface name", n)
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c <= ' ' || c == '/' || c == ':' || c == '%' || c >= 0x7f {
			return errorf("%q: an interface name has no '/', ':', '%%', whitespace or control characters", n)
		}
	}
	return nil
}

// DNSLabel checks a DNS alias: an RFC 1123 host name (labels of letters,
// digits and '-'), at most 253 bytes.
func DNSLabel(a string) error {
	if a == "" {
		return errorf("empty alias")
	}
	if len(a) > 253 {
		return errorf("%q is %d bytes long, at most 253", a, len(a))
	}
	for _, l := range strings.Split(a, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return errorf("%q is not a DNS name (empty label, one over 63 bytes, or one starting or ending with '-')", a)
		}
		for i := 0; i < len(l); i++ {
			if !isAlnum(l[i]) && l[i] != '-' {
				return errorf("%q is not a DNS name (only letters, digits, '-' and '.')", a)
			}
		}
	}
	return nil
}

// taskNetworks checks TaskSpec.networks: targets are names or ids, the
// same network at most once, aliases DNS names.
func taskNetworks(p *Problems, field string, t *shoalv1.TaskSpec) {
	seen := map[string]int{}
	for i, n := range t.GetNetworks() {
		f := fmt.Sprintf("%s.networks[%d]", field, i)
		if !ValidName(n.GetTarget()) {
			p.Add(f+".target", "%q is not a valid network name or id", n.GetTarget())
		} else if j, dup := seen[n.GetTarget()]; dup {
			p.Add(f+".target", "%q is already networks[%d]", n.GetTarget(), j)
		} else {
			seen[n.GetTarget()] = i
		}
		if len(n.GetAliases()) > MaxAliases {
			p.Add(f+".aliases", "%d aliases, at most %d", len(n.GetAliases()), MaxAliases)
			continue
		}
		for k, a := range n.GetAliases() {
			if err := DNSLabel(a); err != nil {
				p.Add(fmt.Sprintf("%s.aliases[%d]", f, k), "%v", err)
			} else if l := strings.ToLower(a); l == "tasks" || strings.HasPrefix(l, "tasks.") {
				// tasks.X is every service's own name for its task
				// addresses: an alias there would add this service's
				// tasks to another service's answer.
				p.Add(fmt.Sprintf("%s.aliases[%d]", f, k), "%q: names starting with \"tasks\" are reserved (tasks.SERVICE lists a service's tasks)", a)
			}
		}
	}
}

// NetworkDrivers checks what a service spec may do given the drivers of
// its networks (drivers[i] is the driver of spec.task.networks[i], ""
// meaning overlay), once the Control API has resolved them:
//   - a host network shares the node's namespace, so it is the task's
//     only network (there is no other namespace to join anything to),
//     publishes no port (the task's ports are the node's own) and has no
//     aliases (no address, no DNS: a name would answer nothing);
//   - an ingress-mode port is answered by every node and forwarded across
//     hosts, which only an overlay network carries: a service on bridge
//     networks alone publishes in host mode.
func NetworkDrivers(spec *shoalv1.ServiceSpec, drivers []string) Problems {
	var p Problems
	hostAt, overlay := -1, false
	for i, d := range drivers {
		switch d {
		case DriverHost:
			if hostAt < 0 {
				hostAt = i
			}
		case "", DriverOverlay:
			overlay = true
		}
	}
	ps := spec.GetEndpoint().GetPorts()
	if hostAt >= 0 {
		if len(drivers) > 1 {
			p.Add(fmt.Sprintf("spec.task.networks[%d].target", hostAt), "a host network shares the node's network namespace: it must be the service's only network (%d given)", len(drivers))
		}
		for i := range ps {
			p.Add(fmt.Sprintf("spec.endpoint.ports[%d]", i), "a service on a host network publishes no port: its task's ports are the node's own (listen on the port directly)")
		}
		if nets := spec.GetTask().GetNetworks(); hostAt < len(nets) && len(nets[hostAt].GetAliases()) > 0 {
			p.Add(fmt.Sprintf("spec.task.networks[%d].aliases", hostAt), "a host network has no names: its task has no address of its own and no DNS at 127.0.0.11 (reach it at its node's address)")
		}
		return p
	}
	if overlay {
		return p
	}
	for i, port := range ps {
		if port.GetPublishedPort() != 0 && PublishMode(port) == "ingress" {
			p.Add(fmt.Sprintf("spec.endpoint.ports[%d].publish_mode", i), "an ingress port needs an overlay network (every node answers it and forwards over the overlay); on bridge networks publish in host mode (mode=host)")
		}
	}
	return p
}

// InternalPorts checks a service's published ports against its networks
// (internal[i] is spec.task.networks[i]'s --internal, once the Control
// API has resolved them): a task on an internal network has no default
// route (not even through its node-local interface), so a published port
// could never answer a client beyond the task's networks.
func InternalPorts(spec *shoalv1.ServiceSpec, internal []bool) Problems {
	var p Problems
	at := -1
	for i, in := range internal {
		if in {
			at = i
			break
		}
	}
	if at < 0 {
		return p
	}
	for i := range spec.GetEndpoint().GetPorts() {
		p.Add(fmt.Sprintf("spec.endpoint.ports[%d]", i), "spec.task.networks[%d] is an internal network: the task has no default route, so a published port could never answer its clients (publish from a service on non-internal networks)", at)
	}
	return p
}
