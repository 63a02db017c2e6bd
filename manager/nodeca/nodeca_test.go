package nodeca

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// newServer is the NodeCA over a one-node in-memory raft store holding a
// cluster with a CA and node "n1" (a manager, certificate serial
// returned).
func newServer(t *testing.T, ttl time.Duration) (*Server, *raftstore.Store, *trust.CA) {
	t.Helper()
	_, trans := raft.NewInmemTransport("solo:4242")
	st, err := raftstore.Open(raftstore.Config{
		NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !st.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("the store never led")
		}
		time.Sleep(5 * time.Millisecond)
	}
	root, err := trust.NewRootCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c1"}, Name: "test", CaCertPem: root.CertPEM(), CaKeyPem: root.KeyPEM(),
			Settings: &shoalv1.ClusterSettings{NodeCertExpiryMs: ttl.Milliseconds()}})
	}); err != nil {
		t.Fatal(err)
	}
	return New(st, slog.New(slog.NewTextHandler(io.Discard, nil))), st, root
}

type nodeKey struct {
	certPEM, keyPEM []byte
	id              trust.Identity
}

// enroll signs a certificate for node id with role and records it as the
// node's current one.
func enroll(t *testing.T, st *raftstore.Store, root *trust.CA, id string, role trust.Role, ttl time.Duration) nodeKey {
	t.Helper()
	keyPEM, csrPEM, err := trust.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, serial, err := root.SignCSR(csrPEM, id, role, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: id}, Role: role.Proto(), CertSerial: serial,
			Spec: &shoalv1.NodeSpec{DesiredRole: role.Proto()}})
	}); err != nil {
		t.Fatal(err)
	}
	cert, err := trust.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	ident, err := trust.IdentityFromCert(cert)
	if err != nil {
		t.Fatal(err)
	}
	return nodeKey{certPEM: certPEM, keyPEM: keyPEM, id: ident}
}

func node(t *testing.T, st *raftstore.Store, id string) *shoalv1.Node {
	t.Helper()
	n, ok := raftstore.Get[*shoalv1.Node](st.View(), id)
	if !ok {
		t.Fatalf("node %q not found", id)
	}
	return n
}

func csr(t *testing.T) []byte {
	t.Helper()
	_, csrPEM, err := trust.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	return csrPEM
}

// TestRenewKeepsRoleAndPreviousSerial: a renewal keeps the role and the
// replaced serial as previous_cert_serial; a role change clears it.
func TestRenewKeepsRoleAndPreviousSerial(t *testing.T) {
	s, st, root := newServer(t, time.Hour)
	m := enroll(t, st, root, "m1", trust.RoleManager, time.Hour)
	ctx := trust.WithIdentity(context.Background(), m.id)
	resp, err := s.RenewNodeCertificate(ctx, &shoalv1.RenewNodeCertificateRequest{CsrPem: csr(t)})
	if err != nil {
		t.Fatal(err)
	}
	n := node(t, st, "m1")
	cert, _ := trust.ParseCertPEM(resp.GetCertPem())
	if resp.GetRole() != shoalv1.NodeRole_NODE_ROLE_MANAGER || n.GetCertSerial() != trust.SerialOf(cert) || n.GetPreviousCertSerial() != m.id.Serial {
		t.Fatalf("after renewal: role %s, node serial %s (cert %s), previous %s (want %s)", resp.GetRole(), n.GetCertSerial(), trust.SerialOf(cert), n.GetPreviousCertSerial(), m.id.Serial)
	}
	if got := cert.NotAfter.Sub(cert.NotBefore); got < time.Hour {
		t.Errorf("lifetime %s, want the cluster's hour", got)
	}
	// Demoted: the next renewal issues a worker certificate and forgets
	// the manager one.
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
		n := proto.Clone(node(t, st, "m1")).(*shoalv1.Node)
		n.Spec.DesiredRole = shoalv1.NodeRole_NODE_ROLE_WORKER
		return tx.Update(n)
	}); err != nil {
		t.Fatal(err)
	}
	resp, err = s.RenewNodeCertificate(ctx, &shoalv1.RenewNodeCertificateRequest{CsrPem: csr(t)})
	if err != nil {
		t.Fatal(err)
	}
	if n := node(t, st, "m1"); resp.GetRole() != shoalv1.NodeRole_NODE_ROLE_WORKER || n.GetRole() != shoalv1.NodeRole_NODE_ROLE_WORKER || n.GetPreviousCertSerial() != "" {
		t.Fatalf("after demotion: role %s, node %v", resp.GetRole(), n)
	}
}

