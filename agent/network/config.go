package network

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
)

// Defaults applied by [New] to zero fields of [Config].
const (
	DefaultBridge = "shoal0"
	DefaultMTU    = 1500
)

// DefaultSubnet is the node-local task subnet used when Config.Subnet is
// not set. Every node uses the same one: it is only reachable from the
// node itself (no NAT, no forwarding).
var DefaultSubnet = netip.MustParsePrefix("10.213.0.0/24")

// Error classes, wrapped with %w (see DESIGN.md §6.3).
var (
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrSubnetExhausted: every task address of the subnet is allocated.
	ErrSubnetExhausted = errors.New("subnet exhausted")
	// ErrClosed: the Manager was closed.
	ErrClosed = errors.New("network manager closed")
)

// Config configures a [Manager].
type Config struct {
	Bridge string // bridge name, default "shoal0"
	// Subnet of the bridge, default 10.213.0.0/24. IPv4 only, /8 to /30.
	// The bridge gets the first host address (.1) as the tasks' gateway.
	Subnet netip.Prefix
	// StateDir is absolute; it holds the IPAM allocations (ipam.json) and
	// the netns bind-mount files (<StateDir>/netns/<taskID>).
	StateDir string
	MTU      int // default 1500, of the bridge and both veth ends
	Logger   *slog.Logger
}

// Attachment is a task's place on the node network, as handed to the
// runtime (NetNSPath) and reported to managers (Addresses).
type Attachment struct {
	NetNSPath string   // bind-mounted netns file, to hand to the runtime
	Addresses []string // CIDR notation, e.g. "10.213.0.5/24"
	Gateway   string   // e.g. "10.213.0.1"
	HostVeth  string   // host side of the veth pair, a port of the bridge
}

// withDefaults returns cfg with defaults filled in, or an error saying
// which field is wrong.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = DefaultSubnet
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if !linkNameRE.MatchString(cfg.Bridge) {
		return cfg, fmt.Errorf("%w: bridge name %q: want 1-15 characters of [A-Za-z0-9_.-]", ErrInvalidArgument, cfg.Bridge)
	}
	if isVethName(cfg.Bridge) {
		return cfg, fmt.Errorf("%w: bridge name %q looks like a task veth name", ErrInvalidArgument, cfg.Bridge)
	}
	p := cfg.Subnet
	if !p.Addr().Is4() {
		return cfg, fmt.Errorf("%w: subnet %s: only IPv4 is supported", ErrInvalidArgument, p)
	}
	if p.Bits() < 8 || p.Bits() > 30 {
		return cfg, fmt.Errorf("%w: subnet %s: prefix length must be between /8 and /30", ErrInvalidArgument, p)
	}
	if p.Masked() != p {
		return cfg, fmt.Errorf("%w: subnet %s has host bits set (did you mean %s?)", ErrInvalidArgument, p, p.Masked())
	}
	if cfg.StateDir == "" || !filepath.IsAbs(cfg.StateDir) {
		return cfg, fmt.Errorf("%w: state dir %q must be an absolute path", ErrInvalidArgument, cfg.StateDir)
	}
	cfg.StateDir = filepath.Clean(cfg.StateDir)
	if cfg.MTU < 68 || cfg.MTU > 65535 {
		return cfg, fmt.Errorf("%w: MTU %d: want 68..65535", ErrInvalidArgument, cfg.MTU)
	}
	return cfg, nil
}

// Interface names: at most IFNAMSIZ-1 = 15 bytes, no '/', ':' or blanks.
var linkNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// Task ids become file names, so they follow the runtime's rule.
var taskIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func validateTaskID(id string) error {
	if !taskIDRE.MatchString(id) {
		return fmt.Errorf("%w: task id %q", ErrInvalidArgument, id)
	}
	return nil
}

const (
	vethPrefix  = "sh"
	vethHexLen  = 12 // 48 bits of the hash: collisions are negligible at node scale
	taskIfName  = "eth0"
	ipamFile    = "ipam.json"
	netnsSubdir = "netns"
)

// vethName is the host-side veth name of a task: "sh" + 12 hex digits of
// sha256(task id), 14 bytes, so it is the same after an agent restart and
// needs no record of its own.
func vethName(taskID string) string {
	sum := sha256.Sum256([]byte(taskID))
	return vethPrefix + hex.EncodeToString(sum[:])[:vethHexLen]
}

// isVethName tells whether name has the shape of a name made by vethName.
func isVethName(name string) bool {
	if len(name) != len(vethPrefix)+vethHexLen || name[:len(vethPrefix)] != vethPrefix {
		return false
	}
	for _, c := range name[len(vethPrefix):] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// taskMAC derives the task interface's MAC from its address (locally
// administered, unicast: 02:53 followed by the four IPv4 bytes). A reused
// address keeps its MAC, so neighbours' ARP entries never go stale on
// reuse, and a later overlay can compute a task's MAC from its IP.
func taskMAC(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x53, b[0], b[1], b[2], b[3]}
}

// gatewayOf is the first host address of p.
func gatewayOf(p netip.Prefix) netip.Addr { return p.Addr().Next() }

// broadcastOf is the last address of p (IPv4).
func broadcastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= (1 << (32 - p.Bits())) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
