package pipeline

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// These tests run a real grpc.Server on loopback serving the Pipeline and,
// as unary methods, a fake Control whose GetService does what the test
// says (fakeControl.get).

type fakeControl struct {
	shoalv1.UnimplementedControlServer
	get func(ctx context.Context, req *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error)
}

func (f *fakeControl) GetService(ctx context.Context, req *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
	return f.get(ctx, req)
}

type rig struct {
	pipe *Server
	conn *grpc.ClientConn
	// ended receives what each Calls handler returned.
	ended chan error
}

// newRig serves srv (its Unary chain and limit as given) with fake
// registered on it and on the grpc.Server itself (as unary methods).
func newRig(t *testing.T, srv *Server, fake *fakeControl) *rig {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{pipe: srv, ended: make(chan error, 16)}
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(srv.Unary...),
		grpc.StreamInterceptor(func(s any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			err := h(s, ss)
			r.ended <- err
			return err
		}))
	shoalv1.RegisterControlServer(gs, fake)
	shoalv1.RegisterControlServer(srv, fake)
	shoalv1.RegisterPipelineServer(gs, srv)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	r.conn, err = grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.conn.Close() })
	return r
}

// open opens a pipeline stream; its replies arrive on the returned
// channel, which is closed with the stream's end (its error in *end).
func (r *rig) open(t *testing.T, ctx context.Context) (shoalv1.Pipeline_CallsClient, <-chan *shoalv1.PipelineReply, *error) {
	t.Helper()
	s, err := shoalv1.NewPipelineClient(r.conn).Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	replies := make(chan *shoalv1.PipelineReply, 64)
	end := new(error)
	go func() {
		defer close(replies)
		for {
			rep, err := s.Recv()
			if err != nil {
				*end = err
				return
			}
			replies <- rep
		}
	}()
	return s, replies, end
}

func call(t *testing.T, id uint64, method string, req proto.Message) *shoalv1.PipelineCall {
	t.Helper()
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return &shoalv1.PipelineCall{Id: id, Method: method, Request: b}
}

func getCall(t *testing.T, id uint64, ref string) *shoalv1.PipelineCall {
	return call(t, id, shoalv1.Control_GetService_FullMethodName, &shoalv1.GetServiceRequest{Ref: ref})
}

func send(t *testing.T, s shoalv1.Pipeline_CallsClient, calls ...*shoalv1.PipelineCall) {
	t.Helper()
	for _, c := range calls {
		if err := s.Send(c); err != nil {
			t.Fatalf("send call %d: %v", c.GetId(), err)
		}
	}
}

// next waits for the next reply.
func next(t *testing.T, replies <-chan *shoalv1.PipelineReply) *shoalv1.PipelineReply {
	t.Helper()
	select {
	case r, ok := <-replies:
		if !ok {
			t.Fatal("the stream ended before the reply")
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no reply within 10s")
	}
	return nil
}

// statusOf decodes a reply's status (nil: OK).
func statusOf(t *testing.T, r *shoalv1.PipelineReply) *status.Status {
	t.Helper()
	if len(r.GetStatus()) == 0 {
		return nil
	}
	sp := new(spb.Status)
	if err := proto.Unmarshal(r.GetStatus(), sp); err != nil {
		t.Fatalf("reply %d: status does not decode: %v", r.GetId(), err)
	}
	return status.FromProto(sp)
}

func wantCode(t *testing.T, r *shoalv1.PipelineReply, id uint64, code codes.Code) *status.Status {
	t.Helper()
	if r.GetId() != id {
		t.Fatalf("reply to call %d, want %d", r.GetId(), id)
	}
	st := statusOf(t, r)
	if st == nil {
		t.Fatalf("call %d answered OK, want %v", id, code)
	}
	if st.Code() != code {
		t.Fatalf("call %d answered %v (%q), want %v", id, st.Code(), st.Message(), code)
	}
	if len(r.GetReply()) != 0 {
		t.Errorf("call %d failed and still carries a reply", id)
	}
	return st
}

// recv waits for a value on ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("not within 10s: %s", what)
	}
	var zero T
	return zero
}

