package manager

import (
	"crypto/rand"
	"fmt"
	"os"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/datadir"
	"github.com/shoal-dev/shoal/manager/dispatcher"
	"github.com/shoal-dev/shoal/manager/nodeca"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// Bootstrap is what the first manager writes into a new cluster.
type Bootstrap struct {
	Cluster *shoalv1.Cluster
	Self    *shoalv1.Node
}

// BootstrapConfig is what `shoal init` knows when it creates a cluster.
type BootstrapConfig struct {
	ClusterID   string
	ClusterName string // "shoal" when empty
	// Root is the new cluster's CA; the join tokens are made for it.
	Root *trust.CA
	// AdminCertPEM is the admin certificate init writes: the first admin
	// certificate object (listed, revocable).
	AdminCertPEM []byte
	// The first node: this one, a manager.
	NodeID, NodeName, NodeAddr string
	NodeCertSerial             string
	Description                *shoalv1.NodeDescription
}

// NewBootstrap builds the first objects of a new cluster: the cluster
// (CA, join tokens, default settings, the first admin certificate) and the
// first node, a manager.
func NewBootstrap(c BootstrapConfig) (*Bootstrap, error) {
	workerTok, err := trust.NewJoinToken(c.Root.Digest())
	if err != nil {
		return nil, err
	}
	managerTok, err := trust.NewJoinToken(c.Root.Digest())
	if err != nil {
		return nil, err
	}
	adminObj, err := trust.AdminCertificateOf(c.AdminCertPEM)
	if err != nil {
		return nil, err
	}
	gossipKey, err := NewGossipKey()
	if err != nil {
		return nil, err
	}
	name := c.ClusterName
	if name == "" {
		name = "shoal"
	}
	return &Bootstrap{
		Cluster: &shoalv1.Cluster{
			Meta: &shoalv1.Meta{Id: c.ClusterID}, Name: name, CaCertPem: c.Root.CertPEM(), CaKeyPem: c.Root.KeyPEM(),
			Tokens: &shoalv1.JoinTokens{Worker: workerTok, Manager: managerTok},
			Settings: &shoalv1.ClusterSettings{HeartbeatPeriodMs: dispatcher.DefaultHeartbeatPeriod.Milliseconds(),
				NodeDownAfterMissed: dispatcher.DefaultDownAfterMissed, NodeCertExpiryMs: nodeca.DefaultCertTTL.Milliseconds()},
			AdminCerts: []*shoalv1.AdminCertificate{adminObj},
			GossipKeys: [][]byte{gossipKey},
		},
		Self: &shoalv1.Node{
			Meta:        &shoalv1.Meta{Id: c.NodeID},
			Spec:        &shoalv1.NodeSpec{Name: c.NodeName, DesiredRole: shoalv1.NodeRole_NODE_ROLE_MANAGER},
			Description: c.Description,
			Status:      &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_UNKNOWN, Addr: c.NodeAddr, LastHeartbeat: timestamppb.Now()},
			Role:        shoalv1.NodeRole_NODE_ROLE_MANAGER,
			CertSerial:  c.NodeCertSerial,
		},
	}, nil
}

// Save writes b to path atomically, private (it holds the CA key). The
// bootstrap objects wait there until raft has committed them, so a crash
// in between is healed on restart (LoadBootstrap).
func (b *Bootstrap) Save(path string) error {
	act := &shoalv1.StoreAction{Ops: []*shoalv1.StoreOp{
		{Object: &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Cluster{Cluster: b.Cluster}}},
		{Object: &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Node{Node: b.Self}}},
	}}
	data, err := proto.Marshal(act)
	if err != nil {
		return err
	}
	return datadir.WriteFileAtomic(path, data, 0o600)
}

// LoadBootstrap reads what Save wrote.
func LoadBootstrap(path string) (*Bootstrap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var act shoalv1.StoreAction
	if err := proto.Unmarshal(data, &act); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	boot := &Bootstrap{}
	for _, op := range act.GetOps() {
		if c := op.GetObject().GetCluster(); c != nil {
			boot.Cluster = c
		}
		if nd := op.GetObject().GetNode(); nd != nil {
			boot.Self = nd
		}
	}
	if boot.Cluster == nil || boot.Self == nil {
		return nil, fmt.Errorf("%s is incomplete", path)
	}
	return boot, nil
}

// GossipKeySize is the size of a gossip encryption key (AES-256).
const GossipKeySize = 32

// NewGossipKey returns a random gossip encryption key. Never log it.
func NewGossipKey() ([]byte, error) {
	k := make([]byte, GossipKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("gossip key: %w", err)
	}
	return k, nil
}
