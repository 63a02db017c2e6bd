package client

// Hostile review of the client's pipeline (pipeline.go) against a real
// pipeline server (manager/pipeline) on loopback.

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/errdefs"
	mpipeline "github.com/shoal-dev/shoal/manager/pipeline"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// reviewCtl: GetNode waits for gate (or its context); GetService answers
// at once.
type reviewCtl struct {
	shoalv1.UnimplementedControlServer
	gate    chan struct{}
	waiting atomic.Int64
}

func (c *reviewCtl) GetNode(ctx context.Context, r *shoalv1.GetNodeRequest) (*shoalv1.GetNodeResponse, error) {
	c.waiting.Add(1)
	defer c.waiting.Add(-1)
	select {
	case <-c.gate:
		return &shoalv1.GetNodeResponse{Node: &shoalv1.Node{Meta: &shoalv1.Meta{Id: r.GetRef()}}}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *reviewCtl) GetService(_ context.Context, r *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
	return &shoalv1.GetServiceResponse{Service: &shoalv1.Service{Meta: &shoalv1.Meta{Id: r.GetRef()}}}, nil
}

// reviewRig is a server on loopback and counts of what reached it.
type reviewRig struct {
	addr      string
	unary     atomic.Int64 // Control calls that came unary
	pipelined atomic.Int64 // Control calls that came over the pipeline
	opened    atomic.Int64 // pipeline streams opened (refused or not)
}

// newReviewRig serves ctl unary; with pipe, also over the pipeline;
// refuse, when set, answers the pipeline stream with that error (an
// earlier release).
func newReviewRig(t *testing.T, ctl shoalv1.ControlServer, pipe bool, refuse error) *reviewRig {
	t.Helper()
	rig := &reviewRig{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rig.addr = lis.Addr().String()
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			rig.unary.Add(1)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if info.FullMethod == shoalv1.Pipeline_Calls_FullMethodName {
				rig.opened.Add(1)
				if refuse != nil {
					return refuse
				}
			}
			return h(srv, ss)
		}))
	shoalv1.RegisterControlServer(srv, ctl)
	if pipe {
		p := &mpipeline.Server{Unary: []grpc.UnaryServerInterceptor{func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			rig.pipelined.Add(1)
			return h(ctx, req)
		}}}
		shoalv1.RegisterControlServer(p, ctl)
		shoalv1.RegisterPipelineServer(srv, p)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return rig
}

func (rig *reviewRig) dial(t *testing.T) (shoalv1.ControlClient, *grpc.ClientConn) {
	t.Helper()
	cc, err := DialHosts([]string{rig.addr}, insecure.NewCredentials())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return shoalv1.NewControlClient(cc), cc
}

// More calls at once than a manager runs on one stream (its
// mpipeline.MaxInFlight): the client used to send them all, and the
// manager, which no longer waits for a slot (a cancellation may be behind
// the call, manager/pipeline), refused the surplus RESOURCE_EXHAUSTED.
// Unary calls beyond a limit wait for a stream; so do pipelined ones now,
// within their deadline.
func TestReviewMoreCallsThanMaxInFlight(t *testing.T) {
	ctl := &reviewCtl{gate: make(chan struct{})}
	rig := newReviewRig(t, ctl, true, nil)
	c, _ := rig.dial(t)
	const n = mpipeline.MaxInFlight + 50
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.GetNode(ctx, &shoalv1.GetNodeRequest{Ref: "n"}); err != nil {
				errs <- err
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for ctl.waiting.Load() < mpipeline.MaxInFlight && time.Now().Before(deadline) && len(errs) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	close(ctl.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a call failed: %v", err)
	}
	if rig.pipelined.Load() != n {
		t.Fatalf("%d of %d calls came over the pipeline", rig.pipelined.Load(), n)
	}
}

// A manager of the previous release: no Pipeline service (UNIMPLEMENTED),
// or an authorizer whose policy does not name it. The client opens one
// stream, then sends every call unary; none is lost or run twice.
func TestReviewEarlierManager(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pipe   bool
		refuse error
	}{
		{"unimplemented", false, nil},
		{"policy", true, errdefs.ToGRPC(errdefs.PermissionDeniedf("%s is not allowed by the authorization policy", shoalv1.Pipeline_Calls_FullMethodName))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newReviewRig(t, &reviewCtl{}, tc.pipe, tc.refuse)
			c, _ := rig.dial(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			for i := 0; i < 20; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if r, err := c.GetService(ctx, &shoalv1.GetServiceRequest{Ref: "s"}); err != nil || r.GetService().GetMeta().GetId() != "s" {
						t.Errorf("GetService: %v, %v", r, err)
					}
				}()
			}
			wg.Wait()
			// (gRPC answers an unknown service before any interceptor.)
			if u, p, o := rig.unary.Load(), rig.pipelined.Load(), rig.opened.Load(); u != 20 || p != 0 || tc.pipe && o != 1 {
				t.Fatalf("unary %d, pipelined %d, streams opened %d: want 20, 0, 1", u, p, o)
			}
		})
	}
}

