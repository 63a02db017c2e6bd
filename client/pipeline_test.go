package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// The client's side of the pipeline (pipeline.go) against a manager the
// tests script: pipeServer serves shoal.v1.Pipeline (each call received
// is handed to the test, or answered at once) and shoal.v1.Control's
// unary methods, whose replies say "unary", so a test tells which way a
// call went from its reply and from the server's counts.

// waitFor bounds every wait of these tests for something that should
// happen (a call arriving, a reply, a stream ending).
const waitFor = 20 * time.Second

// pipeServer is a scripted manager.
type pipeServer struct {
	shoalv1.UnimplementedPipelineServer
	shoalv1.UnimplementedControlServer

	// handle gets each call of every stream, on the stream's receiving
	// goroutine; nil: calls does.
	handle  func(*srvCall)
	calls   chan *srvCall
	streams chan *srvStream // every stream opened, in order

	attempts atomic.Int32 // Pipeline streams the transport saw (tap), refused ones included
	opened   atomic.Int32 // streams that reached Calls
	unary    atomic.Int32 // Control calls that came as unary calls
}

func newPipeServer() *pipeServer {
	return &pipeServer{calls: make(chan *srvCall, 1024), streams: make(chan *srvStream, 64)}
}

// srvStream is one stream the server serves.
type srvStream struct {
	n       int32 // 1 for the first stream opened
	st      shoalv1.Pipeline_CallsServer
	sendMu  sync.Mutex    // one Send at a time
	recvEnd chan struct{} // closed when Recv failed (io.EOF: the client closed its side)
	recvErr error         // why; set before recvEnd is closed
	end     chan error    // a value ends Calls with it
	done    chan struct{} // closed when Calls returned
}

// srvCall is one message received on a stream (a call or a cancel).
type srvCall struct {
	s *srvStream
	*shoalv1.PipelineCall
}

func (p *pipeServer) Calls(st shoalv1.Pipeline_CallsServer) error {
	s := &srvStream{n: p.opened.Add(1), st: st, recvEnd: make(chan struct{}), end: make(chan error, 1), done: make(chan struct{})}
	defer close(s.done)
	p.streams <- s
	go func() {
		for {
			c, err := st.Recv()
			if err != nil {
				s.recvErr = err
				close(s.recvEnd)
				return
			}
			sc := &srvCall{s: s, PipelineCall: c}
			if p.handle != nil {
				p.handle(sc)
			} else {
				p.calls <- sc
			}
		}
	}()
	select {
	case err := <-s.end:
		return err
	case <-st.Context().Done():
		return st.Context().Err()
	}
}

func (p *pipeServer) GetCluster(context.Context, *shoalv1.GetClusterRequest) (*shoalv1.GetClusterResponse, error) {
	p.unary.Add(1)
	return &shoalv1.GetClusterResponse{LeaderId: "unary"}, nil
}

func (p *pipeServer) GetNode(_ context.Context, req *shoalv1.GetNodeRequest) (*shoalv1.GetNodeResponse, error) {
	p.unary.Add(1)
	return &shoalv1.GetNodeResponse{Node: &shoalv1.Node{Meta: &shoalv1.Meta{Id: "unary " + req.GetRef()}}}, nil
}

func (p *pipeServer) ListTasks(context.Context, *shoalv1.ListTasksRequest) (*shoalv1.ListTasksResponse, error) {
	p.unary.Add(1)
	return &shoalv1.ListTasksResponse{}, nil
}

// reply answers c with m.
func (c *srvCall) reply(m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return c.s.send(&shoalv1.PipelineReply{Id: c.GetId(), Reply: b})
}

// fail answers c with err's status.
func (c *srvCall) fail(err error) error {
	b, merr := proto.Marshal(status.Convert(err).Proto())
	if merr != nil {
		return merr
	}
	return c.s.send(&shoalv1.PipelineReply{Id: c.GetId(), Status: b})
}

func (s *srvStream) send(r *shoalv1.PipelineReply) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.st.Send(r)
}

