package trust_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

func TestPolicyLookup(t *testing.T) {
	p := trust.DefaultPolicy()
	for _, tc := range []struct {
		method string
		roles  []trust.Role
		ok     bool
	}{
		{shoalv1.Control_ListNodes_FullMethodName, []trust.Role{trust.RoleManager, trust.RoleAdmin}, true},
		{shoalv1.Control_Watch_FullMethodName, []trust.Role{trust.RoleManager, trust.RoleAdmin}, true},
		{shoalv1.Dispatcher_Session_FullMethodName, []trust.Role{trust.RoleWorker, trust.RoleManager}, true},
		{shoalv1.NodeCA_GetRootCA_FullMethodName, nil, true},
		{shoalv1.NodeCA_IssueNodeCertificate_FullMethodName, nil, true},
		{shoalv1.NodeCA_RenewNodeCertificate_FullMethodName, nil, true}, // the handler decides (expired certificates)
		{shoalv1.Control_GetNode_FullMethodName, []trust.Role{trust.RoleWorker, trust.RoleManager, trust.RoleAdmin}, true},
		{shoalv1.RaftMembership_JoinRaft_FullMethodName, []trust.Role{trust.RoleManager}, true},
		{"/shoal.v1.NodeCA/SomethingNew", nil, false},
		{"/shoal.v1.Controller/ListNodes", nil, false}, // a prefix, but not of the service
		{"/grpc.health.v1.Health/Check", nil, false},
	} {
		roles, ok := p.Lookup(tc.method)
		if ok != tc.ok || !slices.Equal(roles, tc.roles) {
			t.Errorf("Lookup(%s) = %v, %v; want %v, %v", tc.method, roles, ok, tc.roles, tc.ok)
		}
	}
	// Every method the API defines is covered: nothing is denied by omission.
	for _, sd := range []grpc.ServiceDesc{shoalv1.Control_ServiceDesc, shoalv1.Dispatcher_ServiceDesc, shoalv1.NodeCA_ServiceDesc, shoalv1.RaftMembership_ServiceDesc} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, s := range sd.Streams {
			names = append(names, s.StreamName)
		}
		for _, n := range names {
			if _, ok := p.Lookup("/" + sd.ServiceName + "/" + n); !ok {
				t.Errorf("DefaultPolicy does not cover /%s/%s", sd.ServiceName, n)
			}
		}
	}
	// An exact method wins over its service's prefix.
	p = trust.Policy{"/s/": {trust.RoleAdmin}, "/s/Open": nil}
	if roles, ok := p.Lookup("/s/Open"); !ok || roles != nil {
		t.Errorf("exact key lost to the prefix: %v %v", roles, ok)
	}
}

// peerCtx is the context gRPC gives a handler for a peer whose verified
// chain starts with leaf (nil: no certificate).
func peerCtx(leaf *x509.Certificate) context.Context {
	st := tls.ConnectionState{HandshakeComplete: true}
	if leaf != nil {
		st.VerifiedChains = [][]*x509.Certificate{{leaf}}
		st.PeerCertificates = []*x509.Certificate{leaf}
	}
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: st}})
}

