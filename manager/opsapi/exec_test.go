package opsapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// lockedBuffer is the audit log of a test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// records are the audit records so far.
func (l *lockedBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// fakeAgent is an AgentAPI that runs pretend commands: "echo ARGS"
// prints them, "exit N" exits N, "cat" echoes stdin until it is closed,
// "hang" runs until the caller goes.
type fakeAgent struct {
	shoalv1.UnimplementedAgentAPIServer
	mu     sync.Mutex
	starts []*shoalv1.ExecStart
	killed chan string
}

func (f *fakeAgent) Exec(stream shoalv1.AgentAPI_ExecServer) error {
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	st := first.GetStart()
	f.mu.Lock()
	f.starts = append(f.starts, st)
	f.mu.Unlock()
	exit := func(code int32) error {
		return stream.Send(&shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Exit{Exit: &shoalv1.ExecExit{Code: code}}})
	}
	switch st.GetCmd()[0] {
	case "echo":
		if err := stream.Send(&shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Stdout{Stdout: []byte(strings.Join(st.GetCmd()[1:], " ") + "\n")}}); err != nil {
			return err
		}
		return exit(0)
	case "exit":
		n, _ := strconv.Atoi(st.GetCmd()[1])
		return exit(int32(n))
	case "cat":
		for {
			req, err := stream.Recv()
			if err != nil {
				return err
			}
			if req.GetCloseStdin() {
				return exit(0)
			}
			if err := stream.Send(&shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Stdout{Stdout: req.GetStdin()}}); err != nil {
				return err
			}
		}
	case "hang":
		<-stream.Context().Done()
		f.killed <- st.GetTaskId()
		return stream.Context().Err()
	case "refuse":
		return errdefs.ToGRPC(errdefs.FailedPreconditionf("task %q: its container is not running", st.GetTaskId()))
	}
	return nil
}

type execEnv struct {
	t     *testing.T
	store *raftstore.Store
	agent *fakeAgent
	// agentAddr serves fakeAgent; silentAddr accepts connections and
	// never answers (a node that is gone but not yet known down).
	agentAddr, silentAddr string
	audit                 *lockedBuffer
	cl                    shoalv1.OpsClient
	// identity is the caller's (set before the calls that need another).
	identity trust.Identity
}

// identityStream carries the caller's identity, as trust.Authorizer sets
// it.
type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s identityStream) Context() context.Context { return s.ctx }

func newExecEnv(t *testing.T) *execEnv {
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
	for deadline := time.After(10 * time.Second); !st.IsLeader(); {
		select {
		case <-st.LeadershipChanged():
		case <-deadline:
			t.Fatal("the store never led")
		}
	}
	e := &execEnv{t: t, store: st, agent: &fakeAgent{killed: make(chan string, 4)}, audit: &lockedBuffer{},
		identity: trust.Identity{NodeID: "alice", Role: trust.RoleAdmin}}

	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	ag := grpc.NewServer()
	shoalv1.RegisterAgentAPIServer(ag, e.agent)
	ln := listen()
	go ag.Serve(ln)
	t.Cleanup(ag.Stop)
	e.agentAddr = ln.Addr().String()
	silent := listen()
	t.Cleanup(func() { silent.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	e.silentAddr = silent.Addr().String()

	srv := New(Config{Store: st, Logger: discard(), Audit: slog.New(slog.NewJSONHandler(e.audit, nil)), ReachTimeout: 300 * time.Millisecond})
	srv.dial = func(_ context.Context, addr, _ string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	g := grpc.NewServer(grpc.ChainStreamInterceptor(func(s any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx := trust.WithIdentity(ss.Context(), e.identity)
		return h(s, identityStream{ss, ctx})
	}, errdefs.StreamServerInterceptor()))
	shoalv1.RegisterOpsServer(g, srv)
	ln = listen()
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.cl = shoalv1.NewOpsClient(conn)

	e.update(func(tx raftstore.WriteTx) error {
		for _, n := range []*shoalv1.Node{
			{Meta: &shoalv1.Meta{Id: "n-up"}, Spec: &shoalv1.NodeSpec{Name: "w1"}, Status: &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_READY, AgentAddr: e.agentAddr}},
			{Meta: &shoalv1.Meta{Id: "n-down"}, Spec: &shoalv1.NodeSpec{Name: "w2"}, Status: &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_DOWN, AgentAddr: e.silentAddr}},
			{Meta: &shoalv1.Meta{Id: "n-silent"}, Spec: &shoalv1.NodeSpec{Name: "w3"}, Status: &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_READY, AgentAddr: e.silentAddr}},
		} {
			if err := tx.Create(n); err != nil {
				return err
			}
		}
		for _, tk := range []struct {
			id, node string
			state    shoalv1.TaskState
		}{
			{"task-run", "n-up", shoalv1.TaskState_TASK_STATE_RUNNING},
			{"task-done", "n-up", shoalv1.TaskState_TASK_STATE_COMPLETE},
			{"task-down", "n-down", shoalv1.TaskState_TASK_STATE_RUNNING},
			{"task-silent", "n-silent", shoalv1.TaskState_TASK_STATE_RUNNING},
		} {
			if err := tx.Create(&shoalv1.Task{Meta: &shoalv1.Meta{Id: tk.id}, ServiceName: "web", NodeId: tk.node,
				DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING, Status: &shoalv1.TaskStatus{State: tk.state}}); err != nil {
				return err
			}
		}
		return nil
	})
	return e
}