// After Close no pipeline goroutine is left on the client, and the
// server's calls of the connection end.
func TestReviewCloseLeavesNothing(t *testing.T) {
	ctl := &reviewCtl{gate: make(chan struct{})}
	rig := newReviewRig(t, ctl, true, nil)
	c, cc := rig.dial(t)
	if _, err := c.GetService(context.Background(), &shoalv1.GetServiceRequest{Ref: "s"}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.GetNode(context.Background(), &shoalv1.GetNodeRequest{Ref: "n"})
		done <- err
	}()
	waitReview(t, "the call to reach the server", func() bool { return ctl.waiting.Load() == 1 })
	cc.Close()
	select {
	case err := <-done:
		if status.Code(err) != codes.Canceled {
			t.Fatalf("call in flight at Close: %v, want Canceled (the connection is closing)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a call in flight at Close is still waiting")
	}
	waitReview(t, "the server's call to end", func() bool { return ctl.waiting.Load() == 0 })
	waitReview(t, "the client's pipeline goroutines to end", func() bool { return pipeGoroutines() == 0 })
}

func waitReview(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A request above the manager's message limit (gRPC's 4 MiB): as a unary
// call it fails alone (RESOURCE_EXHAUSTED). On the pipeline the manager's
// read of it failed the whole stream, and every call in flight on it got
// that RESOURCE_EXHAUSTED — not retried, though a write among them may
// have been applied. Such a request now goes unary.
func TestReviewOversizedRequestFailsAlone(t *testing.T) {
	ctl := &reviewCtl{gate: make(chan struct{})}
	rig := newReviewRig(t, ctl, true, nil)
	c, _ := rig.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	held := make(chan error, 1)
	go func() {
		_, err := c.GetNode(ctx, &shoalv1.GetNodeRequest{Ref: "n"})
		held <- err
	}()
	waitReview(t, "the first call to reach the server", func() bool { return ctl.waiting.Load() == 1 })
	_, err := c.GetService(ctx, &shoalv1.GetServiceRequest{Ref: strings.Repeat("x", 5<<20)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized request: %v, want ResourceExhausted", err)
	}
	close(ctl.gate)
	if err := <-held; err != nil {
		t.Fatalf("a call in flight beside the oversized one: %v", err)
	}
}

// freezeProxy relays TCP connections to a server until frozen; then it
// reads nothing more from either side, as a manager whose host stopped
// answering (no RST: the connection looks alive until TCP gives up).
type freezeProxy struct {
	addr   string
	frozen chan struct{}
	once   sync.Once
}

func newFreezeProxy(t *testing.T, to string) *freezeProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{addr: lis.Addr().String(), frozen: make(chan struct{})}
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	relay := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			select {
			case <-p.frozen:
				return
			default:
			}
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case <-p.frozen:
					return // read but not passed on, as a packet lost
				default:
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, s)
			mu.Unlock()
			go relay(s, c)
			go relay(c, s)
		}
	}()
	return p
}

func (p *freezeProxy) freeze() { p.once.Do(func() { close(p.frozen) }) }

