package opsapi

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/agent/agentapi"
	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
	"github.com/shoal-dev/shoal/trust/trusttest"
)

// statsEnv is one manager with a real one-node raft store, the Ops
// server on loopback, and real agent API servers with fake cgroups.
type statsEnv struct {
	t     *testing.T
	store *raftstore.Store
	root  *trust.CA
	cl    shoalv1.OpsClient
	srv   *Server
}

func newStatsEnv(t *testing.T, reach time.Duration) *statsEnv {
	t.Helper()
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, trans := raft.NewInmemTransport("solo:4242")
	st, err := raftstore.Open(raftstore.Config{
		NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond,
		Logger: discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for deadline := time.After(10 * time.Second); !st.IsLeader(); {
		select {
		case <-st.LeadershipChanged():
		case <-deadline:
			t.Fatal("the store never led")
		}
	}
	root, err := trust.NewRootCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	e := &statsEnv{t: t, store: st, root: root}
	srv := New(Config{Store: st, Certs: trusttest.NodeCerts(t, root, "m1", trust.RoleManager), Logger: discard, ReachTimeout: reach})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor()))
	shoalv1.RegisterOpsServer(g, srv)
	e.srv = srv
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.cl = shoalv1.NewOpsClient(conn)
	return e
}

func (e *statsEnv) update(fn func(tx raftstore.WriteTx) error) {
	e.t.Helper()
	if _, err := e.store.Update(context.Background(), fn); err != nil {
		e.t.Fatal(err)
	}
}

func (e *statsEnv) addNode(id, name string, state shoalv1.NodeState, agentAddr string) {
	e.update(func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: id}, Spec: &shoalv1.NodeSpec{Name: name},
			Status: &shoalv1.NodeStatus{State: state, AgentAddr: agentAddr}})
	})
}

func (e *statsEnv) addTask(id, svcID, svcName string, slot uint64, nodeID string, state shoalv1.TaskState) *shoalv1.Task {
	t := &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: svcID, ServiceName: svcName, Slot: slot, NodeId: nodeID,
		DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING, Status: &shoalv1.TaskStatus{State: state}}
	e.update(func(tx raftstore.WriteTx) error { return tx.Create(t) })
	return t
}

// startAgent serves a real agent API for nodeID holding tasks, each
// reading 1 MiB of memory and a growing CPU counter.
func (e *statsEnv) startAgent(nodeID string, tasks ...*shoalv1.Task) string {
	e.t.Helper()
	var cpu uint64
	srv := agentapi.New(agentapi.Config{NodeID: nodeID, StatsInterval: 20 * time.Millisecond,
		Tasks: func() []*shoalv1.Task { return tasks },
		Usage: func(string) (*shoalv1.TaskStats, error) {
			cpu += 1e6
			return &shoalv1.TaskStats{CpuUsageNs: cpu, MemoryBytes: 1 << 20}, nil
		}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agentapi.ServeListener(ctx, ln, trusttest.NodeCerts(e.t, e.root, nodeID, trust.RoleWorker), srv)
	}()
	e.t.Cleanup(func() {
		cancel()
		<-done
	})
	return ln.Addr().String()
}

func (e *statsEnv) fixture() {
	e.update(func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}, Spec: &shoalv1.ServiceSpec{Name: "web"}})
	})
	t1 := e.addTask("t1", "s1", "web", 1, "n1", shoalv1.TaskState_TASK_STATE_RUNNING)
	t2 := e.addTask("t2", "s1", "web", 2, "n2", shoalv1.TaskState_TASK_STATE_RUNNING)
	e.addTask("t3", "s1", "web", 3, "n3", shoalv1.TaskState_TASK_STATE_RUNNING)
	e.addTask("t4", "s1", "web", 4, "n1", shoalv1.TaskState_TASK_STATE_SHUTDOWN)
	e.addNode("n1", "w1", shoalv1.NodeState_NODE_STATE_READY, e.startAgent("n1", t1))
	e.addNode("n2", "w2", shoalv1.NodeState_NODE_STATE_READY, e.startAgent("n2", t2))
	e.addNode("n3", "w3", shoalv1.NodeState_NODE_STATE_DOWN, "127.0.0.1:1")
}

func taskIDs(r *shoalv1.StatsResponse) string {
	var ids []string
	for _, s := range r.GetStats() {
		ids = append(ids, s.GetTaskId()+"@"+s.GetNodeId())
	}
	return strings.Join(ids, ",")
}

