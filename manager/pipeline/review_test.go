package pipeline_test

// Hostile review of the pipeline server: what a client can make it do
// that the same client could not make the gRPC server do with unary
// calls.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/client"
	"github.com/shoal-dev/shoal/errdefs"
	"github.com/shoal-dev/shoal/manager/forward"
	"github.com/shoal-dev/shoal/manager/pipeline"
	"github.com/shoal-dev/shoal/manager/transport"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
	"github.com/shoal-dev/shoal/trust/trusttest"
)

// reviewControl: GetNode holds its call until the call's context ends;
// GetCluster answers at once with a reply of replyBytes.
type reviewControl struct {
	shoalv1.UnimplementedControlServer
	started    atomic.Int64 // calls of any method begun
	running    atomic.Int64 // calls of any method not yet returned
	streams    atomic.Int64 // pipeline streams whose handler has not returned
	replyBytes int
}

func (c *reviewControl) GetNode(ctx context.Context, _ *shoalv1.GetNodeRequest) (*shoalv1.GetNodeResponse, error) {
	c.started.Add(1)
	c.running.Add(1)
	defer c.running.Add(-1)
	<-ctx.Done()
	return nil, ctx.Err()
}

func (c *reviewControl) GetCluster(context.Context, *shoalv1.GetClusterRequest) (*shoalv1.GetClusterResponse, error) {
	c.started.Add(1)
	return &shoalv1.GetClusterResponse{LeaderId: strings.Repeat("x", c.replyBytes)}, nil
}