// ref is the Ref of c's GetNode request ("" for other methods).
func (c *srvCall) ref() string {
	req := new(shoalv1.GetNodeRequest)
	if c.GetMethod() != shoalv1.Control_GetNode_FullMethodName || proto.Unmarshal(c.GetRequest(), req) != nil {
		return ""
	}
	return req.GetRef()
}

// answer answers c as Control would, saying "pipelined".
func answer(c *srvCall) {
	if c.GetCancel() {
		return
	}
	switch c.GetMethod() {
	case shoalv1.Control_GetCluster_FullMethodName:
		c.reply(&shoalv1.GetClusterResponse{LeaderId: "pipelined"})
	case shoalv1.Control_GetNode_FullMethodName:
		c.reply(nodeReply(c.ref()))
	default:
		c.fail(status.Errorf(codes.Unimplemented, "%s is not scripted", c.GetMethod()))
	}
}

func nodeReply(ref string) *shoalv1.GetNodeResponse {
	return &shoalv1.GetNodeResponse{Node: &shoalv1.Node{Meta: &shoalv1.Meta{Id: ref}}}
}

// next is the next message the server received (calls that handle did
// not take).
func (p *pipeServer) next(t *testing.T) *srvCall {
	t.Helper()
	select {
	case c := <-p.calls:
		return c
	case <-time.After(waitFor):
		t.Fatal("no call reached the server's pipeline")
		return nil
	}
}

// serveOpts says what the scripted manager serves.
type serveOpts struct {
	noPipeline bool  // Control only: an earlier release
	refuse     error // the Pipeline stream is refused with it
	// smallWindow: 64 KiB HTTP/2 windows, fixed (gRPC's dynamic window
	// may grow to 16 MiB)
	smallWindow bool
}

// servePipe serves p on a fresh loopback port until the test ends.
func servePipe(t *testing.T, p *pipeServer, o serveOpts) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newPipeGRPCServer(p, o)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func newPipeGRPCServer(p *pipeServer, o serveOpts) *grpc.Server {
	var opts []grpc.ServerOption
	if o.smallWindow {
		opts = append(opts, grpc.StaticStreamWindowSize(64<<10), grpc.StaticConnWindowSize(64<<10))
	}
	srv := grpc.NewServer(append(opts,
		// Every stream the transport is asked for, the unknown service's
		// included (interceptors do not see those).
		grpc.InTapHandle(func(ctx context.Context, info *tap.Info) (context.Context, error) {
			if info.FullMethodName == shoalv1.Pipeline_Calls_FullMethodName {
				p.attempts.Add(1)
			}
			return ctx, nil
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if o.refuse != nil && info.FullMethod == shoalv1.Pipeline_Calls_FullMethodName {
				return o.refuse
			}
			return h(srv, ss)
		}))...)
	shoalv1.RegisterControlServer(srv, p)
	if !o.noPipeline {
		shoalv1.RegisterPipelineServer(srv, p)
	}
	return srv
}

// dialPipe is the client's connection (DialHosts: retries over the
// pipeline) to addr.
func dialPipe(t *testing.T, addr string) shoalv1.ControlClient {
	t.Helper()
	conn, err := DialHosts([]string{addr}, insecure.NewCredentials())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return shoalv1.NewControlClient(conn)
}

// dialBare is a connection to addr with the pipeline as its only
// interceptor: no retries, so a test sees each answer as it came.
func dialBare(t *testing.T, addr string, opts ...grpc.DialOption) (shoalv1.ControlClient, *pipeline) {
	t.Helper()
	pl := newPipeline(context.Background())
	conn, err := grpc.NewClient("passthrough:///"+addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(pl.unary)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return shoalv1.NewControlClient(conn), pl
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// result is what a call in a goroutine got.
type result struct {
	ref string
	err error
}

// getNode calls GetNode(ref) on its own goroutine.
func getNode(ctx context.Context, c shoalv1.ControlClient, ref string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		r, err := c.GetNode(ctx, &shoalv1.GetNodeRequest{Ref: ref})
		ch <- result{r.GetNode().GetMeta().GetId(), err}
	}()
	return ch
}

func wait(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitFor):
		t.Fatal("the call did not return")
		return result{}
	}
}

