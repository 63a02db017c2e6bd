package logbroker

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-dev/shoal/agent/agentapi"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
	"github.com/shoal-dev/shoal/trust/trusttest"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// env is a one-manager cluster: a real one-node raft store, a CA, a
// broker served on loopback, and agents added by the tests.
type env struct {
	t     *testing.T
	store *raftstore.Store
	root  *trust.CA
	cl    shoalv1.LogsClient
	// returned gets the result of every ServiceLogs call when its
	// handler (and so every goroutine it started) has returned.
	returned chan error
}

func newEnv(t *testing.T, reach time.Duration) *env {
	t.Helper()
	_, trans := raft.NewInmemTransport("solo:4242")
	st, err := raftstore.Open(raftstore.Config{
		NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond,
		Logger: discard(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for deadline := time.After(10 * time.Second); ; {
		changed := st.LeadershipChanged()
		if st.IsLeader() {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("the store never led")
		}
	}
	root, err := trust.NewRootCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: st, root: root, returned: make(chan error, 100)}
	e.update(func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c1"}, Name: "test"})
	})
	b := New(Config{Store: st, Certs: e.certs("m1", trust.RoleManager), Logger: discard(), ReachTimeout: reach})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.ChainStreamInterceptor(func(s any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		err := h(s, ss)
		e.returned <- err
		return err
	}, errdefs.StreamServerInterceptor()))
	shoalv1.RegisterLogsServer(g, b)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.cl = shoalv1.NewLogsClient(conn)
	return e
}

func (e *env) update(fn func(tx raftstore.WriteTx) error) {
	e.t.Helper()
	if _, err := e.store.Update(context.Background(), fn); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) certs(id string, role trust.Role) *trust.CertStore {
	return trusttest.NodeCerts(e.t, e.root, id, role)
}

func (e *env) addNode(id, name string, state shoalv1.NodeState, agentAddr string) {
	e.t.Helper()
	e.update(func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: id}, Role: shoalv1.NodeRole_NODE_ROLE_WORKER,
			Spec:   &shoalv1.NodeSpec{Name: name},
			Status: &shoalv1.NodeStatus{State: state, AgentAddr: agentAddr}})
	})
}

func (e *env) addService(id, name string) {
	e.t.Helper()
	e.update(func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Service{Meta: &shoalv1.Meta{Id: id}, Spec: &shoalv1.ServiceSpec{Name: name}})
	})
}

func (e *env) addTask(id, serviceID, serviceName string, slot uint64, nodeID string, state shoalv1.TaskState) {
	e.t.Helper()
	e.update(func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: serviceID, ServiceName: serviceName, Slot: slot,
			NodeId: nodeID, DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING, Status: &shoalv1.TaskStatus{State: state}})
	})
}

// agent is a real agent API server over a directory of task logs.
type agent struct {
	t    *testing.T
	dir  string
	addr string
	mu   sync.Mutex // guards held
	held map[string]bool
	stop func()
}

func (e *env) startAgent(nodeID string) *agent {
	e.t.Helper()
	a := &agent{t: e.t, dir: e.t.TempDir(), held: map[string]bool{}}
	srv := agentapi.New(agentapi.Config{NodeID: nodeID, LogPath: a.logPath, Logger: discard()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	a.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agentapi.ServeListener(ctx, ln, e.certs(nodeID, trust.RoleWorker), srv) }()
	var once sync.Once
	a.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("agent %s: %v", nodeID, err)
			}
		})
	}
	e.t.Cleanup(a.stop)
	return a
}

func (a *agent) logPath(id string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.held[id] {
		return ""
	}
	return filepath.Join(a.dir, id+".log")
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// write appends lines to a task's log (the agent then holds the task);
// each line is at t0 plus its offset.
func (a *agent) write(taskID string, lines ...line) {
	a.t.Helper()
	a.mu.Lock()
	a.held[taskID] = true
	a.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(a.dir, taskID+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		a.t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		b, _ := json.Marshal(struct {
			Time   time.Time `json:"time"`
			Stream string    `json:"stream"`
			Log    string    `json:"log"`
		}{t0.Add(l.at), "stdout", l.text + "\n"})
		if _, err := f.Write(append(b, '\n')); err != nil {
			a.t.Fatal(err)
		}
	}
}

type line struct {
	at   time.Duration
	text string
}

// silentListener accepts connections and never says a word: a node whose
// kernel answers but whose agent is wedged.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // guards conns
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// result is a whole (non-following) logs call.
type result struct {
	lines    []string // "task: text"
	msgs     []*shoalv1.LogMessage
	warnings []string
	err      error
}

func (e *env) logs(req *shoalv1.LogsRequest) result {
	e.t.Helper()
	st, err := e.cl.ServiceLogs(testCtx(e.t), req)
	if err != nil {
		return result{err: err}
	}
	var r result
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return r
		}
		if err != nil {
			r.err = err
			return r
		}
		for _, m := range resp.GetMessages() {
			r.msgs = append(r.msgs, m)
			r.lines = append(r.lines, m.GetTaskId()+": "+string(m.GetData()))
		}
		r.warnings = append(r.warnings, resp.GetWarnings()...)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func (e *env) agentAddr(nodeID string) string {
	n, _ := raftstore.Get[*shoalv1.Node](e.store.View(), nodeID)
	return n.GetStatus().GetAgentAddr()
}
