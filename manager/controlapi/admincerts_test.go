package controlapi

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// withCA gives the test cluster a CA.
func withCA(t *testing.T, st *raftstore.Store) *trust.CA {
	t.Helper()
	root, err := trust.NewRootCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
		c, _ := raftstore.ClusterOf(tx)
		c = proto.Clone(c).(*shoalv1.Cluster)
		c.CaCertPem, c.CaKeyPem = root.CertPEM(), root.KeyPEM()
		return tx.Update(c)
	}); err != nil {
		t.Fatal(err)
	}
	return root
}

func adminCSR(t *testing.T) []byte {
	t.Helper()
	_, csrPEM, err := trust.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	return csrPEM
}

// TestAdminCertificates: create signs the caller's CSR and lists the
// certificate; a revoked one is refused by the store check every manager
// applies.
func TestAdminCertificates(t *testing.T) {
	s, st := newServer(t)
	withCA(t, st)
	ctx := context.Background()

	for _, tc := range []struct {
		name string
		req  *shoalv1.CreateAdminCertificateRequest
		msg  string
	}{
		{"bad name", &shoalv1.CreateAdminCertificateRequest{Name: "../x", CsrPem: adminCSR(t)}, "name:"},
		{"empty name", &shoalv1.CreateAdminCertificateRequest{CsrPem: adminCSR(t)}, "name:"},
		{"no CSR", &shoalv1.CreateAdminCertificateRequest{Name: "ops"}, "csr_pem: required"},
		{"junk CSR", &shoalv1.CreateAdminCertificateRequest{Name: "ops", CsrPem: []byte("junk")}, "csr_pem:"},
		{"ttl too short", &shoalv1.CreateAdminCertificateRequest{Name: "ops", CsrPem: adminCSR(t), TtlMs: 1}, "ttl_ms:"},
		{"negative ttl", &shoalv1.CreateAdminCertificateRequest{Name: "ops", CsrPem: adminCSR(t), TtlMs: -5}, "ttl_ms:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.CreateAdminCertificate(ctx, tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.msg)
		})
	}

	resp, err := s.CreateAdminCertificate(ctx, &shoalv1.CreateAdminCertificateRequest{Name: "ops", CsrPem: adminCSR(t), TtlMs: time.Hour.Milliseconds()})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := trust.ParseCertPEM(resp.GetCertPem())
	if err != nil {
		t.Fatal(err)
	}
	id, _ := trust.IdentityFromCert(cert)
	if id.Role != trust.RoleAdmin || id.NodeID != "ops" || resp.GetAdmin().GetSerial() != id.Serial || len(resp.GetCaCertPem()) == 0 {
		t.Fatalf("created %+v for certificate %+v", resp.GetAdmin(), id)
	}
	if _, err := s.CreateAdminCertificate(ctx, &shoalv1.CreateAdminCertificateRequest{Name: "ops", CsrPem: adminCSR(t)}); err == nil {
		t.Fatal("a second certificate named ops was created")
	} else {
		wantCode(t, err, codes.AlreadyExists, "ops")
	}
	list, err := s.ListAdminCertificates(ctx, &shoalv1.ListAdminCertificatesRequest{})
	if err != nil || len(list.GetAdmins()) != 1 || list.GetAdmins()[0].GetName() != "ops" {
		t.Fatalf("list: %v, %v", list, err)
	}
	check := func() error {
		c, _ := raftstore.ClusterOf(st.View())
		return trust.CheckAdmin(id, c.GetAdminCerts(), time.Now())
	}
	if err := check(); err != nil {
		t.Fatalf("a listed admin certificate is refused: %v", err)
	}

	if _, err := s.RevokeAdminCertificate(ctx, &shoalv1.RevokeAdminCertificateRequest{Name: "nobody"}); err == nil {
		t.Fatal("revoked an unknown name")
	} else {
		wantCode(t, err, codes.NotFound, "nobody")
	}
	rev, err := s.RevokeAdminCertificate(ctx, &shoalv1.RevokeAdminCertificateRequest{Name: "ops"})
	if err != nil || !rev.GetAdmin().GetRevoked() || rev.GetAdmin().GetRevokedAt() == nil {
		t.Fatalf("revoke: %v, %v", rev, err)
	}
	if err := check(); err == nil {
		t.Fatal("a revoked admin certificate is still accepted")
	}
	// The name is free again; the revoked entry stays listed.
	if _, err := s.CreateAdminCertificate(ctx, &shoalv1.CreateAdminCertificateRequest{Name: "ops", CsrPem: adminCSR(t)}); err != nil {
		t.Fatalf("re-creating a revoked name: %v", err)
	}
	if list, _ := s.ListAdminCertificates(ctx, &shoalv1.ListAdminCertificatesRequest{}); len(list.GetAdmins()) != 2 {
		t.Fatalf("list after re-create: %v", list)
	}
}

func TestUpdateCluster(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	version := func() uint64 {
		c, _ := raftstore.ClusterOf(st.View())
		return c.GetMeta().GetVersion()
	}
	for _, tc := range []struct {
		name string
		set  *shoalv1.ClusterSettings
		msg  string
	}{
		{"no settings", nil, "settings: required"},
		{"cert expiry too short", &shoalv1.ClusterSettings{NodeCertExpiryMs: 1}, "settings.node_cert_expiry_ms"},
		{"cert expiry negative", &shoalv1.ClusterSettings{NodeCertExpiryMs: -1}, "settings.node_cert_expiry_ms"},
		{"max replicas too high", &shoalv1.ClusterSettings{MaxReplicas: MaxMaxReplicas + 1}, "settings.max_replicas"},
		{"max replicas negative", &shoalv1.ClusterSettings{MaxReplicas: -1}, "settings.max_replicas"},
		{"restart grace too long", &shoalv1.ClusterSettings{RestartGraceMs: (25 * time.Hour).Milliseconds()}, "settings.restart_grace_ms"},
		{"heartbeat too fast", &shoalv1.ClusterSettings{HeartbeatPeriodMs: 1}, "settings.heartbeat_period_ms"},
		{"down after missed", &shoalv1.ClusterSettings{NodeDownAfterMissed: 1000}, "settings.node_down_after_missed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.UpdateCluster(ctx, &shoalv1.UpdateClusterRequest{Version: version(), Settings: tc.set})
			wantCode(t, err, codes.InvalidArgument, tc.msg)
		})
	}
	set := &shoalv1.ClusterSettings{NodeCertExpiryMs: 20_000, MaxReplicas: 500, RestartGraceMs: 30_000}
	if _, err := s.UpdateCluster(ctx, &shoalv1.UpdateClusterRequest{Settings: set}); err == nil {
		t.Fatal("version 0 accepted without ignore_version")
	}
	if _, err := s.UpdateCluster(ctx, &shoalv1.UpdateClusterRequest{Version: version() - 1, Settings: set}); err == nil {
		t.Fatal("a stale version was accepted")
	} else {
		wantCode(t, err, codes.Aborted, "")
	}
	resp, err := s.UpdateCluster(ctx, &shoalv1.UpdateClusterRequest{Version: version(), Settings: set})
	if err != nil || !proto.Equal(resp.GetCluster().GetSettings(), set) || resp.GetCluster().GetCaKeyPem() != nil {
		t.Fatalf("update: %v, %v", resp, err)
	}
	if _, err := s.UpdateCluster(ctx, &shoalv1.UpdateClusterRequest{IgnoreVersion: true, Settings: &shoalv1.ClusterSettings{}}); err != nil {
		t.Fatalf("update with ignore_version: %v", err)
	}
}
