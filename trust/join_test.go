package trust_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// fakeNodeCA is a NodeCA server with one worker token.
type fakeNodeCA struct {
	shoalv1.UnimplementedNodeCAServer
	root    *trust.CA
	rootPEM []byte // what GetRootCA answers
	token   string

	mu     sync.Mutex // guards issued
	issued []*shoalv1.IssueNodeCertificateRequest
}

func (f *fakeNodeCA) GetRootCA(context.Context, *shoalv1.GetRootCARequest) (*shoalv1.GetRootCAResponse, error) {
	return &shoalv1.GetRootCAResponse{CaCertPem: f.rootPEM}, nil
}

func (f *fakeNodeCA) IssueNodeCertificate(_ context.Context, req *shoalv1.IssueNodeCertificateRequest) (*shoalv1.IssueNodeCertificateResponse, error) {
	f.mu.Lock()
	f.issued = append(f.issued, req)
	f.mu.Unlock()
	if !trust.TokenEqual(req.GetToken(), f.token) {
		return nil, errdefs.PermissionDeniedf("the join token is not valid for this cluster")
	}
	certPEM, _, err := f.root.SignCSR(req.GetCsrPem(), "node-1", trust.RoleWorker, testTTL)
	if err != nil {
		return nil, errdefs.InvalidArgumentf("csr_pem: %v", err)
	}
	return &shoalv1.IssueNodeCertificateResponse{NodeId: "node-1", CertPem: certPEM, CaCertPem: f.root.CertPEM(), Role: shoalv1.NodeRole_NODE_ROLE_WORKER}, nil
}

func (f *fakeNodeCA) requests() []*shoalv1.IssueNodeCertificateRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.issued)
}

// serveNodeCA serves f over a Mux with a manager certificate of serverRoot
// behind the default policy, and returns the address.
func serveNodeCA(t *testing.T, serverRoot *trust.CA, f *fakeNodeCA) string {
	t.Helper()
	certs := newStore(t, nodeCreds(t, serverRoot, "m0", trust.RoleManager))
	authz := &trust.Authorizer{Policy: trust.DefaultPolicy(), ClusterID: serverRoot.ClusterID()}
	return serveGRPC(t, certs, func(s *grpc.Server) { shoalv1.RegisterNodeCAServer(s, f) },
		grpc.ChainUnaryInterceptor(authz.Unary()), grpc.ChainStreamInterceptor(authz.Stream()))
}

func newFake(t *testing.T, root *trust.CA) *fakeNodeCA {
	tok, err := trust.NewJoinToken(root.Digest())
	if err != nil {
		t.Fatal(err)
	}
	return &fakeNodeCA{root: root, rootPEM: root.CertPEM(), token: tok}
}

func TestJoinCredentials(t *testing.T) {
	root := newRoot(t, "c1")
	f := newFake(t, root)
	addr := serveNodeCA(t, root, f)
	desc := &shoalv1.NodeDescription{Hostname: "h1", Os: "linux", Arch: "amd64"}

	creds, resp, err := trust.JoinCredentials(testCtx(t), addr, f.token+"\n", desc, "127.0.0.1:4242")
	if err != nil {
		t.Fatalf("JoinCredentials: %v", err)
	}
	if resp.GetNodeId() != "node-1" || resp.GetRole() != shoalv1.NodeRole_NODE_ROLE_WORKER {
		t.Errorf("response %v", resp)
	}
	if !bytes.Equal(creds.CACertPEM, root.CertPEM()) {
		t.Error("credentials do not carry the pinned CA")
	}
	id, err := creds.Identity()
	if err != nil || withoutSerial(id) != (trust.Identity{NodeID: "node-1", ClusterID: "c1", Role: trust.RoleWorker}) {
		t.Errorf("identity %+v, %v", id, err)
	}
	if _, err := trust.NewCertStore(creds); err != nil {
		t.Errorf("joined credentials do not make a cert store: %v", err)
	}
	reqs := f.requests()
	if len(reqs) != 1 || reqs[0].GetToken() != f.token || reqs[0].GetAddr() != "127.0.0.1:4242" || reqs[0].GetDescription().GetHostname() != "h1" {
		t.Errorf("manager saw requests %v", reqs)
	}
}

func TestJoinCredentialsRefused(t *testing.T) {
	root := newRoot(t, "c1")
	f := newFake(t, root)
	addr := serveNodeCA(t, root, f)

	// Malformed: nothing is dialled.
	if _, _, err := trust.JoinCredentials(testCtx(t), addr, "SHOAL-1-nope", nil, ""); !errors.Is(err, trust.ErrMalformedToken) {
		t.Errorf("malformed token: %v", err)
	}
	// Right CA, wrong secret: the manager refuses.
	wrong, err := trust.NewJoinToken(root.Digest())
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = trust.JoinCredentials(testCtx(t), addr, wrong, nil, "")
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("wrong secret: %v", err)
	}
	if strings.Contains(err.Error(), wrong[len(wrong)-26:]) {
		t.Errorf("error %q quotes the secret", err)
	}
}

func TestFetchRootCA(t *testing.T) {
	root := newRoot(t, "c1")
	f := newFake(t, root)
	// A second certificate appended to the answer must not reach the
	// joiner's trust pool.
	f.rootPEM = append(root.CertPEM(), newRoot(t, "evil").CertPEM()...)
	addr := serveNodeCA(t, root, f)

	got, err := trust.FetchRootCA(testCtx(t), addr, root.Digest())
	if err != nil {
		t.Fatalf("FetchRootCA: %v", err)
	}
	if !bytes.Equal(got, root.CertPEM()) {
		t.Errorf("FetchRootCA returned\n%s\nwant exactly the pinned root", got)
	}

	other := newRoot(t, "c2")
	_, err = trust.FetchRootCA(testCtx(t), addr, other.Digest())
	want := fmt.Sprintf("manager at %q presented CA sha256:%s but the join token pins sha256:%s; refusing to join", addr, root.Digest()[:12], other.Digest()[:12])
	if err == nil || err.Error() != want {
		t.Fatalf("FetchRootCA with a wrong pin:\n got %v\nwant %s", err, want)
	}
	tok, err := trust.NewJoinToken(other.Digest())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := trust.JoinCredentials(testCtx(t), addr, tok, nil, ""); err == nil || err.Error() != want {
		t.Errorf("JoinCredentials with a token of another cluster: %v", err)
	}
	if len(f.requests()) != 0 {
		t.Error("the token was sent to a manager of another CA")
	}
}

// TestJoinRefusesImpostor: a server that hands out the real CA certificate
// (it is public) but cannot prove it is a manager of that CA gets no token.
func TestJoinRefusesImpostor(t *testing.T) {
	root := newRoot(t, "c1")
	f := newFake(t, root)
	impostorRoot := newRoot(t, "c1")
	addr := serveNodeCA(t, impostorRoot, f) // answers GetRootCA with root's cert

	_, _, err := trust.JoinCredentials(testCtx(t), addr, f.token, nil, "")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("JoinCredentials against an impostor: %v, want Unavailable (handshake refused)", err)
	}
	if len(f.requests()) != 0 {
		t.Error("the token was sent to an impostor")
	}
}