func closed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitFor):
		t.Fatalf("%s did not happen", what)
	}
}

// TestPipelineCarriesControlCalls: Control's calls other than lists go
// over the pipeline; lists, and calls asking for what the pipeline does
// not carry (outgoing metadata, headers, trailers), go as unary calls.
func TestPipelineCarriesControlCalls(t *testing.T) {
	p := newPipeServer()
	var pipelined atomic.Int32
	p.handle = func(c *srvCall) { pipelined.Add(1); answer(c) }
	c := dialPipe(t, servePipe(t, p, serveOpts{}))
	ctx := callCtx(t)

	r, err := c.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if err != nil || r.GetLeaderId() != "pipelined" || pipelined.Load() != 1 || p.unary.Load() != 0 {
		t.Fatalf("GetCluster: %v, %q; pipelined %d, unary %d: want it over the pipeline", err, r.GetLeaderId(), pipelined.Load(), p.unary.Load())
	}

	if _, err := c.ListTasks(ctx, &shoalv1.ListTasksRequest{}); err != nil {
		t.Fatal(err)
	}
	if pipelined.Load() != 1 || p.unary.Load() != 1 {
		t.Fatalf("ListTasks: pipelined %d, unary %d: want it unary", pipelined.Load(), p.unary.Load())
	}

	var md metadata.MD
	for _, tc := range []struct {
		name string
		ctx  context.Context
		opts []grpc.CallOption
	}{
		{"outgoing metadata", metadata.AppendToOutgoingContext(ctx, "x-test", "1"), nil},
		{"grpc.Header", ctx, []grpc.CallOption{grpc.Header(&md)}},
		{"grpc.Trailer", ctx, []grpc.CallOption{grpc.Trailer(&md)}},
	} {
		before := p.unary.Load()
		r, err := c.GetCluster(tc.ctx, &shoalv1.GetClusterRequest{}, tc.opts...)
		if err != nil || r.GetLeaderId() != "unary" || p.unary.Load() != before+1 {
			t.Errorf("GetCluster with %s: %v, %q: want it unary", tc.name, err, r.GetLeaderId())
		}
	}
	if pipelined.Load() != 1 || p.opened.Load() != 1 {
		t.Errorf("pipelined %d calls on %d streams, want 1 on 1", pipelined.Load(), p.opened.Load())
	}
}

// TestPipelineConcurrentCallsOwnReplies: calls in flight at once on one
// stream each get their own reply, answered in another order than sent.
func TestPipelineConcurrentCallsOwnReplies(t *testing.T) {
	const n = 200
	p := newPipeServer()
	c := dialPipe(t, servePipe(t, p, serveOpts{}))
	ctx := callCtx(t)
	results := make([]<-chan result, n)
	for i := range n {
		results[i] = getNode(ctx, c, fmt.Sprint("node-", i))
	}
	calls := make([]*srvCall, n)
	ids := map[uint64]bool{}
	for i := range calls {
		calls[i] = p.next(t)
		if ids[calls[i].GetId()] {
			t.Fatalf("id %d sent twice", calls[i].GetId())
		}
		ids[calls[i].GetId()] = true
	}
	for _, i := range rand.Perm(n) {
		if err := calls[i].reply(nodeReply(calls[i].ref())); err != nil {
			t.Fatal(err)
		}
	}
	for i, ch := range results {
		if r := wait(t, ch); r.err != nil || r.ref != fmt.Sprint("node-", i) {
			t.Errorf("call %d: %q, %v", i, r.ref, r.err)
		}
	}
	if p.opened.Load() != 1 || p.unary.Load() != 0 {
		t.Errorf("%d streams, %d unary calls: want 1 stream, no unary call", p.opened.Load(), p.unary.Load())
	}
}