// TestAuthorizerDecisions drives the interceptor directly through every
// branch; TestAuthorizerOverMux below does the same over real connections.
func TestAuthorizerDecisions(t *testing.T) {
	root := newRoot(t, "c1")
	leaf := func(id string, role trust.Role) *x509.Certificate {
		return parseCert(t, nodeCreds(t, root, id, role).CertPEM)
	}
	manager, worker, gone := leaf("m1", trust.RoleManager), leaf("w1", trust.RoleWorker), leaf("gone", trust.RoleWorker)
	unknown := leaf("w-new", trust.RoleWorker)
	admin := parseCert(t, adminCreds(t, root).CertPEM)
	otherCluster := parseCert(t, nodeCreds(t, newRoot(t, "c2"), "m9", trust.RoleManager).CertPEM)
	a := &trust.Authorizer{
		Policy:    trust.DefaultPolicy(),
		ClusterID: "c1",
		Current: func(_ context.Context, id trust.Identity) (trust.Role, error) {
			switch id.NodeID {
			case "gone":
				return "", fmt.Errorf("node %q: %w", id.NodeID, trust.ErrNodeRemoved)
			case "w-new":
				return "", fmt.Errorf("node %q: %w", id.NodeID, trust.ErrNodeUnknown)
			}
			return id.Role, nil
		},
	}
	const listNodes = shoalv1.Control_ListNodes_FullMethodName
	for _, tc := range []struct {
		name   string
		leaf   *x509.Certificate
		method string
		code   codes.Code
		msg    string
		want   *trust.Identity // identity seen by the handler
	}{
		{"no cert", nil, listNodes, codes.Unauthenticated, "a client certificate issued by the cluster CA (or an API bearer token) is required for /shoal.v1.Control/ListNodes", nil},
		{"worker on control", worker, listNodes, codes.PermissionDenied, "role worker may not call /shoal.v1.Control/ListNodes (needs manager or admin)", nil},
		{"manager on control", manager, listNodes, codes.OK, "", &trust.Identity{NodeID: "m1", ClusterID: "c1", Role: trust.RoleManager}},
		{"admin on control", admin, listNodes, codes.OK, "", &trust.Identity{NodeID: "admin", ClusterID: "c1", Role: trust.RoleAdmin}},
		{"removed node", gone, shoalv1.Dispatcher_Session_FullMethodName, codes.PermissionDenied, `node "gone" has been removed from the cluster; its certificate is no longer accepted`, nil},
		{"removed node on a method its role may not call: told it is removed", gone, listNodes, codes.PermissionDenied, `node "gone" has been removed from the cluster; its certificate is no longer accepted`, nil},
		{"node not known yet: retryable, not removed", unknown, shoalv1.Dispatcher_Session_FullMethodName, codes.Unavailable, `worker "w-new" is not known to this server yet: node "w-new": node not known`, nil},
		{"other cluster id", otherCluster, listNodes, codes.Unauthenticated, "", nil},
		{"admin on raft membership", admin, shoalv1.RaftMembership_JoinRaft_FullMethodName, codes.PermissionDenied, "role admin may not call /shoal.v1.RaftMembership/JoinRaft (needs manager)", nil},
		{"unknown method", manager, "/shoal.v1.Control2/X", codes.PermissionDenied, "/shoal.v1.Control2/X is not allowed by the authorization policy", nil},
		{"open method without cert", nil, shoalv1.NodeCA_GetRootCA_FullMethodName, codes.OK, "", nil},
		{"open method names a valid caller", worker, shoalv1.NodeCA_GetRootCA_FullMethodName, codes.OK, "", &trust.Identity{NodeID: "w1", ClusterID: "c1", Role: trust.RoleWorker}},
		{"open method, removed caller passes anonymously", gone, shoalv1.NodeCA_IssueNodeCertificate_FullMethodName, codes.OK, "", nil},
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
			checkStatus(t, err, tc.code, tc.msg)
			if seen != nil {
				seen.Serial = "" // random; TestIdentitySerial checks it
			}
			if (seen == nil) != (tc.want == nil) || (seen != nil && *seen != *tc.want) {
				t.Errorf("handler saw identity %v, want %v", seen, tc.want)
			}
		})
	}
}

func checkStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(errdefs.ToGRPC(err)) // as the edge answers

	if st.Code() != code {
		t.Fatalf("code %v (%v), want %v", st.Code(), err, code)
	}
	if msg != "" && st.Message() != msg {
		t.Fatalf("message %q, want %q", st.Message(), msg)
	}
}

// identityRecorder is an interceptor placed after the authorizer that keeps
// the identity each handler would see.
type identityRecorder struct {
	mu   sync.Mutex // guards last
	last *trust.Identity
}

func (r *identityRecorder) record(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = nil
	if id, ok := trust.IdentityFrom(ctx); ok {
		r.last = &id
	}
}

func (r *identityRecorder) take() *trust.Identity {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := r.last
	r.last = nil
	return id
}

