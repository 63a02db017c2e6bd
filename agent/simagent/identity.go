package simagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sync/errgroup"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// Identity is one simulated node's credentials as issued at join.
type Identity struct {
	Name    string `json:"name"`
	NodeID  string `json:"node_id"`
	CertPEM []byte `json:"cert_pem"`
	KeyPEM  []byte `json:"key_pem"`
}

// Identities are a set of simulated nodes of one cluster (one CA).
type Identities struct {
	CACertPEM []byte     `json:"ca_cert_pem"`
	Nodes     []Identity `json:"nodes"`
}

// Description is what a simulated node reports in its hello: a Linux node
// with 4 CPUs and 8 GiB.
func Description(name string) *shoalv1.NodeDescription {
	return &shoalv1.NodeDescription{Hostname: name, Os: "linux", Arch: "amd64", EngineVersion: "simagent",
		StoreFormat: raftstore.StoreFormat,
		Resources:   &shoalv1.Resources{NanoCpus: 4e9, MemoryBytes: 8 << 30}}
}

// Join joins len(names) nodes through the manager at addr with a worker
// token, parallel at a time, each with its own key and certificate.
func Join(ctx context.Context, addr, token string, names []string, parallel int) (*Identities, error) {
	if parallel < 1 {
		parallel = 1
	}
	out := &Identities{Nodes: make([]Identity, len(names))}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i, name := range names {
		g.Go(func() error {
			creds, resp, err := trust.JoinCredentials(gctx, addr, token, Description(name), "127.0.0.1:1")
			if err != nil {
				return fmt.Errorf("joining simulated node %s: %w", name, err)
			}
			if resp.GetRole() != shoalv1.NodeRole_NODE_ROLE_WORKER {
				return fmt.Errorf("joining simulated node %s: issued role %s, want a worker (use the worker token)", name, resp.GetRole())
			}
			out.Nodes[i] = Identity{Name: name, NodeID: resp.GetNodeId(), CertPEM: creds.CertPEM, KeyPEM: creds.KeyPEM}
			mu.Lock()
			if out.CACertPEM == nil {
				out.CACertPEM = creds.CACertPEM
			}
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// SaveIdentities writes ids to path (0600, replaced atomically).
func SaveIdentities(path string, ids *Identities) error {
	b, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LoadIdentities reads what SaveIdentities wrote; a missing file is an
// empty set.
func LoadIdentities(path string) (*Identities, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Identities{}, nil
	}
	if err != nil {
		return nil, err
	}
	var ids Identities
	if err := json.Unmarshal(b, &ids); err != nil {
		return nil, fmt.Errorf("reading simulated node identities from %s: %w", path, err)
	}
	for i, n := range ids.Nodes {
		if n.NodeID == "" || len(n.CertPEM) == 0 || len(n.KeyPEM) == 0 {
			return nil, fmt.Errorf("reading simulated node identities from %s: node %d (%q) is incomplete", path, i, n.Name)
		}
	}
	return &ids, nil
}