// TestPipelineErrorReplyKeepsStatus: an error reply is the call's error
// with its code, message and details, as a unary call's would be.
func TestPipelineErrorReplyKeepsStatus(t *testing.T) {
	bad, err := status.New(codes.InvalidArgument, "spec.replicas: must be at least 0").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "spec.replicas", Description: "must be at least 0"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		err   error
		check func(error) bool
	}{
		{"not ready", errdefs.ToGRPC(errdefs.NotReadyf("manager not ready: it holds no cluster state yet")), errdefs.IsNotReady},
		{"bad request", bad.Err(), errdefs.IsInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipeServer()
			p.handle = func(c *srvCall) { c.fail(tc.err) }
			c, _ := dialBare(t, servePipe(t, p, serveOpts{}))
			_, err := c.GetCluster(callCtx(t), &shoalv1.GetClusterRequest{})
			want := status.Convert(tc.err).Proto()
			if got := status.Convert(err).Proto(); !proto.Equal(got, want) || len(got.GetDetails()) == 0 {
				t.Fatalf("got %v, want %v", got, want)
			}
			if !tc.check(err) {
				t.Errorf("%v: not classified as the server's error", err)
			}
			if p.opened.Load() != 1 || p.unary.Load() != 0 {
				t.Errorf("%d streams, %d unary calls: want the call pipelined", p.opened.Load(), p.unary.Load())
			}
		})
	}
}

// TestPipelineNotServedFallsBackToUnary: a manager that refuses the stream
// (an earlier release: no Pipeline service, or a policy without it) gets
// the calls as unary calls, and is not asked for a stream again.
func TestPipelineNotServedFallsBackToUnary(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    serveOpts
	}{
		{"no Pipeline service", serveOpts{noPipeline: true}},
		{"policy without the method", serveOpts{refuse: errdefs.ToGRPC(errdefs.PermissionDeniedf(
			"%s is not allowed by the authorization policy", shoalv1.Pipeline_Calls_FullMethodName))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipeServer()
			p.handle = answer
			addr := servePipe(t, p, tc.o)
			for _, dial := range []struct {
				name string
				c    shoalv1.ControlClient
			}{{"bare", func() shoalv1.ControlClient { c, _ := dialBare(t, addr); return c }()}, {"DialHosts", dialPipe(t, addr)}} {
				before := p.attempts.Load()
				ctx := callCtx(t)
				// Calls at once, then one after the other.
				var wg sync.WaitGroup
				for i := range 20 {
					wg.Go(func() {
						r, err := dial.c.GetCluster(ctx, &shoalv1.GetClusterRequest{})
						if err != nil || r.GetLeaderId() != "unary" {
							t.Errorf("%s: call %d: %v, %q: want it answered as a unary call", dial.name, i, err, r.GetLeaderId())
						}
					})
				}
				wg.Wait()
				for i := range 5 {
					r, err := dial.c.GetCluster(ctx, &shoalv1.GetClusterRequest{})
					if err != nil || r.GetLeaderId() != "unary" {
						t.Errorf("%s: later call %d: %v, %q", dial.name, i, err, r.GetLeaderId())
					}
				}
				if n := p.attempts.Load() - before; n != 1 {
					t.Errorf("%s: %d streams asked for, want 1", dial.name, n)
				}
			}
			if p.opened.Load() != 0 {
				t.Errorf("%d streams reached the pipeline, want 0", p.opened.Load())
			}
		})
	}
}

// TestPipelineRefusalSeenAtSend: a call that sends on a stream the
// manager has already refused (SendMsg says io.EOF) learns of the refusal
// from the stream's end and goes as a unary call, without another stream
// (it failed UNAVAILABLE and was retried on a new stream).
func TestPipelineRefusalSeenAtSend(t *testing.T) {
	p := newPipeServer()
	addr := servePipe(t, p, serveOpts{noPipeline: true})
	c, _ := dialBare(t, addr, grpc.WithStreamInterceptor(sendAfterEnd))
	for i := range 3 {
		r, err := c.GetCluster(callCtx(t), &shoalv1.GetClusterRequest{})
		if err != nil || r.GetLeaderId() != "unary" {
			t.Fatalf("call %d: %v, %q: want it answered as a unary call", i, err, r.GetLeaderId())
		}
	}
	if p.attempts.Load() != 1 {
		t.Errorf("%d streams asked for, want 1", p.attempts.Load())
	}
}

