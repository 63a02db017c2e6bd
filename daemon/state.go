package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
)

// DefaultPort is the manager API / raft port.
const DefaultPort = 4242

// State is what a node keeps in DataDir/node.json.
type State struct {
	NodeID        string   `json:"node_id"`
	ClusterID     string   `json:"cluster_id"`
	AdvertiseAddr string   `json:"advertise_addr"`
	ListenAddr    string   `json:"listen_addr"`
	Role          string   `json:"role"`
	Managers      []string `json:"managers"`
	// Agent side, as given to init/join (or changed with daemon flags).
	AgentAddr          string   `json:"agent_addr,omitempty"`
	Bridge             string   `json:"bridge,omitempty"`
	BridgeSubnet       string   `json:"bridge_subnet,omitempty"`
	InsecureRegistries []string `json:"insecure_registries,omitempty"`
	CgroupParent       string   `json:"cgroup_parent,omitempty"`
}

// applyAgentOptions copies agent-side options that were given into st and
// fills in defaults; it says whether st changed.
func (st *State) applyAgentOptions(o Options) (bool, error) {
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

func statePath(dir string) string { return filepath.Join(dir, "node.json") }

// LoadState reads a data dir's node.json.
func LoadState(dir string) (*State, error) {
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s holds no node (no node.json): run `shoal init` or `shoal join` first", dir)
		}
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	return &st, nil
}

// Save writes node.json atomically (a crash leaves the old or the new file).
func (s *State) Save(dir string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(statePath(dir), append(b, '\n'), 0o600)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
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
