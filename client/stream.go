package client

import (
	"context"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Streams (Watch, logs, stats) fail over from a manager that answers "not
// ready" as unary calls do (failover.go). A manager answers a stream it
// cannot serve before any message (its store check refuses the caller:
// no handler ran), so a server stream, whose one request the client
// keeps, is opened again on the next address — until the ready wait ends
// with every address refusing or not ready, when the stream fails with
// every reason, as a unary call does. Once a stream was answered (headers
// or a message) it is the caller's: a later break is not retried here.
// Streams that send more than one message (image load, exec) cannot be
// replayed: they only move the connection off the manager, so the
// caller's next attempt goes elsewhere; so do all streams of a connection
// without a ready wait.

// retryNotReadyStream is the stream interceptor of a connection over
// hl's addresses (see retryUnavailable for readyWait and dials).
func retryNotReadyStream(hl *hostList, readyWait time.Duration, dials *dialLog) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if method == shoalv1.Pipeline_Calls_FullMethodName {
			// The pipeline's calls are retried one by one (pipeline.go).
			return streamer(ctx, desc, cc, method, opts...)
		}
		s := &readyStream{ctx: ctx, desc: desc, cc: cc, method: method, streamer: streamer, opts: opts,
			hl: hl, dials: dials, readyWait: readyWait, start: time.Now(), backoff: 25 * time.Millisecond}
		p := &peer.Peer{}
		cs, err := streamer(ctx, desc, cc, method, append(opts, grpc.Peer(p))...)
		if err != nil {
			return nil, err
		}
		s.cur, s.p = cs, p
		return s, nil
	}
}

// readyStream is a client stream that opens itself again on another
// manager while its attempts are answered "not ready". Like a gRPC client
// stream, it is received from (Header, RecvMsg) by one goroutine at a
// time.
type readyStream struct {
	ctx       context.Context
	desc      *grpc.StreamDesc
	cc        *grpc.ClientConn
	method    string
	streamer  grpc.Streamer
	opts      []grpc.CallOption
	hl        *hostList
	dials     *dialLog
	readyWait time.Duration
	start     time.Time

	mu  sync.Mutex // guards cur and p, swapped by a new attempt
	cur grpc.ClientStream
	p   *peer.Peer // of cur, set when cur ends

	// The receiving goroutine's own:
	req      any  // the request sent (server streams: the only one)
	sent     bool // req was sent
	closed   bool // CloseSend was called
	answered bool // a message or headers came: no more attempts
	notReady bool // an attempt was answered "not ready"
	unready  time.Time
	backoff  time.Duration
}

func (s *readyStream) attempt() (grpc.ClientStream, *peer.Peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.p
}

func (s *readyStream) Context() context.Context {
	cs, _ := s.attempt()
	return cs.Context()
}

func (s *readyStream) Trailer() metadata.MD {
	cs, _ := s.attempt()
	return cs.Trailer()
}

func (s *readyStream) SendMsg(m any) error {
	if !s.desc.ClientStreams {
		s.req, s.sent = m, true
	}
	cs, _ := s.attempt()
	return cs.SendMsg(m)
}

func (s *readyStream) CloseSend() error {
	s.closed = true
	cs, _ := s.attempt()
	return cs.CloseSend()
}

func (s *readyStream) Header() (metadata.MD, error) {
	for {
		cs, p := s.attempt()
		md, err := cs.Header()
		if err == nil {
			// nil headers: the answer has none (a refusal), which
			// RecvMsg reads.
			s.answered = s.answered || md != nil
			return md, nil
		}
		if err = s.again(err, p); err != nil {
			return nil, err
		}
	}
}

func (s *readyStream) RecvMsg(m any) error {
	for {
		cs, p := s.attempt()
		err := cs.RecvMsg(m)
		if err == nil {
			s.answered = true
			return nil
		}
		if err = s.again(err, p); err != nil {
			return err
		}
	}
}

// again is called when an attempt ended with err (answered by p): it
// opens the next attempt and returns nil, or returns the error the stream
// ends with.
func (s *readyStream) again(err error, p *peer.Peer) error {
	for {
		if s.answered || err == io.EOF {
			return err
		}
		switch {
		case errdefs.IsNotReady(err):
			s.hl.notReady(s.dials.hostOf(p), notReadyReason(err, p))
			s.notReady = true
		case errdefs.IsUnavailable(err):
			s.hl.retrySkipped(s.dials)
		default:
			return err
		}
		if s.readyWait <= 0 || s.desc.ClientStreams || !s.notReady {
			return err
		}
		// As retryUnavailable: fail once no manager could serve for the
		// ready wait; go on while one may (a plain UNAVAILABLE from a
		// manager that is ready is the caller's, as before).
		why := s.hl.noneReady(err, p, s.dials, s.start)
		switch {
		case why == "" && !errdefs.IsNotReady(err):
			return err
		case why == "":
			s.unready = time.Time{}
		case s.unready.IsZero():
			s.unready = time.Now()
		case time.Since(s.unready) >= s.readyWait:
			return errdefs.ToGRPC(errdefs.NotReadyf("%s", why))
		}
		select {
		case <-s.ctx.Done():
			return err
		case <-time.After(s.backoff):
		}
		s.backoff = min(s.backoff*2, 250*time.Millisecond)
		np := &peer.Peer{}
		cs, oerr := s.streamer(s.ctx, s.desc, s.cc, s.method, append(s.opts, grpc.Peer(np))...)
		if oerr != nil {
			err, p = oerr, np
			continue
		}
		if s.sent {
			// A server stream's send does not fail (its end is read by
			// RecvMsg).
			_ = cs.SendMsg(s.req)
		}
		if s.closed {
			_ = cs.CloseSend()
		}
		s.mu.Lock()
		s.cur, s.p = cs, np
		s.mu.Unlock()
		return nil
	}
}