// sendAfterEnd is a stream interceptor whose streams send their first
// message once their status came (Header returns when the stream ended
// without headers), and read only after that send: the first call finds
// the refused stream ended when it sends.
func sendAfterEnd(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &lateSend{ClientStream: cs, sent: make(chan struct{})}, nil
}

type lateSend struct {
	grpc.ClientStream
	once sync.Once
	sent chan struct{} // closed when the first SendMsg returned
}

func (s *lateSend) SendMsg(m any) error {
	first := false
	s.once.Do(func() { first = true })
	if !first {
		return s.ClientStream.SendMsg(m)
	}
	defer close(s.sent)
	s.ClientStream.Header()
	return s.ClientStream.SendMsg(m)
}

func (s *lateSend) RecvMsg(m any) error {
	<-s.sent
	return s.ClientStream.RecvMsg(m)
}

// TestPipelineOtherRefusalNotFallback: a stream refused PERMISSION_DENIED
// for another reason than the method (the caller's certificate, say) is
// not taken for an earlier release: the call fails as the unary call
// would, and the next call asks for a stream again.
func TestPipelineOtherRefusalNotFallback(t *testing.T) {
	p := newPipeServer()
	p.handle = answer
	c := dialPipe(t, servePipe(t, p, serveOpts{refuse: errdefs.ToGRPC(errdefs.PermissionDeniedf("certificate serial 7 was revoked"))}))
	ctx := callCtx(t)
	for range 2 {
		if _, err := c.GetCluster(ctx, &shoalv1.GetClusterRequest{}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("got %v, want the refusal", err)
		}
	}
	if p.unary.Load() != 0 || p.attempts.Load() != 2 {
		t.Errorf("%d unary calls, %d streams asked for: want 0 and 2", p.unary.Load(), p.attempts.Load())
	}
}

// TestPipelineUnavailableReplyRetiresStream: a call answered UNAVAILABLE
// closes the stream for sending; the retry goes over a new stream, and a
// call in flight on the old one still gets its reply.
func TestPipelineUnavailableReplyRetiresStream(t *testing.T) {
	p := newPipeServer()
	c := dialPipe(t, servePipe(t, p, serveOpts{}))
	ctx := callCtx(t)

	aDone := getNode(ctx, c, "a")
	a := p.next(t)
	bDone := getNode(ctx, c, "b")
	b := p.next(t)
	s1 := a.s
	if b.s != s1 || a.ref() != "a" || b.ref() != "b" {
		t.Fatalf("calls %q on stream %d and %q on %d, want a and b on one", a.ref(), s1.n, b.ref(), b.s.n)
	}
	if err := b.fail(errdefs.ToGRPC(errdefs.Unavailablef("leader lost"))); err != nil {
		t.Fatal(err)
	}
	closed(t, s1.recvEnd, "the client closing the first stream")
	if s1.recvErr != io.EOF {
		t.Fatalf("first stream ended with %v, want the client's close (EOF)", s1.recvErr)
	}
	b2 := p.next(t)
	if b2.s == s1 || b2.ref() != "b" {
		t.Fatalf("retry %q on stream %d, want b on a new stream", b2.ref(), b2.s.n)
	}
	b2.reply(nodeReply("b"))
	if r := wait(t, bDone); r.err != nil || r.ref != "b" {
		t.Fatalf("b: %q, %v", r.ref, r.err)
	}
	select {
	case r := <-aDone:
		t.Fatalf("a returned %q, %v before its reply", r.ref, r.err)
	default:
	}
	a.reply(nodeReply("a"))
	if r := wait(t, aDone); r.err != nil || r.ref != "a" {
		t.Fatalf("a: %q, %v", r.ref, r.err)
	}
	s1.end <- nil
	closed(t, s1.done, "the first stream's end")
	if p.opened.Load() != 2 {
		t.Errorf("%d streams, want 2", p.opened.Load())
	}
}

