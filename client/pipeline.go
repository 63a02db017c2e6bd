package client

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// The pipeline (shoal.v1.Pipeline, manager/pipeline) carries the
// connection's Control calls other than lists over one stream, many in
// flight at once: a call is one message each way instead of an HTTP/2
// stream of its own, which costs about a third of a write's CPU on both
// sides at high concurrency. It sits under the retry interceptor
// (retryUnavailable): a pipelined call is retried, failed over and
// reported exactly as a unary one, and its answer is the one the manager
// would have given the unary call (the manager runs it through the same
// interceptors).
//
// One stream is open at a time (opened by the first call that needs it).
// It is retired — closed for sending, its calls in flight still answered
// — when a call on it is answered UNAVAILABLE (a manager not ready or
// losing its leader: the connection may be moving to another manager,
// and a stream stays on the transport it was opened on), and dropped when
// it breaks: the calls it still held fail UNAVAILABLE (retried, as a
// unary call on a broken connection is). A manager of an earlier release
// refuses the stream (UNIMPLEMENTED, or PERMISSION_DENIED: its policy
// does not know the method) before running any call: those calls, and
// every later one of the connection, go as unary calls.
//
// Calls stay unary when the pipeline cannot carry what they ask for:
// outgoing metadata in the context, or call options other than
// grpc.Peer, the size limits and the generated code's static-method
// marker (grpc.Header, grpc.Trailer, ...); and requests above
// pipeMaxRequest.

// pipelined reports whether method travels over the pipeline: Control's
// unary methods except the lists (a list's reply may be tens of MB, which
// would hold up the replies behind it on the one stream).
func pipelined(method string) bool {
	name, ok := strings.CutPrefix(method, "/"+shoalv1.Control_ServiceDesc.ServiceName+"/")
	return ok && !strings.HasPrefix(name, "List")
}

// pipeline is a connection's pipeline.
type pipeline struct {
	ctx context.Context // the streams' parent (Background: Close ends them, TestReviewCloseLeavesNothing)

	mu      sync.Mutex    // guards the fields below
	cur     *pipeStream   // nil: the next call opens one
	opening chan struct{} // closed when an open in progress ends; nil: none
	off     bool          // the managers do not serve the pipeline

	nextID atomic.Uint64
}

// pipeStream is one pipeline stream and its calls in flight.
type pipeStream struct {
	p  *pipeline
	cs grpc.ClientStream
	pr peer.Peer // the manager it is open to

	// Messages go out in order from one goroutine (sender): a call waits
	// for its reply or its deadline, never for a send, which a manager
	// that reads nothing (its host stopped answering) holds until TCP
	// gives up.
	qmu    sync.Mutex // guards queue and closed
	queue  []*shoalv1.PipelineCall
	closed bool          // retired: CloseSend follows what is queued
	wake   chan struct{} // the queue or closed changed

	// slots holds a place for each call sent and not yet answered (one
	// that gave up included: its reply still comes), at most a manager's
	// pipeline.MaxInFlight; a manager refuses calls beyond it.
	slots chan struct{}

	mu       sync.Mutex // guards pending, answered, err
	pending  map[uint64]chan *shoalv1.PipelineReply
	answered bool          // a reply came
	err      error         // why the stream ended; nil while it lives
	done     chan struct{} // closed when err is set
}

// pipeMaxInFlight is the managers' pipeline.MaxInFlight: how many calls of
// one stream a manager runs at once.
const pipeMaxInFlight = 1024

func newPipeline(ctx context.Context) *pipeline { return &pipeline{ctx: ctx} }

// errPipelineOff is what a call waiting on a stream the managers refused
// gets: send it as a unary call.
var errPipelineOff = errors.New("pipeline not served")

