package datadir

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Node is what a node keeps in node.json: the one shape of that file.
type Node struct {
	NodeID        string   `json:"node_id"`
	ClusterID     string   `json:"cluster_id"`
	AdvertiseAddr string   `json:"advertise_addr"`
	ListenAddr    string   `json:"listen_addr"`
	Role          string   `json:"role"`
	Managers      []string `json:"managers"`
	// NodeName as given to init/join (--node-name), kept so that a restart
	// with `shoal daemon` describes the node by the same name.
	NodeName string `json:"node_name,omitempty"`
	// Agent side, as given to init/join (or changed with daemon flags).
	AgentAddr          string   `json:"agent_addr,omitempty"`
	Bridge             string   `json:"bridge,omitempty"`
	BridgeSubnet       string   `json:"bridge_subnet,omitempty"`
	InsecureRegistries []string `json:"insecure_registries,omitempty"`
	CgroupParent       string   `json:"cgroup_parent,omitempty"`
}

// ErrNoNode says a data dir holds no node.json (it also matches
// os.ErrNotExist).
var ErrNoNode = errors.New("no node.json")

type noNodeError struct {
	dir string
	err error // from the read
}

func (e *noNodeError) Error() string {
	return fmt.Sprintf("%s holds no node (no node.json): run `shoal init` or `shoal join` first", e.dir)
}

func (e *noNodeError) Is(target error) bool { return target == ErrNoNode }
func (e *noNodeError) Unwrap() error        { return e.err }

// Load reads a data dir's node.json. A missing file is ErrNoNode; a file
// that is not JSON of this shape is an error naming the file.
func Load(dir string) (*Node, error) {
	path := Dir(dir).NodeFile()
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &noNodeError{dir: dir, err: err}
		}
		return nil, err
	}
	var n Node
	if err := json.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("%s: not a node state file (garbled?): %w", path, err)
	}
	return &n, nil
}

// Exists says whether dir already holds a node.
func Exists(dir string) bool {
	_, err := os.Stat(Dir(dir).NodeFile())
	return err == nil
}

// Save writes node.json atomically (a crash leaves the old or the new file).
func (n *Node) Save(dir string) error {
	b, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(Dir(dir).NodeFile(), append(b, '\n'), 0o600)
}

// syncDir is fsyncDir, replaced in tests to see that it is called.
var syncDir = fsyncDir

// WriteFileAtomic replaces path with data so that a crash at any point
// leaves either the old file or the new one under path: the data goes to a
// temporary file beside it, which is synced, renamed over path, and then
// the directory is synced so that the rename itself is durable.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func fsyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