func TestAuthorizerOverMux(t *testing.T) {
	root := newRoot(t, "c1")
	server := newStore(t, nodeCreds(t, root, "m0", trust.RoleManager))
	policy := trust.Policy{
		healthpb.Health_Check_FullMethodName: {trust.RoleManager, trust.RoleAdmin},
		healthpb.Health_Watch_FullMethodName: {trust.RoleManager},
		// Health/List is deliberately missing: denied.
	}
	authz := &trust.Authorizer{Policy: policy, ClusterID: "c1", Current: func(_ context.Context, id trust.Identity) (trust.Role, error) {
		if id.NodeID == "gone" {
			return "", fmt.Errorf("node %q: %w", id.NodeID, trust.ErrNodeRemoved)
		}
		return id.Role, nil
	}}
	rec := &identityRecorder{}
	addr := serveGRPC(t, server, func(s *grpc.Server) {
		healthpb.RegisterHealthServer(s, health.NewServer())
	},
		grpc.ChainUnaryInterceptor(authz.Unary(), func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			rec.record(ctx)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(authz.Stream(), func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			rec.record(ss.Context())
			return h(srv, ss)
		}),
	)

	clientConf := func(c *trust.Creds) *tls.Config {
		if c == nil { // a joining node: trusts the CA, has no certificate
			return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: root.Pool(), ServerName: trust.ManagerServerName}
		}
		return newStore(t, c).ClientTLSConfig(trust.ManagerServerName, trust.ALPNGRPC)
	}
	foreign := nodeCreds(t, newRoot(t, "c1"), "m1", trust.RoleManager) // same cluster id, other CA
	foreignConf := newStore(t, foreign).ClientTLSConfig(trust.ManagerServerName, trust.ALPNGRPC)
	foreignConf.RootCAs = root.Pool() // it trusts our server; we must not trust it

	const check = healthpb.Health_Check_FullMethodName
	for _, tc := range []struct {
		name   string
		conf   *tls.Config
		method string // Check, List or Watch
		code   codes.Code
		msg    string // exact status message, if set
		want   *trust.Identity
	}{
		{"no cert", clientConf(nil), check, codes.Unauthenticated, "a client certificate issued by the cluster CA (or an API bearer token) is required for " + check, nil},
		{"worker on manager-only", clientConf(nodeCreds(t, root, "w1", trust.RoleWorker)), check, codes.PermissionDenied, "role worker may not call " + check + " (needs manager or admin)", nil},
		{"manager", clientConf(nodeCreds(t, root, "m1", trust.RoleManager)), check, codes.OK, "", &trust.Identity{NodeID: "m1", ClusterID: "c1", Role: trust.RoleManager}},
		{"admin", clientConf(adminCreds(t, root)), check, codes.OK, "", &trust.Identity{NodeID: "admin", ClusterID: "c1", Role: trust.RoleAdmin}},
		{"removed node", clientConf(nodeCreds(t, root, "gone", trust.RoleManager)), check, codes.PermissionDenied, `node "gone" has been removed from the cluster; its certificate is no longer accepted`, nil},
		{"method outside the policy", clientConf(nodeCreds(t, root, "m1", trust.RoleManager)), healthpb.Health_List_FullMethodName, codes.PermissionDenied, healthpb.Health_List_FullMethodName + " is not allowed by the authorization policy", nil},
		{"stream: worker denied", clientConf(nodeCreds(t, root, "w1", trust.RoleWorker)), healthpb.Health_Watch_FullMethodName, codes.PermissionDenied, "role worker may not call " + healthpb.Health_Watch_FullMethodName + " (needs manager)", nil},
		{"stream: manager allowed", clientConf(nodeCreds(t, root, "m2", trust.RoleManager)), healthpb.Health_Watch_FullMethodName, codes.OK, "", &trust.Identity{NodeID: "m2", ClusterID: "c1", Role: trust.RoleManager}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := healthpb.NewHealthClient(dial(t, addr, tc.conf))
			ctx := testCtx(t)
			var err error
			switch tc.method {
			case healthpb.Health_Check_FullMethodName:
				_, err = client.Check(ctx, &healthpb.HealthCheckRequest{})
			case healthpb.Health_List_FullMethodName:
				_, err = client.List(ctx, &healthpb.HealthListRequest{})
			case healthpb.Health_Watch_FullMethodName:
				var stream grpc.ServerStreamingClient[healthpb.HealthCheckResponse]
				if stream, err = client.Watch(ctx, &healthpb.HealthCheckRequest{}); err == nil {
					_, err = stream.Recv() // the first status, or the refusal
				}
			}
			checkStatus(t, err, tc.code, tc.msg)
			got := rec.take()
			if got != nil {
				got.Serial = ""
			}
			if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
				t.Errorf("handler saw identity %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("other cluster's CA refused at handshake", func(t *testing.T) {
		_, err := healthpb.NewHealthClient(dial(t, addr, foreignConf)).Check(testCtx(t), &healthpb.HealthCheckRequest{})
		// The server's alert ("unknown certificate authority") races with the
		// client's first writes, so the message may also be a broken pipe.
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Check with a certificate of another CA: %v", err)
		}
		if got := rec.take(); got != nil {
			t.Errorf("a handler ran for %v", got)
		}
	})
}