// unary is the innermost unary interceptor of the connection.
func (p *pipeline) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if !pipelined(method) || !carries(ctx, opts) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	in, ok1 := req.(proto.Message)
	out, ok2 := reply.(proto.Message)
	if !ok1 || !ok2 {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	var s *pipeStream
	var r *shoalv1.PipelineReply
	for {
		var err error
		s, err = p.stream(ctx, cc)
		if err == nil {
			r, err = s.call(ctx, method, in, opts)
		}
		if errors.Is(err, errRetired) {
			continue // closed by another call since this one chose it
		}
		if errors.Is(err, errPipelineOff) || errors.Is(err, errLargeRequest) {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		if err != nil {
			return err
		}
		break
	}
	if len(r.GetStatus()) > 0 {
		sp := new(spb.Status)
		if err := proto.Unmarshal(r.GetStatus(), sp); err != nil {
			return status.Errorf(codes.Internal, "pipeline: a reply's status does not decode: %v", err)
		}
		if sp.GetCode() == int32(codes.OK) {
			return status.Errorf(codes.Internal, "pipeline: a reply's status is OK with no reply")
		}
		err := status.ErrorProto(sp)
		if status.Code(err) == codes.Unavailable {
			p.retire(s)
		}
		return err
	}
	if err := proto.Unmarshal(r.GetReply(), out); err != nil {
		return status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", err)
	}
	return nil
}

// carries reports whether a call with ctx and opts may be pipelined.
func carries(ctx context.Context, opts []grpc.CallOption) bool {
	if md, ok := metadata.FromOutgoingContext(ctx); ok && md.Len() > 0 {
		return false
	}
	for _, o := range opts {
		switch o.(type) {
		case grpc.PeerCallOption, grpc.MaxRecvMsgSizeCallOption, grpc.MaxSendMsgSizeCallOption,
			grpc.StaticMethodCallOption: // generated code's marker
		default:
			return false
		}
	}
	return true
}

// stream returns the open stream, opening one if there is none.
func (p *pipeline) stream(ctx context.Context, cc *grpc.ClientConn) (*pipeStream, error) {
	for {
		p.mu.Lock()
		switch {
		case p.off:
			p.mu.Unlock()
			return nil, errPipelineOff
		case p.cur != nil:
			s := p.cur
			p.mu.Unlock()
			return s, nil
		case p.opening != nil:
			wait := p.opening
			p.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		done := make(chan struct{})
		p.opening = done
		p.mu.Unlock()
		s, err := p.open(ctx, cc)
		p.mu.Lock()
		p.opening = nil
		if err == nil {
			p.cur = s
		}
		p.mu.Unlock()
		close(done)
		return s, err
	}
}

// open opens a stream. It lives until the connection closes; the opening
// call's context bounds only the opening (gRPC may wait for a connection).
func (p *pipeline) open(ctx context.Context, cc *grpc.ClientConn) (*pipeStream, error) {
	sctx, cancel := context.WithCancel(p.ctx)
	stop := context.AfterFunc(ctx, cancel)
	cs, err := cc.NewStream(sctx, &shoalv1.Pipeline_ServiceDesc.Streams[0], shoalv1.Pipeline_Calls_FullMethodName)
	if !stop() {
		// ctx ended while opening: sctx is cancelled, the stream (if any)
		// with it.
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	s := &pipeStream{p: p, cs: cs, pending: map[uint64]chan *shoalv1.PipelineReply{},
		slots: make(chan struct{}, pipeMaxInFlight), done: make(chan struct{}), wake: make(chan struct{}, 1)}
	if pr, ok := peer.FromContext(cs.Context()); ok {
		s.pr = *pr
	}
	go s.receive(cancel)
	go s.sender()
	return s, nil
}

// enqueue queues m to be sent, unless s is retired.
func (s *pipeStream) enqueue(m *shoalv1.PipelineCall) bool {
	s.qmu.Lock()
	if s.closed {
		s.qmu.Unlock()
		return false
	}
	s.queue = append(s.queue, m)
	s.qmu.Unlock()
	s.poke()
	return true
}

// unqueue takes m back if it is still queued (not sent).
func (s *pipeStream) unqueue(m *shoalv1.PipelineCall) bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	for i, q := range s.queue {
		if q == m {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			return true
		}
	}
	return false
}

func (s *pipeStream) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// sender sends what is queued until the stream ends or, retired, has sent
// it all. A failed send ends the stream: receive then fails the calls.
func (s *pipeStream) sender() {
	for {
		select {
		case <-s.wake:
		case <-s.done:
			return
		}
		s.qmu.Lock()
		q, closed := s.queue, s.closed
		s.queue = nil
		s.qmu.Unlock()
		for _, m := range q {
			if err := s.cs.SendMsg(m); err != nil {
				return
			}
		}
		if closed {
			s.cs.CloseSend()
			return
		}
	}
}

// retire closes s for sending, if it is still the stream new calls use:
// the calls in flight on it are still answered; the next call opens
// another stream.
func (p *pipeline) retire(s *pipeStream) {
	p.mu.Lock()
	if p.cur == s {
		p.cur = nil
	}
	p.mu.Unlock()
	s.qmu.Lock()
	s.closed = true
	s.qmu.Unlock()
	s.poke()
}

// receive hands each reply to its call until the stream ends, then fails
// the calls left.
func (s *pipeStream) receive(cancel context.CancelFunc) {
	defer cancel()
	var err error
	for {
		r := new(shoalv1.PipelineReply)
		if err = s.cs.RecvMsg(r); err != nil {
			break
		}
		s.mu.Lock()
		ch, ok := s.pending[r.GetId()]
		delete(s.pending, r.GetId())
		s.answered = true
		s.mu.Unlock()
		if ok {
			<-s.slots
			ch <- r // buffered: a call that gave up does not read it
		}
	}
	s.p.ended(s, err)
}

// ended records why s ended and fails its calls still waiting.
func (p *pipeline) ended(s *pipeStream, err error) {
	s.mu.Lock()
	refused := !s.answered && refusedStream(err)
	switch {
	case refused:
		s.err = errPipelineOff
	case errors.Is(err, io.EOF):
		s.err = status.Error(codes.Unavailable, "pipeline stream ended")
	default:
		st := status.Convert(err)
		if st.Code() == codes.OK || st.Code() == codes.Unknown {
			s.err = status.Errorf(codes.Unavailable, "pipeline stream ended: %v", err)
		} else {
			s.err = err
		}
	}
	pending := s.pending
	s.pending = nil
	close(s.done)
	s.mu.Unlock()
	p.mu.Lock()
	if p.cur == s {
		p.cur = nil
	}
	if refused {
		p.off = true
	}
	p.mu.Unlock()
	for _, ch := range pending {
		close(ch)
	}
}

// refusedStream reports whether err is a manager's refusal of the
// Pipeline method itself: an earlier release (no such service, or no
// policy for it).
func refusedStream(err error) bool {
	c := status.Code(err)
	return c == codes.Unimplemented || c == codes.PermissionDenied && strings.Contains(status.Convert(err).Message(), shoalv1.Pipeline_Calls_FullMethodName)
}

// call sends one call and waits for its reply, the stream's end, or ctx.
func (s *pipeStream) call(ctx context.Context, method string, in proto.Message, opts []grpc.CallOption) (*shoalv1.PipelineReply, error) {
	b, err := proto.Marshal(in)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "grpc: error while marshaling: %v", err)
	}
	if len(b) > pipeMaxRequest {
		return nil, errLargeRequest
	}
	select {
	case s.slots <- struct{}{}:
	case <-s.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return nil, s.err
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	var timeout int64
	if d, ok := ctx.Deadline(); ok {
		timeout = max(int64(time.Until(d)/time.Microsecond), 1)
	}
	ch := make(chan *shoalv1.PipelineReply, 1)
	id := s.p.nextID.Add(1)
	s.mu.Lock()
	if s.pending == nil {
		err := s.err
		s.mu.Unlock()
		<-s.slots
		return nil, err
	}
	s.pending[id] = ch
	s.mu.Unlock()
	for _, o := range opts {
		if o, ok := o.(grpc.PeerCallOption); ok {
			*o.PeerAddr = s.pr
		}
	}
	m := &shoalv1.PipelineCall{Id: id, Method: method, Request: b, TimeoutMicros: timeout}
	unsent := func() {
		s.mu.Lock()
		if s.pending != nil {
			delete(s.pending, id)
		}
		s.mu.Unlock()
		<-s.slots
	}
	if !s.enqueue(m) {
		unsent()
		return nil, errRetired
	}
	select {
	case r, ok := <-ch:
		if !ok {
			s.mu.Lock()
			err := s.err
			s.mu.Unlock()
			return nil, err
		}
		return r, nil
	case <-ctx.Done():
		if s.unqueue(m) {
			unsent()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		// Sent: the call stays pending, its reply (CANCELLED, or the
		// answer that crossed the cancellation) frees its slot.
		s.mu.Lock()
		_, waiting := s.pending[id]
		s.mu.Unlock()
		if waiting {
			s.enqueue(&shoalv1.PipelineCall{Id: id, Cancel: true})
		}
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// pipeMaxRequest is the largest request sent over the pipeline. A manager
// that cannot read a message (above gRPC's 4 MiB limit) fails the whole
// stream with every call on it; unary, such a call fails alone.
const pipeMaxRequest = 1 << 20

// errLargeRequest: the request is above pipeMaxRequest; send it unary.
var errLargeRequest = errors.New("request too large for the pipeline")

// errRetired: the stream was retired between the call's choice of it and
// its send; nothing was sent, the call takes the next stream.
var errRetired = errors.New("pipeline stream retired")
