package trust_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

func TestIdentitySerial(t *testing.T) {
	root := newRoot(t, "c1")
	cert := parseCert(t, nodeCreds(t, root, "n1", trust.RoleWorker).CertPEM)
	id, err := trust.IdentityFromCert(cert)
	if err != nil || id.Serial == "" || id.Serial != trust.SerialOf(cert) {
		t.Fatalf("identity %+v (%v), want serial %s", id, err, trust.SerialOf(cert))
	}
}

func storeNode(id string, role, desired shoalv1.NodeRole, serial, previous string) *shoalv1.Node {
	return &shoalv1.Node{Meta: &shoalv1.Meta{Id: id}, Role: role, CertSerial: serial, PreviousCertSerial: previous,
		Spec: &shoalv1.NodeSpec{DesiredRole: desired}}
}

// TestCurrentNodeRole is the decision table of "a certificate is only as
// good as the store says".
func TestCurrentNodeRole(t *testing.T) {
	const mgr, wrk = shoalv1.NodeRole_NODE_ROLE_MANAGER, shoalv1.NodeRole_NODE_ROLE_WORKER
	m := trust.Identity{NodeID: "n1", Role: trust.RoleManager, Serial: "aa"}
	w := trust.Identity{NodeID: "n1", Role: trust.RoleWorker, Serial: "aa"}
	for _, tc := range []struct {
		name    string
		id      trust.Identity
		node    *shoalv1.Node
		removed bool
		want    trust.Role
		err     error
	}{
		{"current manager", m, storeNode("n1", mgr, mgr, "aa", ""), false, trust.RoleManager, nil},
		{"current worker", w, storeNode("n1", wrk, wrk, "aa", ""), false, trust.RoleWorker, nil},
		{"previous serial, same role (renewal overlap)", m, storeNode("n1", mgr, mgr, "bb", "aa"), false, trust.RoleManager, nil},
		{"stale serial (two renewals ago)", m, storeNode("n1", mgr, mgr, "cc", "bb"), false, "", trust.ErrNotCurrent},
		{"no serial in the store", m, storeNode("n1", mgr, mgr, "", ""), false, "", trust.ErrNotCurrent},
		{"wrong role: manager certificate of a worker", m, storeNode("n1", wrk, wrk, "aa", ""), false, "", trust.ErrNotCurrent},
		{"demoted, not renewed yet: acts as a worker", m, storeNode("n1", mgr, wrk, "aa", ""), false, trust.RoleWorker, nil},
		{"promoted, not renewed yet: still a worker", w, storeNode("n1", wrk, mgr, "aa", ""), false, trust.RoleWorker, nil},
		{"removed", m, nil, true, "", trust.ErrNodeRemoved},
		{"unknown", m, nil, false, "", trust.ErrNodeUnknown},
		{"admin certificate is no node", trust.Identity{NodeID: "n1", Role: trust.RoleAdmin, Serial: "aa"}, storeNode("n1", mgr, mgr, "aa", ""), false, "", trust.ErrNotCurrent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := trust.CurrentNodeRole(tc.id, tc.node, tc.removed)
			if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("CurrentNodeRole = %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

// TestCurrentNodeRoleOfConnection: an admitted connection survives
// renewals (serial not checked) but not a demotion or removal.
func TestCurrentNodeRoleOfConnection(t *testing.T) {
	const mgr, wrk = shoalv1.NodeRole_NODE_ROLE_MANAGER, shoalv1.NodeRole_NODE_ROLE_WORKER
	m := trust.Identity{NodeID: "n1", Role: trust.RoleManager, Serial: "aa"}
	if r, err := trust.CurrentNodeRoleOfConnection(m, storeNode("n1", mgr, mgr, "cc", "bb"), false); err != nil || r != trust.RoleManager {
		t.Fatalf("after two renewals: %q, %v; want manager", r, err)
	}
	if r, _ := trust.CurrentNodeRoleOfConnection(m, storeNode("n1", mgr, wrk, "aa", ""), false); r != trust.RoleWorker {
		t.Fatalf("demoted: %q, want worker", r)
	}
	if _, err := trust.CurrentNodeRoleOfConnection(m, storeNode("n1", wrk, wrk, "cc", ""), false); !errors.Is(err, trust.ErrNotCurrent) {
		t.Fatalf("renewed as a worker: %v", err)
	}
	if _, err := trust.CurrentNodeRoleOfConnection(m, nil, true); !errors.Is(err, trust.ErrNodeRemoved) {
		t.Fatalf("removed: %v", err)
	}
}

// TestCheckAdmin: CheckAdmin's verdicts, and the index's (AdminIndex.Check)
// the same error for every case, listed twice included (the first entry
// counts) and an entry without a serial (matches nobody).
func TestCheckAdmin(t *testing.T) {
	now := time.Now()
	admins := []*shoalv1.AdminCertificate{
		{Name: "nobody"},
		{Name: "alice", Serial: "a1", NotAfter: timestamppb.New(now.Add(time.Hour))},
		{Name: "bob", Serial: "b1", Revoked: true, RevokedAt: timestamppb.New(now)},
		{Name: "carol", Serial: "c1", NotAfter: timestamppb.New(now.Add(-time.Minute))},
		{Name: "dave", Serial: "d1", Revoked: true},
		{Name: "dave", Serial: "d1"},
	}
	index := trust.IndexAdmins(admins)
	for _, tc := range []struct {
		name string
		id   trust.Identity
		ok   bool
	}{
		{"listed", trust.Identity{NodeID: "alice", Role: trust.RoleAdmin, Serial: "a1"}, true},
		{"revoked", trust.Identity{NodeID: "bob", Role: trust.RoleAdmin, Serial: "b1"}, false},
		{"expired", trust.Identity{NodeID: "carol", Role: trust.RoleAdmin, Serial: "c1"}, false},
		{"not listed", trust.Identity{NodeID: "alice", Role: trust.RoleAdmin, Serial: "zz"}, false},
		{"listed serial under another name", trust.Identity{NodeID: "mallory", Role: trust.RoleAdmin, Serial: "a1"}, false},
		{"no serial", trust.Identity{NodeID: "alice", Role: trust.RoleAdmin}, false},
		{"no serial, name of an entry without one", trust.Identity{NodeID: "nobody", Role: trust.RoleAdmin}, false},
		{"listed twice: the first entry (revoked) counts", trust.Identity{NodeID: "dave", Role: trust.RoleAdmin, Serial: "d1"}, false},
		{"a node certificate", trust.Identity{NodeID: "alice", Role: trust.RoleManager, Serial: "a1"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := trust.CheckAdmin(tc.id, admins, now)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, trust.ErrNotCurrent)) {
				t.Fatalf("CheckAdmin = %v, want ok=%v", err, tc.ok)
			}
			if ierr := index.Check(tc.id, now); fmt.Sprint(ierr) != fmt.Sprint(err) {
				t.Fatalf("index: %v, CheckAdmin: %v", ierr, err)
			}
		})
	}
}

// TestAuthorizerWithStore drives the manager's authorizer with the store
// check over real certificates: demoted, stale, removed, revoked callers.
func TestAuthorizerWithStore(t *testing.T) {
	root := newRoot(t, "c1")
	leaf := func(id string, role trust.Role) *x509.Certificate {
		return parseCert(t, nodeCreds(t, root, id, role).CertPEM)
	}
	m1, m1Old, demoted, w1, gone := leaf("m1", trust.RoleManager), leaf("m1", trust.RoleManager), leaf("m2", trust.RoleManager), leaf("w1", trust.RoleWorker), leaf("gone", trust.RoleManager)
	adminCert := parseCert(t, adminCreds(t, root).CertPEM)
	revokedAdmin := parseCert(t, adminCreds(t, root).CertPEM)
	const mgr, wrk = shoalv1.NodeRole_NODE_ROLE_MANAGER, shoalv1.NodeRole_NODE_ROLE_WORKER
	nodes := map[string]*shoalv1.Node{
		"m1": storeNode("m1", mgr, mgr, trust.SerialOf(m1), ""),
		"m2": storeNode("m2", mgr, wrk, trust.SerialOf(demoted), ""),
		"w1": storeNode("w1", wrk, wrk, trust.SerialOf(w1), ""),
	}
	admins := []*shoalv1.AdminCertificate{
		{Name: "admin", Serial: trust.SerialOf(adminCert)},
		{Name: "admin", Serial: trust.SerialOf(revokedAdmin), Revoked: true},
	}
	lookup := func(id string) (*shoalv1.Node, bool) { return nodes[id], id == "gone" }
	for _, c := range []struct {
		name  string
		check func(trust.Identity) (trust.Role, error)
	}{
		{"list", trust.StoreCheck(lookup, func() ([]*shoalv1.AdminCertificate, bool) { return admins, true })},
		{"index", trust.StoreCheckIndexed(lookup, func() (*trust.AdminIndex, bool) { return trust.IndexAdmins(admins), true })},
	} {
		t.Run(c.name, func(t *testing.T) {
			authorizeWithStore(t, c.check, m1, m1Old, demoted, w1, gone, adminCert, revokedAdmin)
		})
	}
}

func authorizeWithStore(t *testing.T, check func(trust.Identity) (trust.Role, error), m1, m1Old, demoted, w1, gone, adminCert, revokedAdmin *x509.Certificate) {
	a := &trust.Authorizer{Policy: trust.DefaultPolicy(), ClusterID: "c1",
		Current: func(_ context.Context, id trust.Identity) (trust.Role, error) { return check(id) }}
	const listNodes = shoalv1.Control_ListNodes_FullMethodName
	const session = shoalv1.Dispatcher_Session_FullMethodName
	for _, tc := range []struct {
		name     string
		leaf     *x509.Certificate
		method   string
		code     codes.Code
		wantRole trust.Role
	}{
		{"current manager on control", m1, listNodes, codes.OK, trust.RoleManager},
		{"stale manager certificate (replaced) on control", m1Old, listNodes, codes.PermissionDenied, ""},
		{"demoted manager on control", demoted, listNodes, codes.PermissionDenied, ""},
		{"demoted manager on raft membership", demoted, shoalv1.RaftMembership_JoinRaft_FullMethodName, codes.PermissionDenied, ""},
		{"demoted manager keeps its session, as a worker", demoted, session, codes.OK, trust.RoleWorker},
		{"demoted manager may renew, as a worker", demoted, shoalv1.NodeCA_RenewNodeCertificate_FullMethodName, codes.OK, trust.RoleWorker},
		{"removed manager", gone, session, codes.PermissionDenied, ""},
		{"worker may ask whether a node is current", w1, shoalv1.Control_GetNode_FullMethodName, codes.OK, trust.RoleWorker},
		{"worker still not on the rest of control", w1, listNodes, codes.PermissionDenied, ""},
		{"listed admin", adminCert, listNodes, codes.OK, trust.RoleAdmin},
		{"revoked admin", revokedAdmin, listNodes, codes.PermissionDenied, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seen *trust.Identity
			handler := func(ctx context.Context, _ any) (any, error) {
				if id, ok := trust.IdentityFrom(ctx); ok {
					seen = &id
				}
				return "ok", nil
			}
			_, err := a.Unary()(peerCtx(tc.leaf), nil, &grpc.UnaryServerInfo{FullMethod: tc.method}, handler)
			checkStatus(t, err, tc.code, "")
			if tc.wantRole != "" && (seen == nil || seen.Role != tc.wantRole) {
				t.Fatalf("handler saw %v, want role %s", seen, tc.wantRole)
			}
		})
	}
}

func TestRenewalProof(t *testing.T) {
	root := newRoot(t, "c1")
	oldCreds := nodeCreds(t, root, "n1", trust.RoleWorker)
	other := nodeCreds(t, root, "n2", trust.RoleWorker)
	_, csrPEM, err := trust.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := trust.SignRenewalProof(oldCreds.KeyPEM, csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	wrongSig, err := trust.SignRenewalProof(other.KeyPEM, csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	old := parseCert(t, oldCreds.CertPEM)
	expired := old.NotAfter.Add(time.Minute)
	foreign := nodeCreds(t, newRoot(t, "c1"), "n1", trust.RoleWorker)
	foreignSig, _ := trust.SignRenewalProof(foreign.KeyPEM, csrPEM)
	for _, tc := range []struct {
		name    string
		certPEM []byte
		sig     []byte
		csr     []byte
		now     time.Time
		errPart string
	}{
		{"valid, expired a minute ago", oldCreds.CertPEM, sig, csrPEM, expired, ""},
		{"valid, not expired", oldCreds.CertPEM, sig, csrPEM, time.Now(), ""},
		{"wrong key", oldCreds.CertPEM, wrongSig, csrPEM, expired, "old_key_signature: not a signature"},
		{"signature over another request", oldCreds.CertPEM, sig, append([]byte("x"), csrPEM...), expired, "old_key_signature: not a signature"},
		{"no signature", oldCreds.CertPEM, nil, csrPEM, expired, "old_key_signature: required"},
		{"too old", oldCreds.CertPEM, sig, csrPEM, old.NotAfter.Add(trust.MinExpiredRenewalWindow + time.Minute), "join the node again"},
		{"another CA", foreign.CertPEM, foreignSig, csrPEM, expired, "not a certificate of this cluster's CA"},
		{"admin certificate", adminCreds(t, root).CertPEM, sig, csrPEM, expired, "not a node certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := root.VerifyRenewalProof(tc.certPEM, tc.sig, tc.csr, tc.now)
			if tc.errPart == "" {
				if err != nil || id.NodeID != "n1" || id.Serial != trust.SerialOf(old) {
					t.Fatalf("VerifyRenewalProof = %+v, %v", id, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("VerifyRenewalProof error %v, want one containing %q", err, tc.errPart)
			}
		})
	}
}

func TestRenewAt(t *testing.T) {
	root := newRoot(t, "c1")
	_, csrPEM, err := trust.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := root.SignCSR(csrPEM, "n1", trust.RoleWorker, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cert := parseCert(t, certPEM)
	// NotBefore is backdated for clock skew; the lifetime counted is the
	// one asked for.
	if got, want := trust.RenewAt(cert), trust.IssuedAt(cert).Add(20*time.Second); !got.Equal(want) {
		t.Fatalf("RenewAt = %v, want %v (two thirds of 30 s after issue)", got, want)
	}
}

func TestSignAdminCSR(t *testing.T) {
	root := newRoot(t, "c1")
	_, csrPEM, err := trust.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	_, cert, err := root.SignAdminCSR(csrPEM, "ops", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := trust.IdentityFromCert(cert)
	if err != nil || id.Role != trust.RoleAdmin || id.NodeID != "ops" || len(cert.DNSNames) != 0 {
		t.Fatalf("admin certificate %+v (%v), DNS %v", id, err, cert.DNSNames)
	}
	if _, _, err := root.SignAdminCSR([]byte("junk"), "ops", time.Hour); err == nil {
		t.Fatal("a junk CSR was signed")
	}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// TestAuthorizerRechecksStreams: a stream in progress outlives renewals of
// its caller's certificate (Ongoing skips the serial) but ends with
// PERMISSION_DENIED once the caller is demoted.
func TestAuthorizerRechecksStreams(t *testing.T) {
	root := newRoot(t, "c1")
	m1 := parseCert(t, nodeCreds(t, root, "m1", trust.RoleManager).CertPEM)
	const mgr, wrk = shoalv1.NodeRole_NODE_ROLE_MANAGER, shoalv1.NodeRole_NODE_ROLE_WORKER
	var mu sync.Mutex // guards node
	node := storeNode("m1", mgr, mgr, trust.SerialOf(m1), "")
	lookup := func(string) (*shoalv1.Node, bool) {
		mu.Lock()
		defer mu.Unlock()
		return node, false
	}
	setNode := func(n *shoalv1.Node) {
		mu.Lock()
		defer mu.Unlock()
		node = n
	}
	noAdmins := func() ([]*shoalv1.AdminCertificate, bool) { return nil, true }
	full := trust.StoreCheck(lookup, noAdmins)
	ongoing := trust.StoreCheckOngoing(lookup, noAdmins)
	var rechecks atomic.Int32
	a := &trust.Authorizer{Policy: trust.DefaultPolicy(), Recheck: 10 * time.Millisecond,
		Current: func(_ context.Context, id trust.Identity) (trust.Role, error) { return full(id) },
		Ongoing: func(_ context.Context, id trust.Identity) (trust.Role, error) {
			defer rechecks.Add(1)
			return ongoing(id)
		}}
	renewed := make(chan struct{})
	demote := make(chan struct{})
	handler := func(_ any, ss grpc.ServerStream) error {
		close(renewed)
		<-demote
		<-ss.Context().Done()
		return ss.Context().Err()
	}
	done := make(chan error, 1)
	go func() {
		done <- a.Stream()(nil, &ctxStream{ctx: peerCtx(m1)}, &grpc.StreamServerInfo{FullMethod: shoalv1.Control_Watch_FullMethodName}, handler)
	}()
	<-renewed
	// Two renewals: the stream's certificate is neither current nor
	// previous, and the stream goes on.
	setNode(storeNode("m1", mgr, mgr, "cc", "bb"))
	for seen := rechecks.Load(); rechecks.Load() < seen+3; {
		select {
		case err := <-done:
			t.Fatalf("a renewal ended the stream: %v", err)
		case <-time.After(time.Millisecond): // poll the counter
		}
	}
	select {
	case err := <-done:
		t.Fatalf("a renewal ended the stream: %v", err)
	default:
	}
	setNode(storeNode("m1", mgr, wrk, "cc", "bb"))
	close(demote)
	select {
	case err := <-done:
		checkStatus(t, err, codes.PermissionDenied, "")
	case <-time.After(20 * time.Second):
		t.Fatal("the stream of a demoted manager was not ended")
	}
}

// TestStoreCheckBootstrapping: before the cluster object exists an admin
// is told to retry (UNAVAILABLE), not refused.
func TestStoreCheckBootstrapping(t *testing.T) {
	root := newRoot(t, "c1")
	admin := parseCert(t, adminCreds(t, root).CertPEM)
	for _, c := range []struct {
		name  string
		check func(trust.Identity) (trust.Role, error)
	}{
		{"list", trust.StoreCheck(func(string) (*shoalv1.Node, bool) { return nil, false },
			func() ([]*shoalv1.AdminCertificate, bool) { return nil, false })},
		{"index", trust.StoreCheckIndexed(func(string) (*shoalv1.Node, bool) { return nil, false },
			func() (*trust.AdminIndex, bool) { return trust.IndexAdmins(nil), false })},
	} {
		t.Run(c.name, func(t *testing.T) { checkBootstrapping(t, root, admin, c.check) })
	}
}

func checkBootstrapping(t *testing.T, root *trust.CA, admin *x509.Certificate, check func(trust.Identity) (trust.Role, error)) {
	a := &trust.Authorizer{Policy: trust.DefaultPolicy(), Current: func(_ context.Context, id trust.Identity) (trust.Role, error) { return check(id) }}
	_, err := a.Unary()(peerCtx(admin), nil, &grpc.UnaryServerInfo{FullMethod: shoalv1.Control_ListNodes_FullMethodName},
		func(context.Context, any) (any, error) { return nil, nil })
	checkStatus(t, err, codes.Unavailable, "")
	// Marked as the manager not being ready (a client stops waiting for it
	// soon and says so), for an admin and for a manager's node certificate
	// (the CLI on a joined manager's data dir) alike.
	if !errdefs.IsNotReady(err) || !strings.Contains(err.Error(), "manager not ready") {
		t.Fatalf("admin on a manager without state: %v, want NOT_READY", err)
	}
	// To the raft gate it stays a node not known yet (admitted while a
	// voter): managers restarted together elect a leader through it.
	if _, err := check(trust.Identity{NodeID: "m2", Role: trust.RoleManager, ClusterID: "c1"}); !errors.Is(err, trust.ErrNodeUnknown) {
		t.Fatalf("node check on a manager without state: %v, want ErrNodeUnknown", err)
	}
	mgr := parseCert(t, nodeCreds(t, root, "m2", trust.RoleManager).CertPEM)
	_, err = a.Unary()(peerCtx(mgr), nil, &grpc.UnaryServerInfo{FullMethod: shoalv1.Control_ListNodes_FullMethodName},
		func(context.Context, any) (any, error) { return nil, nil })
	if status.Code(errdefs.ToGRPC(err)) != codes.Unavailable || !errdefs.IsNotReady(errdefs.ToGRPC(err)) {
		t.Fatalf("manager certificate on a manager without state: %v, want NOT_READY", err)
	}
}
