package daemon

import (
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"

	"github.com/shoal-dev/shoal/datadir"
)

// DefaultPort is the manager API / raft port.
const DefaultPort = 4242

// applyAgentOptions copies agent-side options that were given into st and
// fills in defaults; it says whether st changed.
func applyAgentOptions(st *datadir.Node, o Options) (bool, error) {
	before := *st // slices in st are replaced below, never changed in place
	if o.AgentAddr != "" {
		a := o.AgentAddr
		if _, _, err := net.SplitHostPort(a); err != nil {
			// No port: the default agent port (advertise port + 1), not
			// the manager's.
			def, err := agentAddr(st.AdvertiseAddr)
			if err != nil {
				return false, err
			}
			_, port, _ := net.SplitHostPort(def)
			a = net.JoinHostPort(strings.Trim(a, "[]"), port)
		}
		if _, err := withPort(a, "--agent-addr"); err != nil {
			return false, err
		}
		st.AgentAddr = a
	}
	if st.AgentAddr == "" {
		a, err := agentAddr(st.AdvertiseAddr)
		if err != nil {
			return false, err
		}
		st.AgentAddr = a
	}
	if o.NodeName != "" {
		st.NodeName = o.NodeName
	}
	if o.Bridge != "" {
		st.Bridge = o.Bridge
	}
	if o.BridgeSubnet != "" {
		st.BridgeSubnet = o.BridgeSubnet
	}
	if o.CgroupParent != "" {
		st.CgroupParent = o.CgroupParent
	}
	if len(o.InsecureRegistries) > 0 {
		st.InsecureRegistries = append([]string(nil), o.InsecureRegistries...)
	}
	return !reflect.DeepEqual(before, *st), nil
}

// withPort adds the default port to "host" and checks "host:port".
func withPort(addr string, field string) (string, error) {
	if addr == "" {
		return "", fmt.Errorf("%s: required", field)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, strconv.Itoa(DefaultPort)
	}
	if net.ParseIP(host) == nil {
		return "", fmt.Errorf("%s: %q is not an IP address", field, host)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return "", fmt.Errorf("%s: bad port %q", field, port)
	}
	return net.JoinHostPort(host, port), nil
}

// HTTPOff is the --http-addr value that runs no HTTPS API.
const HTTPOff = "off"

// httpAddr is where a manager's HTTPS API listens: addr as given (a host
// alone takes the default port), or, when empty, the advertise host and
// the advertise port + 2 (4244 beside 4242; nodes sharing an IP on other
// ports do not clash); "" when addr is HTTPOff.
func httpAddr(addr, advertise string) (string, error) {
	if addr == HTTPOff {
		return "", nil
	}
	host, port, err := net.SplitHostPort(advertise)
	if err != nil {
		return "", fmt.Errorf("advertise address %q: %w", advertise, err)
	}
	p, _ := strconv.Atoi(port)
	def := strconv.Itoa(p + 2)
	if addr == "" {
		return net.JoinHostPort(host, def), nil
	}
	h, ps, err := net.SplitHostPort(addr)
	if err != nil {
		h, ps = strings.Trim(addr, "[]"), def
	}
	if h != "" && net.ParseIP(h) == nil {
		return "", fmt.Errorf("--http-addr: %q is not an IP address", h)
	}
	if n, err := strconv.Atoi(ps); err != nil || n <= 0 || n > 65535 {
		return "", fmt.Errorf("--http-addr: bad port %q", ps)
	}
	return net.JoinHostPort(h, ps), nil
}