// recorder is an interceptor that logs what it saw.
type recorder struct {
	mu  sync.Mutex
	log []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.log = append(r.log, s)
	r.mu.Unlock()
}

func (r *recorder) entries() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

func (r *recorder) interceptor(name string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		m, _ := grpc.Method(ctx)
		ref := req.(*shoalv1.GetServiceRequest).GetRef()
		r.add(name + " in " + info.FullMethod + " " + m + " " + ref)
		resp, err := h(ctx, req)
		r.add(name + " out")
		return resp, err
	}
}

func TestCallRunsThroughTheChainInOrder(t *testing.T) {
	rec := &recorder{}
	fake := &fakeControl{get: func(ctx context.Context, req *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
		m, _ := grpc.Method(ctx)
		md, _ := metadata.FromIncomingContext(ctx)
		p, _ := peer.FromContext(ctx)
		rec.add("handler " + m + " " + req.GetRef() + " md=" + strings.Join(md.Get("x-test"), ",") + " peer=" + p.Addr.Network())
		return &shoalv1.GetServiceResponse{Service: &shoalv1.Service{Meta: &shoalv1.Meta{Id: "id-" + req.GetRef()}}}, nil
	}}
	r := newRig(t, &Server{Unary: []grpc.UnaryServerInterceptor{rec.interceptor("a"), rec.interceptor("b")}}, fake)
	ctx := metadata.AppendToOutgoingContext(t.Context(), "x-test", "v1")
	s, replies, _ := r.open(t, ctx)
	send(t, s, getCall(t, 7, "web"))
	rep := next(t, replies)
	if rep.GetId() != 7 || statusOf(t, rep) != nil {
		t.Fatalf("reply %d, status %v", rep.GetId(), statusOf(t, rep))
	}
	var resp shoalv1.GetServiceResponse
	if err := proto.Unmarshal(rep.GetReply(), &resp); err != nil || resp.GetService().GetMeta().GetId() != "id-web" {
		t.Fatalf("reply decodes to %v, %v", &resp, err)
	}
	m := shoalv1.Control_GetService_FullMethodName
	want := []string{
		"a in " + m + " " + m + " web",
		"b in " + m + " " + m + " web",
		"handler " + m + " web md=v1 peer=tcp",
		"b out",
		"a out",
	}
	if got := rec.entries(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// An error with details arrives as the same call made unary gets it: code,
// message and details.
func TestErrorDetailsIntact(t *testing.T) {
	fake := &fakeControl{get: func(context.Context, *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
		return nil, errdefs.NotLeader("127.0.0.9:4242")
	}}
	r := newRig(t, &Server{Unary: []grpc.UnaryServerInterceptor{errdefs.UnaryServerInterceptor()}}, fake)
	s, replies, _ := r.open(t, t.Context())
	send(t, s, getCall(t, 1, "web"))
	st := wantCode(t, next(t, replies), 1, codes.Unavailable)

	_, uerr := shoalv1.NewControlClient(r.conn).GetService(t.Context(), &shoalv1.GetServiceRequest{Ref: "web"})
	if !proto.Equal(st.Proto(), status.Convert(uerr).Proto()) {
		t.Errorf("pipelined status %v, unary %v", st.Proto(), status.Convert(uerr).Proto())
	}
	if len(st.Details()) != 1 {
		t.Fatalf("details %v", st.Details())
	}
	if addr, ok := errdefs.LeaderAddr(errdefs.FromGRPC(st.Err())); !ok || addr != "127.0.0.9:4242" {
		t.Errorf("leader from the details: %q, %v", addr, ok)
	}
	if !strings.Contains(st.Message(), "127.0.0.9:4242") {
		t.Errorf("message %q", st.Message())
	}
}

// A handler's error that is not a status is Unknown, as over unary gRPC.
func TestPlainErrorIsUnknown(t *testing.T) {
	fake := &fakeControl{get: func(context.Context, *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
		return nil, errors.New("plain")
	}}
	r := newRig(t, &Server{}, fake)
	s, replies, _ := r.open(t, t.Context())
	send(t, s, getCall(t, 1, "web"))
	if st := wantCode(t, next(t, replies), 1, codes.Unknown); st.Message() != "plain" {
		t.Errorf("message %q", st.Message())
	}
}

func TestTimeoutBecomesTheDeadline(t *testing.T) {
	type seen struct {
		deadline time.Time
		ok       bool
		err      error
	}
	got := make(chan seen, 2)
	fake := &fakeControl{get: func(ctx context.Context, req *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
		d, ok := ctx.Deadline()
		if req.GetRef() == "short" {
			<-ctx.Done() // ends with the call's deadline
		}
		got <- seen{d, ok, ctx.Err()}
		return nil, status.FromContextError(ctx.Err()).Err()
	}}
	r := newRig(t, &Server{}, fake)
	s, replies, _ := r.open(t, t.Context())

	long := getCall(t, 1, "long")
	long.TimeoutMicros = (90 * time.Second).Microseconds()
	before := time.Now()
	send(t, s, long)
	g := recv(t, got, "call 1 ran")
	if !g.ok || g.deadline.Before(before.Add(80*time.Second)) || g.deadline.After(time.Now().Add(90*time.Second)) {
		t.Errorf("deadline %v (set %v), want ~90s after %v", g.deadline, g.ok, before)
	}
	next(t, replies)

	send(t, s, getCall(t, 2, "none"))
	if g := recv(t, got, "call 2 ran"); g.ok {
		t.Errorf("a call without timeout_micros has deadline %v", g.deadline)
	}
	next(t, replies)

	short := getCall(t, 3, "short")
	short.TimeoutMicros = 1000
	send(t, s, short)
	if g := recv(t, got, "call 3 ran"); g.err != context.DeadlineExceeded {
		t.Errorf("a call past its timeout: context %v", g.err)
	}
	wantCode(t, next(t, replies), 3, codes.DeadlineExceeded)

	// The largest timeout is a deadline far away, not one wrapped round
	// into the past.
	far := getCall(t, 4, "far")
	far.TimeoutMicros = math.MaxInt64
	send(t, s, far)
	if g := recv(t, got, "call 4 ran"); !g.ok || g.err != nil || time.Until(g.deadline) < 100*365*24*time.Hour {
		t.Errorf("timeout_micros MaxInt64: deadline %v (set %v), context %v", g.deadline, g.ok, g.err)
	}
	next(t, replies)

	// A negative timeout is refused, naming the field; nothing runs.
	neg := getCall(t, 5, "neg")
	neg.TimeoutMicros = -5
	send(t, s, neg)
	if st := wantCode(t, next(t, replies), 5, codes.InvalidArgument); !strings.HasPrefix(st.Message(), "timeout_micros: ") {
		t.Errorf("message %q", st.Message())
	}
	if len(got) != 0 {
		t.Error("the call with a negative timeout ran")
	}
}

func TestCancelEndsThatCallOnly(t *testing.T) {
	started := map[string]chan struct{}{"a": make(chan struct{}, 1), "b": make(chan struct{}, 1)}
	release := make(chan struct{})
	fake := &fakeControl{get: func(ctx context.Context, req *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
		started[req.GetRef()] <- struct{}{}
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-release:
			return &shoalv1.GetServiceResponse{}, nil
		}
	}}
	r := newRig(t, &Server{}, fake)
	s, replies, _ := r.open(t, t.Context())
	send(t, s, getCall(t, 1, "a"), getCall(t, 2, "b"))
	recv(t, started["a"], "call a started")
	recv(t, started["b"], "call b started")
	// A cancel of an id not in flight changes nothing.
	send(t, s, &shoalv1.PipelineCall{Id: 99, Cancel: true}, &shoalv1.PipelineCall{Id: 1, Cancel: true})
	wantCode(t, next(t, replies), 1, codes.Canceled)
	close(release)
	if rep := next(t, replies); rep.GetId() != 2 || statusOf(t, rep) != nil {
		t.Errorf("call 2: reply %d, %v", rep.GetId(), statusOf(t, rep))
	}
}

func TestUnimplementedRunsNothing(t *testing.T) {
	ran := make(chan string, 8)
	fake := &fakeControl{get: func(context.Context, *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
		ran <- "handler"
		return &shoalv1.GetServiceResponse{}, nil
	}}
	chain := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ran <- "interceptor " + info.FullMethod
		return h(ctx, req)
	}
	r := newRig(t, &Server{Unary: []grpc.UnaryServerInterceptor{chain}}, fake)
	s, replies, _ := r.open(t, t.Context())
	for i, m := range []string{
		shoalv1.Control_Watch_FullMethodName,            // a streaming method
		"/shoal.v1.Control/NoSuchMethod",                // not a method
		shoalv1.Pipeline_Calls_FullMethodName,           // not registered on the pipeline
		"/shoal.v1.Dispatcher/Session",                  // another service
		"",                                              // nothing
		"shoal.v1.Control/GetService",                   // not a full name
		shoalv1.Control_GetService_FullMethodName + "/", // not exactly
	} {
		send(t, s, call(t, uint64(i+1), m, &shoalv1.WatchRequest{}))
		if st := wantCode(t, next(t, replies), uint64(i+1), codes.Unimplemented); !strings.Contains(st.Message(), "pipeline") {
			t.Errorf("%q: message %q", m, st.Message())
		}
	}
	// The stream still serves; nothing else ran.
	send(t, s, getCall(t, 100, "web"))
	if rep := next(t, replies); rep.GetId() != 100 || statusOf(t, rep) != nil {
		t.Errorf("reply %d, %v", rep.GetId(), statusOf(t, rep))
	}
	close(ran)
	var got []string
	for r := range ran {
		got = append(got, r)
	}
	if want := []string{"interceptor " + shoalv1.Control_GetService_FullMethodName, "handler"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("ran %q, want %q", got, want)
	}
}