func (e *execEnv) update(fn func(tx raftstore.WriteTx) error) {
	e.t.Helper()
	if _, err := e.store.Update(context.Background(), fn); err != nil {
		e.t.Fatal(err)
	}
}

type execResult struct {
	stdout string
	exit   *shoalv1.ExecExit
	err    error
}

// run starts an exec, sends more, and reads it to its end.
func (e *execEnv) run(ctx context.Context, start *shoalv1.ExecStart, more ...*shoalv1.ExecRequest) execResult {
	e.t.Helper()
	s, err := e.cl.TaskExec(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	// A call refused at once may end before the start is sent: Send then
	// says io.EOF and Recv gives the status.
	if err := s.Send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Start{Start: start}}); err != nil && !errors.Is(err, io.EOF) {
		e.t.Fatal(err)
	}
	for _, m := range more {
		if err := s.Send(m); err != nil {
			break // the server ended the call: Recv tells why
		}
	}
	var r execResult
	for {
		resp, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return r
		}
		if err != nil {
			r.err = err
			return r
		}
		r.stdout += string(resp.GetStdout())
		if resp.GetExit() != nil {
			r.exit = resp.GetExit()
		}
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msgPart) {
		t.Fatalf("got %v, want %s containing %q", err, code, msgPart)
	}
}

// TestTaskExecRelay: an exec reaches the task's agent (by unique prefix,
// with the full id), output and the exit code come back, stdin goes
// through; each exec is one audit record naming the caller, the task, the
// command and how it ended.
func TestTaskExecRelay(t *testing.T) {
	e := newExecEnv(t)
	ctx := testCtx(t)
	r := e.run(ctx, &shoalv1.ExecStart{TaskId: "task-r", Cmd: []string{"echo", "hi", "there"}, Tty: true})
	if r.err != nil || r.stdout != "hi there\n" || r.exit.GetCode() != 0 {
		t.Fatalf("echo: %+v", r)
	}
	if got := e.agent.starts[0].GetTaskId(); got != "task-run" {
		t.Errorf("the agent was asked for task %q, want the full id", got)
	}
	if r := e.run(ctx, &shoalv1.ExecStart{TaskId: "task-run", Cmd: []string{"exit", "3"}}); r.err != nil || r.exit.GetCode() != 3 {
		t.Fatalf("exit 3: %+v", r)
	}
	r = e.run(ctx, &shoalv1.ExecStart{TaskId: "task-run", Cmd: []string{"cat"}, Stdin: true},
		&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Stdin{Stdin: []byte("secret-input")}},
		&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_CloseStdin{CloseStdin: true}})
	if r.err != nil || r.stdout != "secret-input" || r.exit.GetCode() != 0 {
		t.Fatalf("cat: %+v", r)
	}

	recs := e.audit.records(t)
	if len(recs) != 3 {
		t.Fatalf("%d audit records, want 3: %v", len(recs), recs)
	}
	first := recs[0]
	for k, want := range map[string]any{"caller": "alice", "caller_role": "admin", "task": "task-run", "service": "web",
		"node": "n-up", "tty": true, "exit_code": float64(0), "event": "exec"} {
		if first[k] != want {
			t.Errorf("audit %s = %v, want %v (%v)", k, first[k], want, first)
		}
	}
	if argv, _ := first["argv"].([]any); len(argv) != 3 || argv[0] != "echo" {
		t.Errorf("audit argv %v", first["argv"])
	}
	if _, ok := first["duration"]; !ok || first["time"] == nil {
		t.Errorf("audit record without time or duration: %v", first)
	}
	if recs[1]["exit_code"] != float64(3) {
		t.Errorf("audit exit code %v, want 3", recs[1]["exit_code"])
	}
	e.audit.mu.Lock()
	all := e.audit.b.String()
	e.audit.mu.Unlock()
	if strings.Contains(all, "secret-input") {
		t.Error("the audit log holds stdin")
	}
}