// reviewServer serves a pipeline of limit calls per stream on loopback and
// returns its address.
func reviewServer(t *testing.T, ctl *reviewControl, limit int) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctl.streams.Add(1)
		defer ctl.streams.Add(-1)
		return h(srv, ss)
	}))
	pipe := &pipeline.Server{MaxInFlight: limit}
	shoalv1.RegisterControlServer(pipe, ctl)
	shoalv1.RegisterPipelineServer(srv, pipe)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func reviewStream(t *testing.T, addr string, opts ...grpc.DialOption) shoalv1.Pipeline_CallsClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := shoalv1.NewPipelineClient(cc).Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustSend(t *testing.T, s shoalv1.Pipeline_CallsClient, c *shoalv1.PipelineCall) {
	t.Helper()
	if err := s.Send(c); err != nil {
		t.Fatalf("send %v: %v", c, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func replyCode(t *testing.T, r *shoalv1.PipelineReply) codes.Code {
	t.Helper()
	if len(r.GetStatus()) == 0 {
		return codes.OK
	}
	sp := new(spb.Status)
	if err := proto.Unmarshal(r.GetStatus(), sp); err != nil {
		t.Fatal(err)
	}
	return codes.Code(sp.GetCode())
}

// A cancellation is one message on the stream, read after the calls
// before it. With every slot taken by calls that end only when cancelled,
// the read loop used to wait for a slot for the next call and never read
// the cancellation behind it: the stream deadlocked, where a unary call's
// cancellation (RST_STREAM) always reaches the server. Now a call beyond
// MaxInFlight is refused at once (RESOURCE_EXHAUSTED; the Go client sends
// no more than that, client/pipeline.go) and the read loop reads on. The
// handler returns ctx.Err() itself, which gRPC answers CANCELLED (the
// pipeline said UNKNOWN).
func TestReviewCancelBehindAWaitingCall(t *testing.T) {
	ctl := &reviewControl{}
	s := reviewStream(t, reviewServer(t, ctl, 1))
	mustSend(t, s, &shoalv1.PipelineCall{Id: 1, Method: shoalv1.Control_GetNode_FullMethodName})
	waitFor(t, "call 1 to run", func() bool { return ctl.started.Load() == 1 })
	mustSend(t, s, &shoalv1.PipelineCall{Id: 2, Method: shoalv1.Control_GetNode_FullMethodName})
	mustSend(t, s, &shoalv1.PipelineCall{Id: 1, Cancel: true})

	got := make(chan map[uint64]codes.Code, 1)
	go func() {
		m := map[uint64]codes.Code{}
		for len(m) < 2 {
			r, err := s.Recv()
			if err != nil {
				break
			}
			m[r.GetId()] = replyCode(t, r)
		}
		got <- m
	}()
	select {
	case m := <-got:
		if m[1] != codes.Canceled || m[2] != codes.ResourceExhausted {
			t.Fatalf("replies %v: want call 1 Canceled, call 2 (beyond MaxInFlight 1) ResourceExhausted", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no reply in 5 s: the cancellation of call 1 sits unread behind call 2, which waits for call 1's slot (%d calls running)", ctl.running.Load())
	}
}

// A client that sends calls and never reads the replies: the slot of a
// call was given back before its reply was sent, so the read loop went on
// starting calls whose workers then waited to send, without bound
// (MaxInFlight bounded nothing). Now a call holds its place until its
// reply is sent: the read loop stops, and HTTP/2 flow control holds the
// client.
func TestReviewUnreadRepliesBoundTheCalls(t *testing.T) {
	const limit = 4
	ctl := &reviewControl{replyBytes: 256 << 10}
	s := reviewStream(t, reviewServer(t, ctl, limit),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	for i := uint64(1); i <= 100; i++ {
		mustSend(t, s, &shoalv1.PipelineCall{Id: i, Method: shoalv1.Control_GetCluster_FullMethodName})
	}
	// The replies are never read. A few fit in the window; the calls
	// started may not run far past MaxInFlight. The bad outcome comes
	// within milliseconds; a second without it is the pass.
	end := time.Now().Add(time.Second)
	for time.Now().Before(end) {
		if n := ctl.started.Load(); n > 3*limit {
			t.Fatalf("%d calls started on a stream whose replies are not read (MaxInFlight %d): each holds a worker and its reply", n, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The client goes away (its connection closes) with calls running: the
// calls are cancelled and the stream's handler returns (no goroutine or
// call left on the server).
func TestReviewClientVanishes(t *testing.T) {
	ctl := &reviewControl{}
	addr := reviewServer(t, ctl, 8)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	s, err := shoalv1.NewPipelineClient(cc).Calls(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 3; i++ {
		mustSend(t, s, &shoalv1.PipelineCall{Id: i, Method: shoalv1.Control_GetNode_FullMethodName})
	}
	waitFor(t, "3 calls to run", func() bool { return ctl.running.Load() == 3 })
	cc.Close()
	waitFor(t, "the calls and the stream's handler to end", func() bool { return ctl.running.Load() == 0 && ctl.streams.Load() == 0 })
	if _, err := s.Recv(); err == nil || err == io.EOF {
		t.Fatalf("recv after close: %v", err)
	}
}

// authzRig is a manager's gRPC server as far as the pipeline goes: mTLS
// (the manager's mux and credentials), the manager's interceptor chains
// with the real authorizer (DefaultPolicy, Current from a revocation set)
// and forwarder, and Control served unary and over the pipeline.
type authzRig struct {
	addr      string
	root      *trust.CA
	revoked   sync.Map     // node ids whose certificates are no longer accepted
	pipelined atomic.Int64 // calls that came over the pipeline (before any check)
	unary     atomic.Int64 // calls that came unary (before any check)
	opened    atomic.Int64 // pipeline streams opened (before any check)
}

type leaderHere struct{}

func (leaderHere) IsLeader() bool                     { return true }
func (leaderHere) Leader() (string, string)           { return "m0", "" }
func (leaderHere) LeadershipChanged() <-chan struct{} { return nil }

func newAuthzRig(t *testing.T) *authzRig {
	t.Helper()
	rig := &authzRig{root: trusttest.NewRoot(t)}
	authz := &trust.Authorizer{Policy: trust.DefaultPolicy(), ClusterID: "c1",
		Current: func(_ context.Context, id trust.Identity) (trust.Role, error) {
			if _, gone := rig.revoked.Load(id.NodeID); gone {
				return "", fmt.Errorf("%s: %w", id.NodeID, trust.ErrNotCurrent)
			}
			return id.Role, nil
		},
		Tokens: func(_ context.Context, tok string) (trust.Identity, error) {
			if tok != "tok-admin" {
				return trust.Identity{}, errdefs.Unauthenticatedf("unknown token")
			}
			return trust.Identity{NodeID: "token-1", Serial: "t1", Role: trust.RoleAdminToken, ClusterID: "c1"}, nil
		}}
	fwd := forward.New(leaderHere{}, nil, slog.New(slog.DiscardHandler))
	chain := []grpc.UnaryServerInterceptor{errdefs.UnaryServerInterceptor(), authz.Unary(), fwd.Unary()}
	count := func(n *atomic.Int64) grpc.UnaryServerInterceptor {
		return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			n.Add(1)
			return h(ctx, req)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rig.addr = ln.Addr().String()
	mux := transport.NewMux(ln, trusttest.NodeCerts(t, rig.root, "m0", trust.RoleManager).ServerTLSConfig(), nil)
	srv := grpc.NewServer(grpc.Creds(transport.ServerCreds()),
		grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{count(&rig.unary)}, chain...)...),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			rig.opened.Add(1)
			return h(srv, ss)
		}, errdefs.StreamServerInterceptor(), authz.Stream(), fwd.Stream()))
	pipe := &pipeline.Server{Unary: append([]grpc.UnaryServerInterceptor{count(&rig.pipelined)}, chain...)}
	ctl := &reviewControl{}
	shoalv1.RegisterControlServer(srv, ctl)
	shoalv1.RegisterControlServer(pipe, ctl)
	shoalv1.RegisterPipelineServer(srv, pipe)
	ctx, cancel := context.WithCancel(context.Background())
	go mux.Serve(ctx)
	go srv.Serve(mux.GRPC())
	t.Cleanup(func() { srv.Stop(); cancel() })
	return rig
}

// certs issues a node's certificate, or with role admin an admin's.
func (rig *authzRig) certs(t *testing.T, id string, role trust.Role) *trust.CertStore {
	t.Helper()
	if role != trust.RoleAdmin {
		return trusttest.NodeCerts(t, rig.root, id, role)
	}
	certPEM, keyPEM, err := rig.root.IssueAdmin(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := trust.NewCertStore(&trust.Creds{CACertPEM: rig.root.CertPEM(), CertPEM: certPEM, KeyPEM: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (rig *authzRig) dial(t *testing.T, id string, role trust.Role, opts ...grpc.DialOption) shoalv1.ControlClient {
	t.Helper()
	cc, err := client.DialHosts([]string{rig.addr}, trust.ClientCreds(rig.certs(t, id, role)), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return shoalv1.NewControlClient(cc)
}

func reviewCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Each pipelined call is authorized against the store as it is then: an
// admin revoked while its stream stays open (no stream recheck here) is
// refused its next call on that same stream.
func TestReviewRevokedOnAnOpenStream(t *testing.T) {
	rig := newAuthzRig(t)
	c := rig.dial(t, "admin-1", trust.RoleAdmin)
	if _, err := c.GetCluster(reviewCtx(t), &shoalv1.GetClusterRequest{}); err != nil {
		t.Fatal(err)
	}
	rig.revoked.Store("admin-1", true)
	_, err := c.GetCluster(reviewCtx(t), &shoalv1.GetClusterRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("revoked admin's call: %v, want PermissionDenied", err)
	}
	if p, u, o := rig.pipelined.Load(), rig.unary.Load(), rig.opened.Load(); p != 2 || u != 0 || o != 1 {
		t.Fatalf("pipelined %d, unary %d, streams %d: want both calls on one stream", p, u, o)
	}
}

// A worker may not open the pipeline: its calls go unary, and it gets
// exactly what a worker gets there (GetNode, not CreateService).
func TestReviewWorkerGetsNothingMore(t *testing.T) {
	rig := newAuthzRig(t)
	c := rig.dial(t, "w1", trust.RoleWorker)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := c.GetNode(ctx, &shoalv1.GetNodeRequest{}); status.Code(err) != codes.DeadlineExceeded {
		// reviewControl's GetNode holds the call until its deadline.
		t.Fatalf("worker GetNode: %v, want it let through (held until its deadline)", err)
	}
	if _, err := c.CreateService(reviewCtx(t), &shoalv1.CreateServiceRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("worker CreateService: %v, want PermissionDenied", err)
	}
	if p := rig.pipelined.Load(); p != 0 {
		t.Fatalf("%d worker calls came over the pipeline", p)
	}
}

// Forwarding metadata on an admin's pipeline stream: the stream is
// refused, as a unary call carrying it is.
func TestReviewForwardingMetadataFromAnAdmin(t *testing.T) {
	rig := newAuthzRig(t)
	conf := rig.certs(t, "admin-1", trust.RoleAdmin)
	cc, err := grpc.NewClient(rig.addr, grpc.WithTransportCredentials(trust.ClientCreds(conf)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := metadata.AppendToOutgoingContext(reviewCtx(t), "shoal-forwarded-for", "m0/manager/c1")
	s, err := shoalv1.NewPipelineClient(cc).Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustSend(t, s, &shoalv1.PipelineCall{Id: 1, Method: shoalv1.Control_GetCluster_FullMethodName})
	if _, err := s.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("stream with forwarding metadata from an admin: %v, want PermissionDenied", err)
	}
	if p := rig.pipelined.Load(); p != 0 {
		t.Fatalf("%d calls ran", p)
	}
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// An API token caller (its token in every call's and stream's metadata)
// may not open the pipeline (no token policy for it): its calls go unary,
// each decided by the token policy, as before.
func TestReviewTokenCallerStaysUnary(t *testing.T) {
	rig := newAuthzRig(t)
	c := rig.dial(t, "admin-1", trust.RoleAdmin, grpc.WithPerRPCCredentials(bearer("tok-admin")))
	for i := 0; i < 3; i++ {
		if _, err := c.GetCluster(reviewCtx(t), &shoalv1.GetClusterRequest{}); err != nil {
			t.Fatalf("token GetCluster: %v", err)
		}
	}
	if p, u, o := rig.pipelined.Load(), rig.unary.Load(), rig.opened.Load(); p != 0 || u != 3 || o != 1 {
		t.Fatalf("pipelined %d, unary %d, streams %d: want 0, 3, 1", p, u, o)
	}
	bad := rig.dial(t, "admin-1", trust.RoleAdmin, grpc.WithPerRPCCredentials(bearer("tok-unknown")))
	if _, err := bad.GetCluster(reviewCtx(t), &shoalv1.GetClusterRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("unknown token: %v, want Unauthenticated", err)
	}
}