// TestPipelineBrokenStreamRetried: a stream that ends with calls in flight
// fails them UNAVAILABLE, and the retries go over a new stream: the
// callers see their replies.
func TestPipelineBrokenStreamRetried(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"unknown error", errors.New("handler broke")},
		{"unavailable", status.Error(codes.Unavailable, "draining")},
		{"ended OK", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipeServer()
			c := dialPipe(t, servePipe(t, p, serveOpts{}))
			ctx := callCtx(t)
			done := map[string]<-chan result{"a": getNode(ctx, c, "a"), "b": getNode(ctx, c, "b")}
			s1 := p.next(t).s
			if p.next(t).s != s1 {
				t.Fatal("the calls came on two streams")
			}
			s1.end <- tc.err
			for range 2 {
				r := p.next(t)
				if r.s == s1 {
					t.Fatalf("retry of %q on the stream that ended", r.ref())
				}
				r.reply(nodeReply(r.ref()))
			}
			for ref, ch := range done {
				if r := wait(t, ch); r.err != nil || r.ref != ref {
					t.Errorf("%s: %q, %v", ref, r.ref, r.err)
				}
			}
		})
	}
}

// TestPipelineCancel: a call whose context is cancelled returns Canceled
// at once, the server is told to cancel that call, and the stream goes on
// serving other calls.
func TestPipelineCancel(t *testing.T) {
	p := newPipeServer()
	c := dialPipe(t, servePipe(t, p, serveOpts{}))
	ctx, cancel := context.WithCancel(callCtx(t))
	done := getNode(ctx, c, "x")
	call := p.next(t)
	cancel()
	if r := wait(t, done); status.Code(r.err) != codes.Canceled {
		t.Fatalf("got %q, %v, want Canceled", r.ref, r.err)
	}
	cm := p.next(t)
	if !cm.GetCancel() || cm.GetId() != call.GetId() || cm.s != call.s {
		t.Fatalf("got %v, want the cancel of call %d", cm.PipelineCall, call.GetId())
	}
	// Answered anyway, as the manager does: the reply is dropped.
	call.reply(nodeReply("x"))
	next := getNode(callCtx(t), c, "y")
	y := p.next(t)
	y.reply(nodeReply("y"))
	if r := wait(t, next); r.err != nil || r.ref != "y" || y.s != call.s {
		t.Errorf("next call: %q, %v on stream %d", r.ref, r.err, y.s.n)
	}
}

// TestPipelineDeadline: a call's deadline reaches the server as what is
// left of it.
func TestPipelineDeadline(t *testing.T) {
	const timeout = 20 * time.Second
	p := newPipeServer()
	p.handle = func(c *srvCall) {
		p.calls <- c
		answer(c)
	}
	c := dialPipe(t, servePipe(t, p, serveOpts{}))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := c.GetCluster(ctx, &shoalv1.GetClusterRequest{}); err != nil {
		t.Fatal(err)
	}
	got := time.Duration(p.next(t).GetTimeoutMicros()) * time.Microsecond
	if got <= timeout/2 || got > timeout {
		t.Errorf("timeout_micros is %v, want a little under %v", got, timeout)
	}
}

// TestPipelinePeer: grpc.Peer on a pipelined call gives the manager's
// address.
func TestPipelinePeer(t *testing.T) {
	p := newPipeServer()
	p.handle = answer
	addr := servePipe(t, p, serveOpts{})
	c := dialPipe(t, addr)
	var pr peer.Peer
	r, err := c.GetCluster(callCtx(t), &shoalv1.GetClusterRequest{}, grpc.Peer(&pr))
	if err != nil || r.GetLeaderId() != "pipelined" {
		t.Fatalf("%v, %q", err, r.GetLeaderId())
	}
	if pr.Addr == nil || pr.Addr.String() != addr {
		t.Errorf("peer %v, want %s", pr.Addr, addr)
	}
}