// TestTaskExecRefused: an unknown task is NotFound, a task that does not
// run FailedPrecondition naming its state, one on a down node fails at
// once naming the node, one on a node that does not answer fails within
// the reach timeout naming it, bad input names the field, and the agent's
// own refusal keeps its class. Each is audited with its error.
func TestTaskExecRefused(t *testing.T) {
	e := newExecEnv(t)
	ctx := testCtx(t)
	for _, tc := range []struct {
		start *shoalv1.ExecStart
		code  codes.Code
		msg   string
	}{
		{&shoalv1.ExecStart{TaskId: "nope", Cmd: []string{"echo"}}, codes.NotFound, "nope"},
		{&shoalv1.ExecStart{TaskId: "task-done", Cmd: []string{"echo"}}, codes.FailedPrecondition, `task "task-done" is complete, not running`},
		{&shoalv1.ExecStart{TaskId: "task-down", Cmd: []string{"echo"}}, codes.Unavailable, `node "w2" (n-down), which holds task "task-down", is down`},
		{&shoalv1.ExecStart{TaskId: "task-silent", Cmd: []string{"echo"}}, codes.Unavailable, `node "w3" (n-silent), which holds task "task-silent", did not answer within 300ms`},
		{&shoalv1.ExecStart{TaskId: "task-run"}, codes.InvalidArgument, "start.cmd"},
		{&shoalv1.ExecStart{TaskId: "task-run", Cmd: []string{"echo"}, Env: []string{"=x"}}, codes.InvalidArgument, "start.env[0]"},
		{&shoalv1.ExecStart{TaskId: "task-run", Cmd: []string{"echo"}, Workdir: "rel"}, codes.InvalidArgument, "start.workdir"},
		{&shoalv1.ExecStart{TaskId: "task-run", Cmd: []string{strings.Repeat("a", maxExecArgvBytes)}}, codes.InvalidArgument, "bytes"},
		{&shoalv1.ExecStart{TaskId: "task-run", Cmd: []string{"refuse"}}, codes.FailedPrecondition, "not running"},
	} {
		r := e.run(ctx, tc.start)
		wantCode(t, r.err, tc.code, tc.msg)
	}
	r := e.run(ctx, &shoalv1.ExecStart{TaskId: "task-run", Cmd: []string{"cat"}, Stdin: true},
		&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Start{Start: &shoalv1.ExecStart{TaskId: "task-run", Cmd: []string{"x"}}}})
	wantCode(t, r.err, codes.InvalidArgument, "start: sent twice")

	recs := e.audit.records(t)
	if len(recs) != 10 {
		t.Fatalf("%d audit records, want 10", len(recs))
	}
	if recs[2]["node"] != "n-down" || !strings.Contains(recs[2]["error"].(string), "is down") || recs[2]["exit_code"] != nil {
		t.Errorf("audit of the exec on a down node: %v", recs[2])
	}
}

// TestTaskExecCallerGone: a caller that hangs up ends the agent's stream
// (which kills the process there), and the exec is audited.
func TestTaskExecCallerGone(t *testing.T) {
	e := newExecEnv(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	s, err := e.cl.TaskExec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Start{Start: &shoalv1.ExecStart{TaskId: "task-run", Cmd: []string{"hang"}}}}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		e.agent.mu.Lock()
		n := len(e.agent.starts)
		e.agent.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the exec never reached the agent")
		}
	}
	cancel()
	select {
	case id := <-e.agent.killed:
		if id != "task-run" {
			t.Fatalf("ended %q", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent's stream outlived the caller")
	}
	for deadline := time.Now().Add(10 * time.Second); len(e.audit.records(t)) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no audit record of the abandoned exec")
		}
	}
}

// TestTaskExecAuditNamesToken: an exec made with an API token is audited
// with the token's id, not only its name (names are reused once a revoked
// token is dropped).
func TestTaskExecAuditNamesToken(t *testing.T) {
	e := newExecEnv(t)
	e.identity = trust.Identity{NodeID: "ci", Role: trust.RoleAdminToken, Serial: "0123456789abcdef"}
	if r := e.run(testCtx(t), &shoalv1.ExecStart{TaskId: "task-run", Cmd: []string{"echo", "hi"}}); r.err != nil {
		t.Fatalf("exec: %+v", r)
	}
	recs := e.audit.records(t)
	if len(recs) != 1 || recs[0]["caller"] != "ci" || recs[0]["caller_role"] != "admin-token" || recs[0]["caller_token_id"] != "0123456789abcdef" {
		t.Fatalf("audit: %v", recs)
	}
}