// The manager's host stops answering (no RST). A unary call then fails at
// its deadline. A pipelined call's send went on the one stream under a
// mutex, with no deadline: once the stream's flow-control window was
// spent, a send waited until TCP gave up (many minutes), and every call
// behind it waited for the mutex past its deadline.
func TestReviewFrozenManagerCallsEndAtTheirDeadline(t *testing.T) {
	for _, pipe := range []bool{false, true} {
		t.Run(map[bool]string{false: "unary", true: "pipeline"}[pipe], func(t *testing.T) {
			rig := newReviewRig(t, &reviewCtl{}, pipe, nil)
			px := newFreezeProxy(t, rig.addr)
			c, _ := (&reviewRig{addr: px.addr}).dial(t)
			if _, err := c.GetService(context.Background(), &shoalv1.GetServiceRequest{Ref: "s"}); err != nil {
				t.Fatal(err)
			}
			if pipe && rig.pipelined.Load() != 1 {
				t.Fatalf("the first call did not go over the pipeline")
			}
			px.freeze()
			ref := strings.Repeat("x", 256<<10)
			for i := 0; i < 16; i++ { // 4 MiB: past the windows and socket buffers
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				done := make(chan error, 1)
				go func() {
					_, err := c.GetService(ctx, &shoalv1.GetServiceRequest{Ref: ref})
					done <- err
				}()
				select {
				case err := <-done:
					if status.Code(err) != codes.DeadlineExceeded {
						t.Fatalf("call %d: %v, want DeadlineExceeded", i, err)
					}
				case <-time.After(5 * time.Second):
					cancel()
					t.Fatalf("call %d with a 200 ms deadline still waits after 5 s", i)
				}
				cancel()
			}
		})
	}
}

// BenchmarkReviewPipelinedCalls: 1 or 256 callers of one client against a
// pipeline server in this process over loopback; cpu-µs/call is the whole
// process's CPU (client and server) per call.
func BenchmarkReviewPipelinedCalls(b *testing.B) {
	rig := &reviewRig{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	p := &mpipeline.Server{}
	shoalv1.RegisterControlServer(p, &reviewCtl{})
	shoalv1.RegisterPipelineServer(srv, p)
	go srv.Serve(lis)
	defer srv.Stop()
	rig.addr = lis.Addr().String()
	cc, err := DialHosts([]string{rig.addr}, insecure.NewCredentials())
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	c := shoalv1.NewControlClient(cc)
	if _, err := c.GetService(context.Background(), &shoalv1.GetServiceRequest{Ref: "s"}); err != nil {
		b.Fatal(err)
	}
	for _, callers := range []int{1, 256} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			b.SetParallelism(max(callers/runtime.GOMAXPROCS(0), 1))
			if callers == 1 {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			}
			before := cpuTime()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.GetService(context.Background(), &shoalv1.GetServiceRequest{Ref: "s"}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64((cpuTime()-before).Microseconds())/float64(b.N), "cpu-µs/call")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// notReadyCtl answers every call "not ready", as a manager still starting.
type notReadyCtl struct {
	shoalv1.UnimplementedControlServer
}

func (notReadyCtl) GetService(context.Context, *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
	return nil, errdefs.ToGRPC(errdefs.NotReadyf("manager not ready: starting"))
}

// The first manager answers pipelined calls "not ready": the stream
// (opened on its transport) is retired, the connection moves on, and the
// call is answered by the second manager over a stream of its own.
func TestReviewNotReadyMovesThePipeline(t *testing.T) {
	a := newReviewRig(t, notReadyCtl{}, true, nil)
	b := newReviewRig(t, &reviewCtl{}, true, nil)
	cc, err := DialHosts([]string{a.addr, b.addr}, insecure.NewCredentials())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := shoalv1.NewControlClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		r, err := c.GetService(ctx, &shoalv1.GetServiceRequest{Ref: "s"})
		if err != nil || r.GetService().GetMeta().GetId() != "s" {
			t.Fatalf("call %d: %v, %v", i, r, err)
		}
	}
	if a.pipelined.Load() == 0 || b.pipelined.Load() != 3 || a.unary.Load()+b.unary.Load() != 0 {
		t.Fatalf("pipelined at the unready manager %d, at the ready one %d (want 3); unary %d", a.pipelined.Load(), b.pipelined.Load(), a.unary.Load()+b.unary.Load())
	}
	// The retired streams end: one stream's two goroutines are left.
	waitReview(t, "the retired streams to end", func() bool { return pipeGoroutines() == 2 })
}

// pipeGoroutines counts the goroutines running pipeStream methods
// (receive and sender: two per stream).
func pipeGoroutines() int {
	buf := make([]byte, 4<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "client.(*pipeStream).receive") || strings.Contains(g, "client.(*pipeStream).sender") {
			n++
		}
	}
	return n
}