// TestPipelineOpenBoundedByContext: a call whose context ends while the
// stream is being opened (the manager accepts no connection yet) returns
// then, whether it opens the stream or waits for another call's opening;
// a later call opens one.
func TestPipelineOpenBoundedByContext(t *testing.T) {
	const short = 300 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0") // accepts nothing until Serve
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := newPipeServer()
	p.handle = answer
	srv := newPipeGRPCServer(p, serveOpts{})
	t.Cleanup(srv.Stop)
	c, pl := dialBare(t, ln.Addr().String())

	shortCall := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), short)
		defer cancel()
		start := time.Now()
		_, err := c.GetCluster(ctx, &shoalv1.GetClusterRequest{})
		if took := time.Since(start); status.Code(err) != codes.DeadlineExceeded || took > short+5*time.Second {
			t.Fatalf("%s: %v after %v, want DeadlineExceeded after %v", what, err, took, short)
		}
	}
	shortCall("opening")

	// A call opening (its context long), another waiting for it.
	long := make(chan error, 1)
	go func() {
		r, err := c.GetCluster(callCtx(t), &shoalv1.GetClusterRequest{})
		if err == nil && r.GetLeaderId() != "pipelined" {
			err = fmt.Errorf("answered %q", r.GetLeaderId())
		}
		long <- err
	}()
	deadline := time.Now().Add(waitFor)
	for {
		pl.mu.Lock()
		opening := pl.opening != nil
		pl.mu.Unlock()
		if opening {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the call did not start opening a stream")
		}
		runtime.Gosched()
	}
	shortCall("waiting for another's opening")

	go srv.Serve(ln)
	select {
	case err := <-long:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitFor):
		t.Fatal("the opening call did not return")
	}
	r, err := c.GetCluster(callCtx(t), &shoalv1.GetClusterRequest{})
	if err != nil || r.GetLeaderId() != "pipelined" {
		t.Fatalf("later call: %v, %q", err, r.GetLeaderId())
	}
	if p.opened.Load() != 1 {
		t.Errorf("%d streams, want 1", p.opened.Load())
	}
}

// TestPipelineCloseEndsStream: Client.Close ends the stream (the
// manager's Calls returns) and leaves no goroutine of the client's.
func TestPipelineCloseEndsStream(t *testing.T) {
	p := newPipeServer()
	p.handle = answer
	addr := servePipe(t, p, serveOpts{})
	conn, err := DialHosts([]string{addr}, insecure.NewCredentials())
	if err != nil {
		t.Fatal(err)
	}
	cl := &Client{Control: shoalv1.NewControlClient(conn), conn: conn, hosts: &hostList{hosts: []string{addr}}}
	if _, err := cl.Control.GetCluster(callCtx(t), &shoalv1.GetClusterRequest{}); err != nil {
		t.Fatal(err)
	}
	s := <-p.streams
	if left := pipelineGoroutines(); len(left) == 0 {
		t.Fatal("no pipeline goroutine while the stream is open: the check below sees nothing")
	}
	cl.Close()
	closed(t, s.done, "the server's Calls returning")
	deadline := time.Now().Add(waitFor)
	for left := pipelineGoroutines(); len(left) > 0; left = pipelineGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left after Close:\n%s", strings.Join(left, "\n\n"))
		}
		runtime.Gosched()
	}
}

// pipelineGoroutines are the stacks of goroutines running the client's
// pipeline or a gRPC client stream.
func pipelineGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "shoal/client.(*pipe") || strings.Contains(g, "grpc.newClientStreamWithParams") {
			out = append(out, g)
		}
	}
	return out
}