func TestDuplicateIDInFlight(t *testing.T) {
	started := make(chan struct{}, 4)
	release := make(chan struct{})
	fake := &fakeControl{get: func(ctx context.Context, req *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &shoalv1.GetServiceResponse{Service: &shoalv1.Service{Meta: &shoalv1.Meta{Id: req.GetRef()}}}, nil
	}}
	r := newRig(t, &Server{}, fake)
	s, replies, _ := r.open(t, t.Context())
	send(t, s, getCall(t, 5, "first"))
	recv(t, started, "call 5 started")
	send(t, s, getCall(t, 5, "second"))
	st := wantCode(t, next(t, replies), 5, codes.InvalidArgument)
	if !strings.HasPrefix(st.Message(), "id: ") || !strings.Contains(st.Message(), "5") {
		t.Errorf("message %q does not name the id", st.Message())
	}
	close(release)
	rep := next(t, replies)
	var resp shoalv1.GetServiceResponse
	if statusOf(t, rep) != nil || proto.Unmarshal(rep.GetReply(), &resp) != nil || resp.GetService().GetMeta().GetId() != "first" {
		t.Fatalf("the first call 5: %v, %v", statusOf(t, rep), &resp)
	}
	// Its id is free again once answered.
	send(t, s, getCall(t, 5, "third"))
	if rep := next(t, replies); statusOf(t, rep) != nil {
		t.Errorf("id 5 reused after its reply: %v", statusOf(t, rep))
	}
	if n := len(started); n != 1 {
		t.Errorf("%d handler runs after the first, want 1 (the third call)", n)
	}
}