// TestRenewOnlyForOwnNode: forwarding metadata naming another node is
// ignored; the certificate is for the direct peer.
func TestRenewOnlyForOwnNode(t *testing.T) {
	s, st, root := newServer(t, time.Hour)
	w := enroll(t, st, root, "w1", trust.RoleWorker, time.Hour)
	enroll(t, st, root, "m9", trust.RoleManager, time.Hour)
	ctx := trust.WithIdentity(context.Background(), w.id)
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("shoal-forwarded-for", "m9/manager/c1"))
	resp, err := s.RenewNodeCertificate(ctx, &shoalv1.RenewNodeCertificateRequest{CsrPem: csr(t)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetNodeId() != "w1" || resp.GetRole() != shoalv1.NodeRole_NODE_ROLE_WORKER {
		t.Fatalf("renewal issued for %q as %s, want w1 as worker", resp.GetNodeId(), resp.GetRole())
	}
	if _, err := s.RenewNodeCertificate(context.Background(), &shoalv1.RenewNodeCertificateRequest{CsrPem: csr(t)}); status.Code(errdefs.ToGRPC(err)) != codes.Unauthenticated {
		t.Fatalf("anonymous renewal without proof: %v", err)
	}
}

// TestRenewExpiredWithProof: an expired node renews anonymously with its
// old certificate and a signature by the old key, only while that
// certificate is still its current one.
func TestRenewExpiredWithProof(t *testing.T) {
	s, st, root := newServer(t, time.Hour)
	// (Expiry itself is trust.VerifyRenewalProof's to judge, tested there;
	// here the proof path is taken because the call has no identity.)
	w := enroll(t, st, root, "w1", trust.RoleWorker, time.Hour)
	other := enroll(t, st, root, "w2", trust.RoleWorker, time.Hour)
	req := func(certPEM, keyPEM []byte) *shoalv1.RenewNodeCertificateRequest {
		c := csr(t)
		sig, err := trust.SignRenewalProof(keyPEM, c)
		if err != nil {
			t.Fatal(err)
		}
		return &shoalv1.RenewNodeCertificateRequest{CsrPem: c, OldCertPem: certPEM, OldKeySignature: sig}
	}
	// Wrong key: w2's key signing for w1's certificate.
	if _, err := s.RenewNodeCertificate(context.Background(), req(w.certPEM, other.keyPEM)); status.Code(errdefs.ToGRPC(err)) != codes.PermissionDenied {
		t.Fatalf("proof by the wrong key: %v", err)
	}
	resp, err := s.RenewNodeCertificate(context.Background(), req(w.certPEM, w.keyPEM))
	if err != nil {
		t.Fatalf("valid proof: %v", err)
	}
	if resp.GetNodeId() != "w1" {
		t.Fatalf("issued for %q", resp.GetNodeId())
	}
	// The expired certificate is no longer the current one: a second use
	// of it (a copy, say) is refused.
	_, err = s.RenewNodeCertificate(context.Background(), req(w.certPEM, w.keyPEM))
	if status.Code(errdefs.ToGRPC(err)) != codes.PermissionDenied {
		t.Fatalf("proof with a replaced certificate: %v", err)
	}
}

// A node joins as a manager only when its description says it reads the
// raft store format the managers write (raftstore.StoreFormat): a manager of
// an older release would misapply newer entries. Workers join whatever
// their release; a refused join creates no node.
func TestManagerJoinNeedsStoreFormat(t *testing.T) {
	s, st, root := newServer(t, time.Hour)
	worker, err := trust.NewJoinToken(root.Digest())
	if err != nil {
		t.Fatal(err)
	}
	manager, err := trust.NewJoinToken(root.Digest())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
		c, _ := raftstore.Get[*shoalv1.Cluster](tx, "c1")
		c = proto.Clone(c).(*shoalv1.Cluster)
		c.Tokens = &shoalv1.JoinTokens{Worker: worker, Manager: manager}
		return tx.Update(c)
	}); err != nil {
		t.Fatal(err)
	}
	old := &shoalv1.NodeDescription{Hostname: "old"} // store_format 0: the release before it
	cur := &shoalv1.NodeDescription{Hostname: "new", StoreFormat: raftstore.StoreFormat}
	for _, tc := range []struct {
		name  string
		token string
		desc  *shoalv1.NodeDescription
		ok    bool
	}{
		{"old manager", manager, old, false},
		{"manager without description", manager, nil, false},
		{"old worker", worker, old, true},
		{"current manager", manager, cur, true},
	} {
		before := len(raftstore.List[*shoalv1.Node](st.View()))
		_, err := s.IssueNodeCertificate(context.Background(), &shoalv1.IssueNodeCertificateRequest{Token: tc.token, CsrPem: csr(t), Addr: "192.168.250.9:4242", Description: tc.desc})
		after := len(raftstore.List[*shoalv1.Node](st.View()))
		if tc.ok {
			if err != nil || after != before+1 {
				t.Fatalf("%s: %v (nodes %d -> %d)", tc.name, err, before, after)
			}
			continue
		}
		if status.Code(errdefs.ToGRPC(err)) != codes.FailedPrecondition || !strings.Contains(err.Error(), "description.store_format") || after != before {
			t.Fatalf("%s: got %v (nodes %d -> %d), want FailedPrecondition on description.store_format and no node", tc.name, err, before, after)
		}
	}
}