// A service's running tasks on two nodes are merged into one reply; the
// down node is named, not waited for; finished tasks are left out.
func TestTaskStatsService(t *testing.T) {
	e := newStatsEnv(t, 10*time.Second)
	e.fixture()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := e.cl.TaskStats(ctx, &shoalv1.StatsRequest{Service: "web"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := taskIDs(resp); got != "t1@n1,t2@n2" {
		t.Fatalf("stats of %s", got)
	}
	if resp.GetStats()[0].GetMemoryBytes() != 1<<20 || resp.GetStats()[0].GetCpuPercent() <= 0 {
		t.Fatalf("stats: %v", resp.GetStats()[0])
	}
	if w := strings.Join(resp.GetWarnings(), "\n"); !strings.Contains(w, `node "w3" (n3) is down: stats of 1 task unavailable`) {
		t.Fatalf("warnings: %s", w)
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("after the one reply: %v", err)
	}
}

// Streaming keeps sending merged samples; by task ids and by node.
func TestTaskStatsStreamAndSelectors(t *testing.T) {
	e := newStatsEnv(t, 10*time.Second)
	e.fixture()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := e.cl.TaskStats(ctx, &shoalv1.StatsRequest{TaskIds: []string{"t2", "t4"}, Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := taskIDs(resp); got != "t2@n2" {
			t.Fatalf("reply %d: stats of %s", i, got)
		}
		if w := strings.Join(resp.GetWarnings(), "\n"); !strings.Contains(w, "task t4 is not running") {
			t.Fatalf("reply %d warnings: %s", i, w)
		}
	}
	st, err = e.cl.TaskStats(ctx, &shoalv1.StatsRequest{Node: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := taskIDs(resp); got != "t1@n1" {
		t.Fatalf("node w1: stats of %s", got)
	}
}

// A node that accepts connections but never answers is named after
// ReachTimeout; the others' stats still come.
func TestTaskStatsUnresponsiveNode(t *testing.T) {
	e := newStatsEnv(t, 300*time.Millisecond)
	e.fixture()
	ln, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never speaks TLS
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	e.update(func(tx raftstore.WriteTx) error {
		n, _ := raftstore.Get[*shoalv1.Node](tx, "n2")
		n = proto.Clone(n).(*shoalv1.Node)
		n.Status.AgentAddr = ln.Addr().String()
		return tx.Update(n)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := e.cl.TaskStats(ctx, &shoalv1.StatsRequest{Service: "web"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := taskIDs(resp); got != "t1@n1" {
		t.Fatalf("stats of %s", got)
	}
	if w := strings.Join(resp.GetWarnings(), "\n"); !strings.Contains(w, `node "w2" (n2) did not answer within 300ms`) {
		t.Fatalf("warnings: %s", w)
	}
}

func TestTaskStatsBadRequests(t *testing.T) {
	e := newStatsEnv(t, time.Second)
	e.fixture()
	for _, tc := range []struct {
		req  *shoalv1.StatsRequest
		code codes.Code
		msg  string
	}{
		{&shoalv1.StatsRequest{}, codes.InvalidArgument, "service, task_ids or node"},
		{&shoalv1.StatsRequest{Service: "nope"}, codes.NotFound, "service"},
		{&shoalv1.StatsRequest{TaskIds: []string{"t1", "zz"}}, codes.NotFound, "task_ids[1]"},
		{&shoalv1.StatsRequest{Node: "nope"}, codes.NotFound, "node"},
	} {
		st, err := e.cl.TaskStats(context.Background(), tc.req)
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v: %v, want %s with %q", tc.req, err, tc.code, tc.msg)
		}
	}
}

// orderStream is a stats stream that records the order of its headers and
// messages, and ends its call after the first message.
type orderStream struct {
	grpc.ServerStream
	ctx    context.Context
	cancel context.CancelFunc
	order  []string
}

func (o *orderStream) Context() context.Context { return o.ctx }
func (o *orderStream) SendHeader(metadata.MD) error {
	o.order = append(o.order, "headers")
	return nil
}
func (o *orderStream) Send(*shoalv1.StatsResponse) error {
	o.order = append(o.order, "message")
	o.cancel()
	return nil
}

// TestTaskStatsStreamHeadersFirst: a streaming stats call sends its
// headers before it asks the agents (its first merged reply waits for
// them, up to a second), so its caller — an HTTP client through the
// gateway — sees the stream open at once; a one-off call does not need to.
func TestTaskStatsStreamHeadersFirst(t *testing.T) {
	e := newStatsEnv(t, 10*time.Second)
	e.fixture()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := &orderStream{ctx: ctx, cancel: cancel}
	if err := e.srv.TaskStats(&shoalv1.StatsRequest{Service: "web", Stream: true}, o); err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.order, ",") != "headers,message" {
		t.Fatalf("sent %v, want headers then a message", o.order)
	}
}