// waitParked polls, with a deadline, until the Calls handler is parked
// in a call of above (a substring of the function's name), or, when above
// is "", in Calls itself (a select or channel operation; runtime frames
// are not shown then). It fails if Calls returns meanwhile.
func (r *rig) waitParked(t *testing.T, what, above string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1<<20)
	for time.Now().Before(deadline) {
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			// A goroutine: its header, then a function and a file line per frame.
			lines := strings.Split(g, "\n")
			for i := 1; i < len(lines); i += 2 {
				if !strings.Contains(lines[i], callsFrame) {
					continue
				}
				if above == "" && i == 1 || above != "" && i > 1 && strings.Contains(lines[i-2], above) {
					return
				}
			}
		}
		select {
		case err := <-r.ended:
			t.Fatalf("Calls returned (%v) before %s", err, what)
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatalf("not within 10s: %s", what)
}

const callsFrame = "manager/pipeline.(*Server).Calls("

// TestMaxInFlightBoundsRunningCalls: with MaxInFlight calls running, the
// next is answered RESOURCE_EXHAUSTED at once without running (the read
// loop goes on: the next message may be a cancellation), and a call sent
// once one has ended runs.
func TestMaxInFlightBoundsRunningCalls(t *testing.T) {
	var mu sync.Mutex
	running, peak := 0, 0
	started := make(chan string, 8)
	release := map[string]chan struct{}{"1": make(chan struct{}), "2": make(chan struct{}), "3": make(chan struct{}), "4": make(chan struct{})}
	fake := &fakeControl{get: func(ctx context.Context, req *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
		mu.Lock()
		running++
		peak = max(peak, running)
		mu.Unlock()
		started <- req.GetRef()
		select {
		case <-release[req.GetRef()]:
		case <-ctx.Done():
		}
		mu.Lock()
		running--
		mu.Unlock()
		return &shoalv1.GetServiceResponse{}, nil
	}}
	r := newRig(t, &Server{MaxInFlight: 2}, fake)
	s, replies, _ := r.open(t, t.Context())
	send(t, s, getCall(t, 1, "1"), getCall(t, 2, "2"))
	got := map[string]bool{recv(t, started, "a call started"): true, recv(t, started, "a second call started"): true}
	if !got["1"] || !got["2"] {
		t.Fatalf("started %v, want calls 1 and 2", got)
	}
	// Call 3 is refused while 1 and 2 run; call 4 (an unknown method)
	// is answered behind it: the read loop did not wait.
	send(t, s, getCall(t, 3, "3"), call(t, 4, "/shoal.v1.Control/NoSuchMethod", &shoalv1.GetServiceRequest{}))
	rep := next(t, replies)
	if rep.GetId() != 3 || statusOf(t, rep).Code() != codes.ResourceExhausted {
		t.Fatalf("reply %d status %v, want 3 RESOURCE_EXHAUSTED", rep.GetId(), statusOf(t, rep))
	}
	if rep := next(t, replies); rep.GetId() != 4 || statusOf(t, rep).Code() != codes.Unimplemented {
		t.Fatalf("reply %d status %v, want 4 UNIMPLEMENTED", rep.GetId(), statusOf(t, rep))
	}
	select {
	case ref := <-started:
		t.Fatalf("call %s started while calls 1 and 2 run", ref)
	default:
	}
	close(release["1"])
	if rep := next(t, replies); rep.GetId() != 1 {
		t.Fatalf("reply %d, want 1", rep.GetId())
	}
	// A slot is free again: the same id 3 sent again runs.
	send(t, s, getCall(t, 3, "3"))
	if ref := recv(t, started, "call 3 started"); ref != "3" {
		t.Fatalf("started %s, want 3", ref)
	}
	close(release["2"])
	close(release["3"])
	next(t, replies)
	next(t, replies)
	mu.Lock()
	defer mu.Unlock()
	if peak != 2 {
		t.Errorf("%d calls ran at once, want 2", peak)
	}
}

