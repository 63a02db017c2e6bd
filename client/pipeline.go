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
// marker (grpc.Header, grpc.Trailer, ...); and when their request is
// above maxPipelinedRequest.

// pipelined reports whether method travels over the pipeline: Control's
// unary methods except the lists (a list's reply may be tens of MB, which
// would hold up the replies behind it on the one stream).
func pipelined(method string) bool {
	name, ok := strings.CutPrefix(method, "/"+shoalv1.Control_ServiceDesc.ServiceName+"/")
	return ok && !strings.HasPrefix(name, "List")
}

// pipeline is a connection's pipeline.
type pipeline struct {
	ctx context.Context // the streams' parent; a stream also ends when the connection closes

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

	wake chan struct{} // (1 buffered) the sender has messages to send
	gone chan struct{} // closed when the stream ended

	mu       sync.Mutex // guards the fields below
	pending  map[uint64]chan *shoalv1.PipelineReply
	answered bool  // a reply came
	err      error // why the stream ended; nil while it lives
	// queue is what the sender sends next, in order. A call's own
	// goroutine does not send: SendMsg waits for HTTP/2 flow control
	// (the manager reads a call when it has room for it), and a call must
	// end with its context, as a unary call does; one still queued then
	// is never sent.
	queue    []*shoalv1.PipelineCall
	retired  bool // no more calls: CloseSend once the queue is sent
	sentLast bool // CloseSend was called (or is being): nothing more is sent
}

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
	b, err := proto.Marshal(in)
	if err != nil {
		return status.Errorf(codes.Internal, "grpc: error while marshaling: %v", err)
	}
	if len(b) > maxPipelinedRequest {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	var s *pipeStream
	var r *shoalv1.PipelineReply
	for {
		var err error
		s, err = p.stream(ctx, cc)
		if err == nil {
			r, err = s.call(ctx, method, b, opts)
		}
		if errors.Is(err, errRetired) {
			continue // closed by another call since this one chose it
		}
		if errors.Is(err, errPipelineOff) {
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

// maxPipelinedRequest bounds the requests that travel over the pipeline;
// larger ones go as unary calls. A manager refuses a message above its
// receive limit (gRPC's default, 4 MiB) by ending the stream, which would
// fail every call in flight on it, not only the large one; and a large
// request would hold up the calls behind it.
const maxPipelinedRequest = 1 << 20

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
		wake: make(chan struct{}, 1), gone: make(chan struct{})}
	if pr, ok := peer.FromContext(cs.Context()); ok {
		s.pr = *pr
	}
	go s.receive(cancel)
	go s.send()
	return s, nil
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
	s.mu.Lock()
	s.retired = true
	s.mu.Unlock()
	s.kick()
}

// kick tells the sender there is work.
func (s *pipeStream) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// send sends the queued messages, in order, until the stream is retired
// (then it closes it for sending) or ends.
func (s *pipeStream) send() {
	for {
		select {
		case <-s.wake:
		case <-s.gone:
			return
		}
		for {
			s.mu.Lock()
			q := s.queue
			s.queue = nil
			last := len(q) == 0 && s.retired && !s.sentLast
			if last {
				s.sentLast = true
			}
			s.mu.Unlock()
			if last {
				s.cs.CloseSend()
				return
			}
			if len(q) == 0 {
				break
			}
			for _, m := range q {
				if s.cs.SendMsg(m) != nil {
					// The stream has ended (io.EOF: the manager ended it,
					// perhaps refusing it). Why is what the receiving
					// goroutine reads from it next: ended fails or
					// redirects the calls left.
					return
				}
			}
		}
	}
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
		ch := s.pending[r.GetId()]
		delete(s.pending, r.GetId())
		s.answered = true
		s.mu.Unlock()
		if ch != nil {
			ch <- r
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
	s.mu.Unlock()
	p.mu.Lock()
	if p.cur == s {
		p.cur = nil
	}
	if refused {
		p.off = true
	}
	p.mu.Unlock()
	close(s.gone)
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
func (s *pipeStream) call(ctx context.Context, method string, b []byte, opts []grpc.CallOption) (*shoalv1.PipelineReply, error) {
	var timeout int64
	if d, ok := ctx.Deadline(); ok {
		timeout = max(int64(time.Until(d)/time.Microsecond), 1)
	}
	ch := make(chan *shoalv1.PipelineReply, 1)
	id := s.p.nextID.Add(1)
	m := &shoalv1.PipelineCall{Id: id, Method: method, Request: b, TimeoutMicros: timeout}
	s.mu.Lock()
	switch {
	case s.pending == nil:
		err := s.err
		s.mu.Unlock()
		return nil, err
	case s.retired:
		s.mu.Unlock()
		return nil, errRetired
	}
	s.pending[id] = ch
	s.queue = append(s.queue, m)
	s.mu.Unlock()
	s.kick()
	for _, o := range opts {
		if o, ok := o.(grpc.PeerCallOption); ok {
			*o.PeerAddr = s.pr
		}
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
		s.mu.Lock()
		if _, waiting := s.pending[id]; waiting {
			delete(s.pending, id)
			if !s.unqueue(m) && !s.sentLast {
				// Sent (or being sent): the manager cancels it.
				s.queue = append(s.queue, &shoalv1.PipelineCall{Id: id, Cancel: true})
				defer s.kick()
			}
		}
		s.mu.Unlock()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// unqueue takes m off the queue if it is still there (not sent). s.mu is
// held.
func (s *pipeStream) unqueue(m *shoalv1.PipelineCall) bool {
	for i, q := range s.queue {
		if q == m {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			return true
		}
	}
	return false
}

// errRetired: the stream was retired between the call's choice of it and
// its send; nothing was sent, the call takes the next stream.
var errRetired = errors.New("pipeline stream retired")
