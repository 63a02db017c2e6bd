package pipeline_test

// Hostile review of the pipeline server: what a client can make it do
// that the same client could not make the gRPC server do with unary
// calls.

import (
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/manager/pipeline"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
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