// TestPipelineSendBoundedByContext: calls whose requests cannot be sent
// (the manager reads no more calls: HTTP/2 flow control holds the stream)
// end with their contexts, as unary calls would, whether one of them is
// the one blocked sending or they wait behind it.
func TestPipelineSendBoundedByContext(t *testing.T) {
	const short = 300 * time.Millisecond
	big := strings.Repeat("x", 900<<10) // pipelined: under maxPipelinedRequest
	p := newPipeServer()
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	var mu sync.Mutex
	sent, cancelled := map[uint64]bool{}, map[uint64]bool{}
	p.handle = func(c *srvCall) {
		mu.Lock()
		if c.GetCancel() {
			cancelled[c.GetId()] = true
		} else if c.ref() == big {
			sent[c.GetId()] = true
		}
		mu.Unlock()
		<-release // the stream is read no further
		answer(c)
	}
	c, _ := dialBare(t, servePipe(t, p, serveOpts{smallWindow: true}))
	const n = 6
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), short)
		start := time.Now()
		r := waitUntil(t, getNode(ctx, c, big), short+5*time.Second)
		cancel()
		if r == nil || status.Code(r.err) != codes.DeadlineExceeded {
			unblock()
			t.Fatalf("call %d: %v after %v, want DeadlineExceeded after %v", i, r, time.Since(start), short)
		}
	}
	unblock()
	if r := wait(t, getNode(callCtx(t), c, "after")); r.err != nil || r.ref != "after" {
		t.Errorf("call after the manager read again: %q, %v", r.ref, r.err)
	}
	// Read in order: everything sent before "after" has been read.
	mu.Lock()
	defer mu.Unlock()
	if len(sent) == 0 || len(sent) == n {
		t.Errorf("%d of the %d calls reached the manager: want the first, not those whose context ended unsent", len(sent), n)
	}
	for id := range sent {
		if !cancelled[id] {
			t.Errorf("call %d reached the manager and was not cancelled", id)
		}
	}
}

// waitUntil is ch's result, nil if none came within d.
func waitUntil(t *testing.T, ch <-chan result, d time.Duration) *result {
	t.Helper()
	select {
	case r := <-ch:
		return &r
	case <-time.After(d):
		return nil
	}
}

// TestPipelineLargeRequestUnary: a request above the manager's receive
// limit (gRPC's default, 4 MiB) fails as the unary call would
// (RESOURCE_EXHAUSTED) and costs the calls in flight on the stream
// nothing: over the stream it would end the stream, failing them all.
func TestPipelineLargeRequestUnary(t *testing.T) {
	p := newPipeServer()
	c := dialPipe(t, servePipe(t, p, serveOpts{}))
	ctx := callCtx(t)
	aDone := getNode(ctx, c, "a")
	a := p.next(t)
	_, err := c.GetNode(ctx, &shoalv1.GetNodeRequest{Ref: strings.Repeat("x", 5<<20)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("large request: %v, want ResourceExhausted", err)
	}
	a.reply(nodeReply("a"))
	if r := wait(t, aDone); r.err != nil || r.ref != "a" {
		t.Fatalf("call in flight: %q, %v", r.ref, r.err)
	}
	select {
	case <-a.s.recvEnd:
		t.Errorf("the stream ended: %v", a.s.recvErr)
	default:
	}
}

// BenchmarkPipelineCalls: GetNode calls over the pipeline to a manager that
// answers at once, from GOMAXPROCS×p goroutines (-cpu, SetParallelism).
func BenchmarkPipelineCalls(b *testing.B) {
	for _, par := range []int{1, 64} {
		b.Run(fmt.Sprint("parallel-", par), func(b *testing.B) {
			p := newPipeServer()
			p.handle = answer
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := newPipeGRPCServer(p, serveOpts{})
			go srv.Serve(ln)
			defer srv.Stop()
			pl := newPipeline(context.Background())
			conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithUnaryInterceptor(pl.unary))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			c := shoalv1.NewControlClient(conn)
			ctx := context.Background()
			b.SetParallelism(par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.GetNode(ctx, &shoalv1.GetNodeRequest{Ref: "n"}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