func TestCloseSendAnswersCallsInFlight(t *testing.T) {
	started := make(chan struct{}, 4)
	release := make(chan struct{})
	ctxErr := make(chan error, 4)
	fake := &fakeControl{get: func(ctx context.Context, req *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		ctxErr <- ctx.Err()
		return &shoalv1.GetServiceResponse{Service: &shoalv1.Service{Meta: &shoalv1.Meta{Id: req.GetRef()}}}, nil
	}}
	r := newRig(t, &Server{}, fake)
	s, replies, end := r.open(t, t.Context())
	send(t, s, getCall(t, 1, "a"), getCall(t, 2, "b"))
	recv(t, started, "a call started")
	recv(t, started, "a second call started")
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	// The server has read the end of the calls and waits for those in flight.
	r.waitParked(t, "Calls waits for the calls in flight", "sync.(*WaitGroup).Wait(")
	close(release)
	got := map[uint64]bool{}
	for rep := range replies {
		if statusOf(t, rep) != nil {
			t.Errorf("call %d: %v", rep.GetId(), statusOf(t, rep))
		}
		got[rep.GetId()] = true
	}
	if *end != io.EOF {
		t.Errorf("the stream ended with %v, want OK (EOF)", *end)
	}
	if !got[1] || !got[2] || len(got) != 2 {
		t.Errorf("answered %v, want calls 1 and 2", got)
	}
	for range 2 {
		if err := recv(t, ctxErr, "a call returned"); err != nil {
			t.Errorf("a call's context ended (%v) when the client closed its side", err)
		}
	}
	select {
	case err := <-r.ended:
		if err != nil {
			t.Errorf("Calls returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Calls did not return")
	}
}

func TestVanishedClientCancelsCalls(t *testing.T) {
	started := make(chan struct{}, 4)
	exited := make(chan error, 4)
	fake := &fakeControl{get: func(ctx context.Context, req *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
		started <- struct{}{}
		<-ctx.Done()
		exited <- ctx.Err()
		return nil, status.FromContextError(ctx.Err()).Err()
	}}
	r := newRig(t, &Server{}, fake)
	ctx, cancel := context.WithCancel(t.Context())
	s, _, _ := r.open(t, ctx)
	send(t, s, getCall(t, 1, "a"), getCall(t, 2, "b"))
	recv(t, started, "a call started")
	recv(t, started, "a second call started")
	cancel() // the client's stream is reset: RST_STREAM to the server
	for range 2 {
		select {
		case err := <-exited:
			if err != context.Canceled {
				t.Errorf("a call's context ended with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a call's context was not cancelled")
		}
	}
	select {
	case err := <-r.ended:
		if status.Code(err) != codes.Canceled {
			t.Errorf("Calls returned %v, want CANCELED", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Calls did not return")
	}
}

// A client whose connection is gone (not just its stream) too.
func TestClosedConnectionCancelsCalls(t *testing.T) {
	started := make(chan struct{}, 4)
	exited := make(chan struct{}, 4)
	fake := &fakeControl{get: func(ctx context.Context, req *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
		started <- struct{}{}
		<-ctx.Done()
		exited <- struct{}{}
		return nil, status.FromContextError(ctx.Err()).Err()
	}}
	r := newRig(t, &Server{}, fake)
	s, _, _ := r.open(t, t.Context())
	send(t, s, getCall(t, 1, "a"))
	recv(t, started, "the call started")
	r.conn.Close()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the call's context was not cancelled")
	}
	select {
	case <-r.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("Calls did not return")
	}
}

func TestUndecodableRequestIsInternal(t *testing.T) {
	ran := make(chan struct{}, 1)
	fake := &fakeControl{get: func(context.Context, *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
		ran <- struct{}{}
		return &shoalv1.GetServiceResponse{}, nil
	}}
	r := newRig(t, &Server{}, fake)
	s, replies, _ := r.open(t, t.Context())
	// Field 1 (ref, a string) with a length past the end.
	send(t, s, &shoalv1.PipelineCall{Id: 1, Method: shoalv1.Control_GetService_FullMethodName, Request: []byte{0x0a, 0x7f, 'x'}})
	wantCode(t, next(t, replies), 1, codes.Internal)
	if len(ran) != 0 {
		t.Error("the handler ran on a request that does not decode")
	}
}
