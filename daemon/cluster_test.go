package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// These tests run whole nodes in-process on loopback (one port each): the
// cheapest end-to-end check of init, join, forwarding, dispatch and
// scheduling. The multi-host versions with real processes live in e2e/.

type testNode struct {
	dir    string
	addr   string
	cancel context.CancelFunc
	done   chan error
	out    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func quietLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func startNode(t *testing.T, fn func(context.Context, Options) error, o Options) *testNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &testNode{dir: o.DataDir, addr: o.AdvertiseAddr, cancel: cancel, done: make(chan error, 1), out: &syncBuffer{}}
	o.Out = n.out
	o.Logger = quietLogger(t)
	// These tests are about the control plane: tasks stay ASSIGNED. The
	// executor is tested in package agent and, with real containers, in e2e.
	o.NoExecutor = true
	go func() { n.done <- fn(ctx, o) }()
	t.Cleanup(n.stop)
	return n
}

func (n *testNode) stop() {
	n.cancel()
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
	}
}

func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("not within %s: %v", timeout, err)
}

var tokenRE = regexp.MustCompile(`SHOAL-1-[0-9a-f]{64}-[a-z2-7]+`)

type testClient struct {
	Control shoalv1.ControlClient
}

// dial connects with the admin credentials to the first host (the
// in-process tests pick the manager explicitly).
func dial(t *testing.T, adminDir string, hosts ...string) *testClient {
	t.Helper()
	creds, err := trust.LoadCreds(adminDir, "admin")
	if err != nil {
		t.Fatal(err)
	}
	conf, err := trust.ClientTLSConfigFromCreds(creds, trust.ManagerServerName)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(hosts[0], grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &testClient{Control: shoalv1.NewControlClient(conn)}
}

func TestClusterInProcess(t *testing.T) {
	base := t.TempDir()
	first := startNode(t, Init, Options{DataDir: filepath.Join(base, "m1"), AdvertiseAddr: freeAddr(t)})
	var tokens []string
	eventually(t, 15*time.Second, func() error {
		tokens = tokenRE.FindAllString(first.out.String(), -1)
		if len(tokens) != 2 {
			return fmt.Errorf("init printed %d tokens so far: %q", len(tokens), first.out.String())
		}
		return nil
	})
	workerTok, managerTok := tokens[0], tokens[1]
	admin := filepath.Join(first.dir, "admin")

	var nodes = []*testNode{first}
	for i, tok := range []string{managerTok, managerTok, workerTok} {
		nodes = append(nodes, startNode(t, Join, Options{DataDir: filepath.Join(base, fmt.Sprintf("n%d", i+2)),
			AdvertiseAddr: freeAddr(t), JoinAddr: first.addr, Token: tok}))
	}
	c := dial(t, admin, first.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Four nodes ready, three raft voters.
	eventually(t, 30*time.Second, func() error {
		resp, err := c.Control.ListNodes(ctx, &shoalv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		ready := 0
		for _, n := range resp.GetNodes() {
			if n.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_READY {
				ready++
			}
		}
		cl, err := c.Control.GetCluster(ctx, &shoalv1.GetClusterRequest{})
		if err != nil {
			return err
		}
		if ready != 4 || len(cl.GetMembers()) != 3 {
			return fmt.Errorf("%d nodes ready, %d raft members", ready, len(cl.GetMembers()))
		}
		if len(cl.GetCluster().GetCaKeyPem()) != 0 {
			t.Fatal("GetCluster leaked the CA key")
		}
		return nil
	})

	// A service through a follower: forwarded to the leader.
	follower := dial(t, admin, nodes[1].addr)
	svc, err := follower.Control.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: &shoalv1.ServiceSpec{
		Name: "web", Replicas: 8, Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest"}}}})
	if err != nil {
		t.Fatal(err)
	}
	perNode := map[string]int{}
	eventually(t, 20*time.Second, func() error {
		resp, err := c.Control.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": "web"}})
		if err != nil {
			return err
		}
		perNode = map[string]int{}
		for _, tk := range resp.GetTasks() {
			if tk.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_ASSIGNED {
				perNode[tk.GetNodeId()]++
			}
		}
		total := 0
		for _, v := range perNode {
			total += v
		}
		if total != 8 {
			return fmt.Errorf("%d tasks assigned: %v", total, perNode)
		}
		return nil
	})
	for id, k := range perNode {
		if k != 2 {
			t.Errorf("node %s has %d tasks; want the 8 spread 2 per node: %v", id, k, perNode)
		}
	}

	// Invalid input is refused with the field path and changes nothing.
	_, err = c.Control.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: &shoalv1.ServiceSpec{
		Name: "web", Replicas: -1, Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo"}}}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "spec.replicas") {
		t.Fatalf("negative replicas: %v", err)
	}
	_, err = c.Control.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: &shoalv1.ServiceSpec{
		Name: "web", Replicas: 1, Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo"}}}})
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate name: %v", err)
	}
	// A stale version is refused.
	stale := svc.GetService()
	upd := func(version uint64, replicas int64) error {
		spec := stale.GetSpec()
		spec.Replicas = replicas
		_, err := c.Control.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: stale.GetMeta().GetId(), Version: version, Spec: spec})
		return err
	}
	cur, err := c.Control.GetService(ctx, &shoalv1.GetServiceRequest{Ref: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if err := upd(cur.GetService().GetMeta().GetVersion(), 3); err != nil {
		t.Fatal(err)
	}
	if err := upd(cur.GetService().GetMeta().GetVersion(), 5); status.Code(err) != codes.Aborted {
		t.Fatalf("stale version: %v", err)
	}
	// Scale down converges (the agents acknowledge the shutdowns).
	eventually(t, 20*time.Second, func() error {
		resp, err := c.Control.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": "web", "desired-state": "running"}})
		if err != nil {
			return err
		}
		live := 0
		for _, tk := range resp.GetTasks() {
			if tk.GetStatus().GetState() < shoalv1.TaskState_TASK_STATE_COMPLETE {
				live++
			}
		}
		all, err := c.Control.ListTasks(ctx, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": "web"}})
		if err != nil {
			return err
		}
		for _, tk := range all.GetTasks() {
			if tk.GetDesiredState() >= shoalv1.TaskState_TASK_STATE_SHUTDOWN && tk.GetStatus().GetState() < shoalv1.TaskState_TASK_STATE_COMPLETE {
				return fmt.Errorf("task %s still %s", tk.GetMeta().GetId(), tk.GetStatus().GetState())
			}
		}
		if live != 3 {
			return fmt.Errorf("%d live tasks", live)
		}
		return nil
	})

	// Leader loss: stop the first manager; a write through another succeeds
	// and the committed service is still there.
	first.stop()
	c2 := dial(t, admin, nodes[1].addr, nodes[2].addr)
	start := time.Now()
	eventually(t, 20*time.Second, func() error {
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
		defer wcancel()
		_, err := c2.Control.CreateService(wctx, &shoalv1.CreateServiceRequest{Spec: &shoalv1.ServiceSpec{
			Name: "after-failover", Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo"}}}})
		if status.Code(err) == codes.AlreadyExists {
			return nil
		}
		return err
	})
	t.Logf("first write after leader stop: %s", time.Since(start))
	if _, err := c2.Control.GetService(ctx, &shoalv1.GetServiceRequest{Ref: "web"}); err != nil {
		t.Fatalf("committed service lost after failover: %v", err)
	}
	// The old leader restarts from its data dir and catches up: its own
	// store (watch streams are served locally, not forwarded) sees a write
	// made through another manager.
	startNode(t, Run, Options{DataDir: first.dir})
	c3 := dial(t, admin, first.addr)
	var stream shoalv1.Control_WatchClient
	eventually(t, 30*time.Second, func() error {
		var err error
		stream, err = c3.Control.Watch(ctx, &shoalv1.WatchRequest{Kinds: []string{"service"}})
		if err != nil {
			return err
		}
		_, err = c3.Control.GetCluster(ctx, &shoalv1.GetClusterRequest{})
		return err
	})
	if _, err := c2.Control.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: &shoalv1.ServiceSpec{
		Name: "post-restart", Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo"}}}}); err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("restarted manager's watch: %v", err)
		}
		if ev.GetObject().GetService().GetSpec().GetName() == "post-restart" {
			break
		}
	}
}
