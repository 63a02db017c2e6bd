// Package pipeline serves shoal.v1.Pipeline: the unary calls of one client
// over one long-lived gRPC stream, many in flight at once.
//
// A unary gRPC call is an HTTP/2 stream of its own: HEADERS with the
// method, authority, content type and deadline, the message, and a
// trailer with the status; the server starts, tracks and ends a stream for
// it. At 256 writers that is about a third of a write's CPU on the client
// and on the manager (docs/performance.md, seventeenth round). Over the
// pipeline a call is one PipelineCall message and one PipelineReply.
//
// Nothing else about a call changes. Each one is run like the unary call
// it stands for, through the same interceptor chain the gRPC server runs
// (error mapping, the authorizer, the forwarder), with a context holding
// the stream's peer and metadata, the call's own deadline and the call's
// method (grpc.Method): the authorizer checks the caller for that method
// on every call, against the store as it is then, and the forwarder sends
// a follower's calls to the leader. The stream itself is authorized when
// it opens (the Pipeline service's policy) and rechecked as every stream
// is.
//
// Lifecycle of one stream (Server.Calls):
//
//	open ──► read loop ──┬─ call: MaxInFlight running: RESOURCE_EXHAUSTED;
//	                     │        MaxInFlight unanswered (replies unsent): the
//	                     │        read waits (HTTP/2 flow control holds the client)
//	                     │        ──► goroutine: chain + handler ──► reply
//	                     ├─ cancel: that call's context is cancelled
//	                     └─ EOF (client closed its side) or stream error
//	                            ──► wait for every call in flight ──► end
//
// Replies are sent in the order calls finish, one at a time (a mutex: no
// hand-off to a sender goroutine). A reply that cannot be sent (the stream
// broke) is dropped; the client fails that call as a unary call whose
// connection broke.
package pipeline

import (
	"context"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// MaxInFlight is how many calls of one stream run at once by default. A
// call beyond it is answered RESOURCE_EXHAUSTED at once (the Go client
// sends no more): the read loop never waits for a call to end, as the next
// message may be its cancellation. It waits only while MaxInFlight calls
// are unanswered because their replies cannot be sent (a client that does
// not read).
const MaxInFlight = 1024

// Server is the Pipeline service. Register the services whose unary
// methods may travel on it (RegisterService, as on a grpc.Server).
type Server struct {
	shoalv1.UnimplementedPipelineServer

	// Unary is the gRPC server's unary interceptor chain, in order (the
	// first is the outermost), run around every call.
	Unary []grpc.UnaryServerInterceptor
	// MaxInFlight bounds the calls of one stream running at once
	// (0: MaxInFlight).
	MaxInFlight int

	mu      sync.RWMutex // guards methods
	methods map[string]method

	workers workers
}

// method is one unary method of a registered service.
type method struct {
	impl    any
	handler func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error)
}

var _ grpc.ServiceRegistrar = (*Server)(nil)

// RegisterService implements grpc.ServiceRegistrar: desc's unary methods
// may then be called over the pipeline. Its streaming methods may not.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.methods == nil {
		s.methods = map[string]method{}
	}
	for _, m := range desc.Methods {
		s.methods["/"+desc.ServiceName+"/"+m.MethodName] = method{impl: impl, handler: m.Handler}
	}
}

func (s *Server) lookup(name string) (method, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.methods[name]
	return m, ok
}

// Calls implements shoalv1.PipelineServer.
func (s *Server) Calls(stream shoalv1.Pipeline_CallsServer) error {
	ctx := stream.Context()
	limit := s.MaxInFlight
	if limit <= 0 {
		limit = MaxInFlight
	}
	chain := Chain(s.Unary)
	st := &streamState{stream: stream, running: map[uint64]context.CancelFunc{}}
	// running: calls begun and not yet ended, taken without waiting (the
	// read loop must go on to read cancellations). live: calls not yet
	// answered, the wait of a client that does not read its replies.
	running, live := make(chan struct{}, limit), make(chan struct{}, limit)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		call, err := stream.Recv()
		if err == io.EOF {
			return nil // the deferred Wait answers every call in flight first
		}
		if err != nil {
			return err
		}
		if call.GetCancel() {
			st.cancel(call.GetId())
			continue
		}
		m, ok := s.lookup(call.GetMethod())
		if !ok {
			st.send(errorReply(call.GetId(), status.Errorf(codes.Unimplemented,
				"pipeline: %.200q is not a unary method that may be called over the pipeline", call.GetMethod())))
			continue
		}
		select {
		case running <- struct{}{}:
		default:
			st.send(errorReply(call.GetId(), status.Errorf(codes.ResourceExhausted,
				"pipeline: %d calls are already running on this stream, the most it may", limit)))
			continue
		}
		select {
		case live <- struct{}{}:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		cctx, cancel, err := st.start(ctx, call)
		if err != nil {
			<-running
			<-live
			st.send(errorReply(call.GetId(), status.Error(codes.InvalidArgument, err.Error())))
			continue
		}
		wg.Add(1)
		s.workers.run(func() {
			defer wg.Done()
			reply := run(cctx, m, call, chain)
			st.finish(call.GetId())
			cancel()
			<-running
			st.send(reply)
			<-live
		})
	}
}

// streamState is one stream's calls in flight and its sending side.
type streamState struct {
	stream shoalv1.Pipeline_CallsServer

	sendMu sync.Mutex // one Send at a time
	failed bool       // a Send failed: the stream is gone

	mu      sync.Mutex // guards running
	running map[uint64]context.CancelFunc
}

