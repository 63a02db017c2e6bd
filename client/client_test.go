package client

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestHostsAndCredentialLookup(t *testing.T) {
	dir := t.TempDir()
	if _, err := Hosts(Config{DataDir: dir}); err == nil || !strings.Contains(err.Error(), "--host") {
		t.Fatalf("empty data dir: %v", err)
	}
	if _, err := Credentials(Config{DataDir: dir}); err == nil || !strings.Contains(err.Error(), "--cert-dir") {
		t.Fatalf("no creds: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "node.json"), []byte(`{"role":"worker","advertise_addr":"127.0.0.31:4242","managers":["127.0.0.21:4242","127.0.0.22:4242"]}`), 0o600)
	h, err := Hosts(Config{DataDir: dir})
	if err != nil || strings.Join(h, ",") != "127.0.0.21:4242,127.0.0.22:4242" {
		t.Fatalf("worker hosts = %v, %v", h, err)
	}
	// A worker's own certificate is not used as an admin credential.
	if _, err := Credentials(Config{DataDir: dir}); err == nil {
		t.Fatal("worker data dir gave credentials")
	}
	os.WriteFile(filepath.Join(dir, "node.json"), []byte(`{"role":"manager","advertise_addr":"127.0.0.21:4242","managers":["127.0.0.22:4242","127.0.0.21:4242"]}`), 0o600)
	h, _ = Hosts(Config{DataDir: dir})
	if strings.Join(h, ",") != "127.0.0.21:4242,127.0.0.22:4242" {
		t.Fatalf("manager hosts (self first, deduplicated) = %v", h)
	}
	if h, _ := Hosts(Config{DataDir: dir, Hosts: []string{"x:1"}}); len(h) != 1 || h[0] != "x:1" {
		t.Fatalf("explicit hosts = %v", h)
	}
}

type flaky struct {
	shoalv1.UnimplementedControlServer
	calls atomic.Int32
}

func (f *flaky) GetCluster(context.Context, *shoalv1.GetClusterRequest) (*shoalv1.GetClusterResponse, error) {
	if f.calls.Add(1) < 3 {
		return nil, errdefs.Unavailablef("electing")
	}
	return &shoalv1.GetClusterResponse{LeaderId: "l"}, nil
}

func (f *flaky) GetNode(context.Context, *shoalv1.GetNodeRequest) (*shoalv1.GetNodeResponse, error) {
	f.calls.Add(1)
	return nil, errdefs.NotFoundf("no such node")
}

func TestRetryAndFailover(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(errdefs.UnaryServerInterceptor()))
	f := &flaky{}
	shoalv1.RegisterControlServer(srv, f)
	go srv.Serve(ln)
	defer srv.Stop()
	// The first address is dead: pick_first moves on to the live one.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	conn, err := DialHosts([]string{deadAddr, ln.Addr().String()}, insecure.NewCredentials())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := shoalv1.NewControlClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if err != nil || resp.GetLeaderId() != "l" || f.calls.Load() != 3 {
		t.Fatalf("retry: %v %v calls=%d", resp, err, f.calls.Load())
	}
	// Other errors are not retried.
	f.calls.Store(0)
	if _, err := c.GetNode(ctx, &shoalv1.GetNodeRequest{}); status.Code(err) != codes.NotFound || f.calls.Load() != 1 {
		t.Fatalf("not found retried: %v calls=%d", err, f.calls.Load())
	}
	// Nothing reachable: a clear error once the deadline passes.
	conn2, _ := DialHosts([]string{deadAddr}, insecure.NewCredentials())
	defer conn2.Close()
	sctx, scancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer scancel()
	_, err = shoalv1.NewControlClient(conn2).GetCluster(sctx, &shoalv1.GetClusterRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "cannot reach a manager") {
		t.Fatalf("unreachable: %v", err)
	}
}

type bigList struct {
	shoalv1.UnimplementedControlServer
}

func (bigList) ListTasks(context.Context, *shoalv1.ListTasksRequest) (*shoalv1.ListTasksResponse, error) {
	resp := &shoalv1.ListTasksResponse{}
	for i := range 6000 {
		resp.Tasks = append(resp.Tasks, &shoalv1.Task{ServiceName: strings.Repeat("x", 1000), Slot: uint64(i)})
	}
	return resp, nil
}

// TestLargeReply: a list above gRPC's default 4 MiB receive limit (a
// service at the replicas limit lists ~23 MB) reaches the caller.
func TestLargeReply(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	shoalv1.RegisterControlServer(srv, bigList{})
	go srv.Serve(ln)
	defer srv.Stop()
	conn, err := DialHosts([]string{ln.Addr().String()}, insecure.NewCredentials())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := shoalv1.NewControlClient(conn).ListTasks(ctx, &shoalv1.ListTasksRequest{})
	if err != nil || len(resp.GetTasks()) != 6000 {
		t.Fatalf("ListTasks of ~6 MB: %d tasks, %v", len(resp.GetTasks()), err)
	}
}

// noQuorum answers like a follower that waited for an election in vain
// (GetCluster), or holds the call like a leader that cannot commit
// (UpdateCluster).
type noQuorum struct {
	shoalv1.UnimplementedControlServer
	calls atomic.Int32
}

func (n *noQuorum) GetCluster(context.Context, *shoalv1.GetClusterRequest) (*shoalv1.GetClusterResponse, error) {
	n.calls.Add(1)
	return nil, errdefs.NoQuorumf("no raft leader elected within 10s")
}

func (n *noQuorum) UpdateCluster(ctx context.Context, _ *shoalv1.UpdateClusterRequest) (*shoalv1.UpdateClusterResponse, error) {
	n.calls.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestNoQuorumEndsRetries: a NO_QUORUM answer is not retried until the
// deadline (the manager already waited for an election) and the error says
// the cluster lost quorum; a call a manager holds past the deadline ends
// with a message naming the managers and the timeout, not gRPC's bare
// "context deadline exceeded".
func TestNoQuorumEndsRetries(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(errdefs.UnaryServerInterceptor()))
	n := &noQuorum{}
	shoalv1.RegisterControlServer(srv, n)
	go srv.Serve(ln)
	defer srv.Stop()
	conn, err := DialHosts([]string{ln.Addr().String()}, insecure.NewCredentials())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := shoalv1.NewControlClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = c.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if !errdefs.Is(err, errdefs.ErrNoQuorum) || !strings.Contains(err.Error(), "lost quorum") && !strings.Contains(err.Error(), "must be up") {
		t.Fatalf("no quorum: %v", err)
	}
	if n.calls.Load() != 1 || ctx.Err() != nil {
		t.Fatalf("NO_QUORUM retried: calls=%d ctx=%v", n.calls.Load(), ctx.Err())
	}

	hctx, hcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer hcancel()
	_, err = c.UpdateCluster(hctx, &shoalv1.UpdateClusterRequest{})
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "no answer from the managers") || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("held call: %v", err)
	}
}
