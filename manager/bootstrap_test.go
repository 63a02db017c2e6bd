package manager

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

func TestBootstrapRoundTrip(t *testing.T) {
	root, err := trust.NewRootCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	adminCert, _, err := root.IssueAdmin("admin", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := NewBootstrap(BootstrapConfig{ClusterID: "c1", Root: root, AdminCertPEM: adminCert,
		NodeID: "n1", NodeName: "first", NodeAddr: "127.0.0.21:4242", NodeCertSerial: "s1", Description: &shoalv1.NodeDescription{Hostname: "h"}})
	if err != nil {
		t.Fatal(err)
	}
	c, self := boot.Cluster, boot.Self
	if c.GetMeta().GetId() != "c1" || c.GetName() != "shoal" || len(c.GetAdminCerts()) != 1 || c.GetSettings().GetHeartbeatPeriodMs() == 0 {
		t.Errorf("cluster = %v", c)
	}
	for _, tok := range []string{c.GetTokens().GetWorker(), c.GetTokens().GetManager()} {
		if d, _, err := trust.ParseJoinToken(tok); err != nil || d != root.Digest() {
			t.Errorf("token %q does not pin the root: %q, %v", tok, d, err)
		}
	}
	if k := c.GetGossipKeys(); len(k) != 1 || len(k[0]) != GossipKeySize {
		t.Errorf("gossip keys: %d keys, want one of %d bytes", len(k), GossipKeySize)
	}
	if c.GetTokens().GetWorker() == c.GetTokens().GetManager() {
		t.Error("worker and manager tokens are the same")
	}
	if self.GetRole() != shoalv1.NodeRole_NODE_ROLE_MANAGER || self.GetSpec().GetDesiredRole() != shoalv1.NodeRole_NODE_ROLE_MANAGER ||
		self.GetCertSerial() != "s1" || self.GetStatus().GetAddr() != "127.0.0.21:4242" || self.GetSpec().GetName() != "first" {
		t.Errorf("self = %v", self)
	}

	path := filepath.Join(t.TempDir(), "bootstrap.pb")
	if err := boot.Save(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("bootstrap file mode %v, %v; want 0600 (it holds the CA key)", fi.Mode(), err)
	}
	got, err := LoadBootstrap(path)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.Cluster, boot.Cluster) || !proto.Equal(got.Self, boot.Self) {
		t.Errorf("loaded %v / %v", got.Cluster, got.Self)
	}

	os.WriteFile(path, nil, 0o600)
	if _, err := LoadBootstrap(path); err == nil {
		t.Error("an empty bootstrap file loaded")
	}
}