// start checks call (its id not in flight, its timeout not negative) and
// makes its context: the stream's (peer, metadata, the
// authorizer's recheck), the call's deadline and its method.
func (st *streamState) start(ctx context.Context, call *shoalv1.PipelineCall) (context.Context, context.CancelFunc, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, dup := st.running[call.GetId()]; dup {
		return nil, nil, fmt.Errorf("id: call %d is already in flight on this stream", call.GetId())
	}
	t := call.GetTimeoutMicros()
	if t < 0 {
		return nil, nil, fmt.Errorf("timeout_micros: %d is negative", t)
	}
	var cctx context.Context
	var cancel context.CancelFunc
	if t > 0 {
		// Above ~292 years the nanoseconds would wrap round into the past.
		d := time.Duration(math.MaxInt64)
		if t < int64(d/time.Microsecond) {
			d = time.Duration(t) * time.Microsecond
		}
		cctx, cancel = context.WithTimeout(ctx, d)
	} else {
		cctx, cancel = context.WithCancel(ctx)
	}
	st.running[call.GetId()] = cancel
	return grpc.NewContextWithServerTransportStream(cctx, callStream(call.GetMethod())), cancel, nil
}

func (st *streamState) finish(id uint64) {
	st.mu.Lock()
	delete(st.running, id)
	st.mu.Unlock()
}

func (st *streamState) cancel(id uint64) {
	st.mu.Lock()
	c := st.running[id]
	st.mu.Unlock()
	if c != nil {
		c()
	}
}

func (st *streamState) send(r *shoalv1.PipelineReply) {
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	if st.failed {
		return
	}
	if err := st.stream.Send(r); err != nil {
		st.failed = true
	}
}

// run calls m as the gRPC server would call it for a unary request, and
// makes the reply.
func run(ctx context.Context, m method, call *shoalv1.PipelineCall, chain grpc.UnaryServerInterceptor) *shoalv1.PipelineReply {
	dec := func(v any) error {
		msg, ok := v.(proto.Message)
		if !ok {
			return status.Errorf(codes.Internal, "pipeline: %s: request is not a protobuf message", call.GetMethod())
		}
		if err := proto.Unmarshal(call.GetRequest(), msg); err != nil {
			// What gRPC answers a request it cannot decode.
			return status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", err)
		}
		return nil
	}
	resp, err := m.handler(m.impl, ctx, dec, chain)
	if err == nil {
		msg, ok := resp.(proto.Message)
		if !ok || msg == nil {
			err = status.Errorf(codes.Internal, "pipeline: %s returned no reply", call.GetMethod())
		} else {
			b, merr := proto.Marshal(msg)
			if merr == nil {
				return &shoalv1.PipelineReply{Id: call.GetId(), Reply: b}
			}
			err = status.Errorf(codes.Internal, "grpc: error while marshaling: %v", merr)
		}
	}
	return errorReply(call.GetId(), err)
}

// errorReply is the reply of a call that failed with err, with the status
// gRPC gives it (a context's error is CANCELLED or DEADLINE_EXCEEDED).
func errorReply(id uint64, err error) *shoalv1.PipelineReply {
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err)
	}
	sp := st.Proto()
	if sp.GetCode() == int32(codes.OK) {
		sp.Code = int32(codes.Unknown) // an error is never OK
	}
	b, merr := proto.Marshal(sp)
	if merr != nil {
		b, _ = proto.Marshal(status.New(codes.Internal, "pipeline: encoding the status: "+merr.Error()).Proto())
	}
	return &shoalv1.PipelineReply{Id: id, Status: b}
}

// callStream is the grpc.ServerTransportStream of one call: its method, as
// grpc.Method reports it. Headers and trailers a handler sets are not
// sent (GetCluster's raft term header: a caller asking for headers calls
// unary, client/pipeline.go).
type callStream string

func (c callStream) Method() string             { return string(c) }
func (callStream) SetHeader(metadata.MD) error  { return nil }
func (callStream) SendHeader(metadata.MD) error { return nil }
func (callStream) SetTrailer(metadata.MD) error { return nil }

// Chain runs ics around a handler in grpc.ChainUnaryInterceptor's order:
// the first interceptor is the outermost.
func Chain(ics []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return callChain(ics, ctx, req, info, handler)
	}
}

func callChain(ics []grpc.UnaryServerInterceptor, ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if len(ics) == 0 {
		return handler(ctx, req)
	}
	return ics[0](ctx, req, info, func(ctx context.Context, req any) (any, error) {
		return callChain(ics[1:], ctx, req, info, handler)
	})
}

// workers runs the calls of every stream on goroutines that outlive a
// call: a goroutine started per call grows its stack through the handler
// chain every time (runtime.newstack and copystack were 11 % of the
// leader's CPU at 256 writers), one kept keeps its grown stack. A call
// goes to an idle worker, or to a new one when none is idle; a worker
// idle for workerIdle ends. So there are at most as many as calls ran at
// once (each stream's MaxInFlight bounds its share), and none when the
// pipeline is not used.
type workers struct {
	work chan func() // unbuffered: a send succeeds only to an idle worker
	once sync.Once
}

// workerIdle is how long an idle worker waits for a call before it ends.
const workerIdle = 10 * time.Second

func (w *workers) run(f func()) {
	w.once.Do(func() { w.work = make(chan func()) })
	select {
	case w.work <- f:
	default:
		go w.worker(f)
	}
}

func (w *workers) worker(f func()) {
	f()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		select {
		case f = <-w.work:
			f()
			idle.Reset(workerIdle)
		case <-idle.C:
			return
		}
	}
}
