package manager

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// barrierHealth answers Check only once n calls are inside it at once.
type barrierHealth struct {
	healthpb.UnimplementedHealthServer
	all  chan struct{}
	once sync.Once
	n    int
	mu   sync.Mutex
	in   int
}

func (b *barrierHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	b.mu.Lock()
	b.in++
	if b.in == b.n {
		b.once.Do(func() { close(b.all) })
	}
	b.mu.Unlock()
	select {
	case <-b.all:
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// The stream workers bound only how many calls reuse a goroutine, never
// how many run: handlers block on raft for a whole commit, so with every
// worker busy a call must still start (gRPC then runs it on a goroutine of
// its own). Here 4x the workers' count of calls must all be inside their
// handler at once before any returns.
func TestStreamWorkersDoNotBoundConcurrentCalls(t *testing.T) {
	defer func(v string) { streamWorkers = v }(streamWorkers)
	streamWorkers = "2"
	const calls = 8
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(tuningOptions()...)
	defer srv.Stop()
	b := &barrierHealth{all: make(chan struct{}), n: calls}
	healthpb.RegisterHealthServer(srv, b)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Generous: a deadlock shows as every call failing at the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errs := make(chan error, calls)
	for i := 0; i < calls; i++ {
		go func() {
			_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			errs <- err
		}()
	}
	for i := 0; i < calls; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("call with %d of %d calls blocked in handlers and 2 workers: %v", i, calls, err)
		}
	}
	srv.Stop()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
