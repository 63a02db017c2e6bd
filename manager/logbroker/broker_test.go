package logbroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/agent/agentapi"
	"github.com/shoal-dev/shoal/logstream"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

const (
	running = shoalv1.TaskState_TASK_STATE_RUNNING
	failed  = shoalv1.TaskState_TASK_STATE_FAILED
	pending = shoalv1.TaskState_TASK_STATE_PENDING
	ready   = shoalv1.NodeState_NODE_STATE_READY
	down    = shoalv1.NodeState_NODE_STATE_DOWN
)

// webEnv: service web with task1 on w1 and task2 on w2 (lines interleaved
// in time), a failed task whose log is gone, and a pending task.
func webEnv(t *testing.T) (*env, *agent, *agent) {
	e := newEnv(t, 0)
	a1, a2 := e.startAgent("n1"), e.startAgent("n2")
	e.addNode("n1", "w1", ready, a1.addr)
	e.addNode("n2", "w2", ready, a2.addr)
	e.addService("svcweb", "web")
	e.addTask("task1", "svcweb", "web", 1, "n1", running)
	e.addTask("task2", "svcweb", "web", 2, "n2", running)
	e.addTask("oldtask", "svcweb", "web", 1, "n1", failed)
	e.addTask("waiting", "svcweb", "web", 3, "", pending)
	a1.write("task1", line{0, "a1"}, line{2 * time.Second, "a2"})
	a2.write("task2", line{time.Second, "b1"}, line{3 * time.Second, "b2"})
	return e, a1, a2
}

func TestServiceLogs(t *testing.T) {
	e, _, _ := webEnv(t)
	tail := func(n int64) *int64 { return &n }
	cases := []struct {
		name         string
		req          *shoalv1.LogsRequest
		want         []string
		wantWarnings []string
	}{
		{"service by name, merged by time across nodes", &shoalv1.LogsRequest{Service: "web"},
			[]string{"task1: a1", "task2: b1", "task1: a2", "task2: b2"}, nil},
		{"service by id prefix", &shoalv1.LogsRequest{Service: "svcw"},
			[]string{"task1: a1", "task2: b1", "task1: a2", "task2: b2"}, nil},
		{"tail per task", &shoalv1.LogsRequest{Service: "web", Options: &shoalv1.LogsOptions{Tail: tail(1)}},
			[]string{"task1: a2", "task2: b2"}, nil},
		{"since", &shoalv1.LogsRequest{Service: "web", Options: &shoalv1.LogsOptions{Since: timestamppb.New(t0.Add(1500 * time.Millisecond))}},
			[]string{"task1: a2", "task2: b2"}, nil},
		{"task by prefix", &shoalv1.LogsRequest{TaskIds: []string{"task2"}}, []string{"task2: b1", "task2: b2"}, nil},
		{"tasks, duplicates once", &shoalv1.LogsRequest{TaskIds: []string{"task2", "task1", "task2"}},
			[]string{"task1: a1", "task2: b1", "task1: a2", "task2: b2"}, nil},
		{"a finished task asked by id is missed aloud", &shoalv1.LogsRequest{TaskIds: []string{"oldtask"}},
			nil, []string{logstream.UnknownTaskWarning("oldtask", "n1")}},
		{"a task not on a node", &shoalv1.LogsRequest{TaskIds: []string{"waiting"}},
			nil, []string{`task "waiting" has not been scheduled to a node yet: it has no logs`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.logs(c.req)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if !slices.Equal(r.lines, c.want) {
				t.Errorf("lines %q, want %q", r.lines, c.want)
			}
			if !slices.Equal(r.warnings, c.wantWarnings) {
				t.Errorf("warnings %q, want %q", r.warnings, c.wantWarnings)
			}
		})
	}
}

// TestServiceLogsLabels: the agents here know no task metadata; the
// broker labels lines from its store.
func TestServiceLogsLabels(t *testing.T) {
	e, _, _ := webEnv(t)
	r := e.logs(&shoalv1.LogsRequest{Service: "web", Options: &shoalv1.LogsOptions{Tail: proto.Int64(1)}})
	if r.err != nil || len(r.msgs) != 2 {
		t.Fatalf("got %v, %v", r.msgs, r.err)
	}
	want := &shoalv1.LogMessage{TaskId: "task1", ServiceId: "svcweb", ServiceName: "web", Slot: 1, NodeId: "n1",
		Time: timestamppb.New(t0.Add(2 * time.Second)), Stream: "stdout", Data: []byte("a2")}
	if !proto.Equal(r.msgs[0], want) {
		t.Errorf("got %v, want %v", r.msgs[0], want)
	}
}

func TestServiceLogsRefused(t *testing.T) {
	e, _, _ := webEnv(t)
	e.addTask("task9", "svcweb", "web", 9, "n1", running)
	cases := []struct {
		name string
		req  *shoalv1.LogsRequest
		code codes.Code
		msg  string
	}{
		{"unknown service", &shoalv1.LogsRequest{Service: "nope"}, codes.NotFound, `"nope"`},
		{"unknown task", &shoalv1.LogsRequest{TaskIds: []string{"nope"}}, codes.NotFound, `"nope"`},
		{"ambiguous task prefix", &shoalv1.LogsRequest{TaskIds: []string{"task"}}, codes.InvalidArgument, "matches"},
		{"both", &shoalv1.LogsRequest{Service: "web", TaskIds: []string{"task1"}}, codes.InvalidArgument, "not both"},
		{"neither", &shoalv1.LogsRequest{}, codes.InvalidArgument, "is required"},
		{"negative tail", &shoalv1.LogsRequest{Service: "web", Options: &shoalv1.LogsOptions{Tail: proto.Int64(-2)}}, codes.InvalidArgument, "options.tail"},
		{"bad since", &shoalv1.LogsRequest{Service: "web", Options: &shoalv1.LogsOptions{Since: &timestamppb.Timestamp{Seconds: 1 << 62}}}, codes.InvalidArgument, "options.since"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.logs(c.req)
			if status.Code(r.err) != c.code || !strings.Contains(status.Convert(r.err).Message(), c.msg) {
				t.Fatalf("got %v, want %s containing %q", r.err, c.code, c.msg)
			}
		})
	}
}

// TestFailingNodes: a down node, a node without an agent address, a node
// that refuses connections and a node that accepts them but never answers
// are each named in a warning, and the healthy node's lines still arrive;
// the call returns (the silent node costs ReachTimeout) well before the
// test's 30 s deadline.
func TestFailingNodes(t *testing.T) {
	e := newEnv(t, 300*time.Millisecond)
	a1 := e.startAgent("n1")
	refusing := e.startAgent("n5")
	refusing.stop()
	e.addNode("n1", "w1", ready, a1.addr)
	e.addNode("n2", "w2", down, "127.0.0.1:1")
	e.addNode("n3", "w3", ready, silentListener(t))
	e.addNode("n4", "w4", ready, "")
	e.addNode("n5", "w5", ready, refusing.addr)
	e.addService("svcweb", "web")
	for i, n := range []string{"n1", "n2", "n3", "n4", "n5"} {
		e.addTask("task"+n, "svcweb", "web", uint64(i+1), n, running)
	}
	e.addTask("task2b", "svcweb", "web", 9, "n2", running)
	a1.write("taskn1", line{0, "hello"})

	r := e.logs(&shoalv1.LogsRequest{Service: "web"})
	if r.err != nil {
		t.Fatalf("the call failed: %v", r.err)
	}
	if !slices.Equal(r.lines, []string{"taskn1: hello"}) {
		t.Errorf("lines %q, want the healthy node's", r.lines)
	}
	want := []string{
		`node "w2" (n2) is down: logs of 2 tasks unavailable`,
		`node "w3" (n3) did not answer within 300ms: logs of 1 task unavailable`,
		`node "w4" (n4) has not reported an agent API address: logs of 1 task unavailable`,
		`node "w5" (n5), agent API at ` + refusing.addr + ": ",
	}
	if len(r.warnings) != len(want) {
		t.Fatalf("warnings %q, want %d", r.warnings, len(want))
	}
	for _, w := range want {
		if !slices.ContainsFunc(r.warnings, func(got string) bool { return strings.HasPrefix(got, w) }) {
			t.Errorf("no warning %q in %q", w, r.warnings)
		}
	}
}

// follower reads a following logs call in the background.
type follower struct {
	t        *testing.T
	lines    chan string
	warnings chan string
	done     chan error
	cancel   context.CancelFunc
}

func (e *env) follow(req *shoalv1.LogsRequest) *follower {
	e.t.Helper()
	ctx, cancel := context.WithCancel(testCtx(e.t))
	if req.Options == nil {
		req.Options = &shoalv1.LogsOptions{}
	}
	req.Options.Follow = true
	st, err := e.cl.ServiceLogs(ctx, req)
	if err != nil {
		e.t.Fatal(err)
	}
	f := &follower{t: e.t, lines: make(chan string, 100), warnings: make(chan string, 100), done: make(chan error, 1), cancel: cancel}
	go func() {
		for {
			resp, err := st.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				f.done <- err
				return
			}
			for _, w := range resp.GetWarnings() {
				f.warnings <- w
			}
			for _, m := range resp.GetMessages() {
				f.lines <- m.GetTaskId() + ": " + string(m.GetData())
			}
		}
	}()
	e.t.Cleanup(cancel)
	return f
}

const waitLong = 20 * time.Second // a failure bound, never a synchronisation

// expect receives lines until it has seen all of want (in any order
// across tasks; each task's own lines arrive in order by construction).
func (f *follower) expect(want ...string) {
	f.t.Helper()
	var got []string
	for len(got) < len(want) {
		select {
		case l := <-f.lines:
			got = append(got, l)
		case err := <-f.done:
			// Lines are queued before the end is: select may have
			// picked the end with lines still waiting.
			f.done <- err
			select {
			case l := <-f.lines:
				got = append(got, l)
			default:
				f.t.Fatalf("the stream ended (%v) with %q of %q", err, got, want)
			}
		case <-time.After(waitLong):
			f.t.Fatalf("got %q of %q after %s", got, want, waitLong)
		}
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		f.t.Fatalf("got %q, want %q", got, want)
	}
}

func (f *follower) expectWarning(prefix string) {
	f.t.Helper()
	select {
	case w := <-f.warnings:
		if !strings.HasPrefix(w, prefix) {
			f.t.Fatalf("warning %q, want one starting %q", w, prefix)
		}
	case err := <-f.done:
		f.t.Fatalf("the stream ended (%v) before the warning %q", err, prefix)
	case <-time.After(waitLong):
		f.t.Fatalf("no warning %q after %s", prefix, waitLong)
	}
}

func (f *follower) expectEnd() {
	f.t.Helper()
	select {
	case l := <-f.lines:
		f.t.Fatalf("unexpected line %q", l)
	case err := <-f.done:
		if err != nil {
			f.t.Fatalf("the stream ended with %v", err)
		}
	case <-time.After(waitLong):
		f.t.Fatalf("the stream did not end after %s", waitLong)
	}
}

// breakingAgent answers TaskLogs with one line, then fails when told.
type breakingAgent struct {
	shoalv1.UnimplementedAgentAPIServer
	brk chan struct{}
}

func (b *breakingAgent) TaskLogs(req *shoalv1.TaskLogsRequest, st shoalv1.AgentAPI_TaskLogsServer) error {
	if err := st.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	m := &shoalv1.LogMessage{TaskId: req.GetTaskIds()[0], Time: timestamppb.New(t0), Stream: "stdout", Data: []byte("last words")}
	if err := st.Send(&shoalv1.LogsResponse{Messages: []*shoalv1.LogMessage{m}}); err != nil {
		return err
	}
	select {
	case <-b.brk:
		return errdefs.Unavailablef("agent shutting down")
	case <-st.Context().Done():
		return st.Context().Err()
	}
}

func (e *env) startBreakingAgent(nodeID string) (string, chan struct{}) {
	e.t.Helper()
	brk := make(chan struct{})
	g := grpc.NewServer(agentapi.ServerOptions(e.certs(nodeID, trust.RoleWorker), discard())...)
	shoalv1.RegisterAgentAPIServer(g, &breakingAgent{brk: brk})
	ln := listen(e.t)
	go g.Serve(ln)
	e.t.Cleanup(g.Stop)
	return ln.Addr().String(), brk
}

// TestFollow: a down node is named at once; lines arrive from the healthy
// nodes as written; a node whose stream breaks is named and the others go
// on; a task started while following is picked up.
func TestFollow(t *testing.T) {
	e := newEnv(t, 0)
	a1 := e.startAgent("n1")
	brkAddr, brk := e.startBreakingAgent("n2")
	e.addNode("n1", "w1", ready, a1.addr)
	e.addNode("n2", "w2", ready, brkAddr)
	e.addNode("n3", "w3", down, "127.0.0.1:1")
	e.addService("svcweb", "web")
	e.addTask("task1", "svcweb", "web", 1, "n1", running)
	e.addTask("task2", "svcweb", "web", 2, "n2", running)
	e.addTask("task3", "svcweb", "web", 3, "n3", running)
	a1.write("task1", line{0, "a1"})

	f := e.follow(&shoalv1.LogsRequest{Service: "web"})
	f.expectWarning(`node "w3" (n3) is down: logs of 1 task unavailable`)
	f.expect("task1: a1", "task2: last words")
	a1.write("task1", line{time.Second, "a2"})
	f.expect("task1: a2")

	close(brk)
	f.expectWarning(`the log stream from node "w2" (n2) broke (agent shutting down)`)
	a1.write("task1", line{2 * time.Second, "a3"})
	f.expect("task1: a3")

	// A replacement task starts on n1.
	a1.write("task4", line{3 * time.Second, "new"})
	e.addTask("task4", "svcweb", "web", 2, "n1", running)
	f.expect("task4: new")
	// Tasks of other services are not followed.
	e.addService("svcdb", "db")
	a1.write("dbtask", line{4 * time.Second, "not mine"})
	e.addTask("dbtask", "svcdb", "db", 1, "n1", running)
	a1.write("task4", line{5 * time.Second, "still here"})
	f.expect("task4: still here")
}

// TestFollowTasksEnds: following tasks by id ends once their logs are
// removed from the nodes.
func TestFollowTasksEnds(t *testing.T) {
	e, a1, a2 := webEnv(t)
	f := e.follow(&shoalv1.LogsRequest{TaskIds: []string{"task1", "task2"}})
	f.expect("task1: a1", "task1: a2", "task2: b1", "task2: b2")
	for _, a := range []*agent{a1, a2} {
		matches, _ := filepath.Glob(filepath.Join(a.dir, "*.log"))
		for _, m := range matches {
			os.Remove(m)
		}
	}
	f.expectEnd()
}

// TestFollowQuietHeaders: a follow with nothing to show yet still answers
// with headers at once (the CLI bounds its wait for them).
func TestFollowQuietHeaders(t *testing.T) {
	e, _, _ := webEnv(t)
	st, err := e.cl.ServiceLogs(testCtx(t), &shoalv1.LogsRequest{Service: "web",
		Options: &shoalv1.LogsOptions{Follow: true, Tail: proto.Int64(0)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Header(); err != nil {
		t.Fatalf("no headers: %v", err)
	}
}

// TestFollowCallerLeaves: when the caller hangs up, the call ends with
// everything it started (node streams, the service watch).
func TestFollowCallerLeaves(t *testing.T) {
	e, _, _ := webEnv(t)
	f := e.follow(&shoalv1.LogsRequest{Service: "web"})
	f.expect("task1: a1", "task1: a2", "task2: b1", "task2: b2")
	f.cancel()
	select {
	case err := <-e.returned:
		if status.Code(err) != codes.Canceled {
			t.Errorf("the call ended with %v, want CANCELED", err)
		}
	case <-time.After(waitLong):
		t.Fatal("the call still runs after its caller left")
	}
}

// TestAgentRefuses: an agent that refuses the manager (here: a manager
// whose certificate is a worker's) is named with its reason.
func TestAgentRefuses(t *testing.T) {
	e, _, _ := webEnv(t)
	b := New(Config{Store: e.store, Certs: e.certs("m1", trust.RoleWorker), Logger: discard()})
	ln := listen(t)
	g := grpc.NewServer(grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor()))
	shoalv1.RegisterLogsServer(g, b)
	go g.Serve(ln)
	defer g.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	e.cl = shoalv1.NewLogsClient(conn)
	r := e.logs(&shoalv1.LogsRequest{Service: "web"})
	if r.err != nil || len(r.lines) != 0 || len(r.warnings) != 2 {
		t.Fatalf("got %q, %q, %v; want two warnings", r.lines, r.warnings, r.err)
	}
	for _, w := range r.warnings {
		if !strings.Contains(w, "agent API at") || !strings.Contains(w, "role worker may not call /shoal.v1.AgentAPI/TaskLogs") {
			t.Errorf("warning %q does not name the node and the refusal", w)
		}
	}
}

// TestDialFails: a node whose connection cannot even be set up is a
// warning like any other.
func TestDialFails(t *testing.T) {
	e, _, _ := webEnv(t)
	b := New(Config{Store: e.store, Certs: e.certs("m1", trust.RoleManager), Logger: discard()})
	b.dial = func(addr, nodeID string) (*grpc.ClientConn, error) { return nil, errors.New("no sockets left") }
	ln := listen(t)
	g := grpc.NewServer(grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor()))
	shoalv1.RegisterLogsServer(g, b)
	go g.Serve(ln)
	defer g.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	e.cl = shoalv1.NewLogsClient(conn)
	r := e.logs(&shoalv1.LogsRequest{TaskIds: []string{"task1"}})
	want := []string{`node "w1" (n1) cannot be dialled at ` + e.agentAddr("n1") + ` (no sockets left): logs of 1 task unavailable`}
	if r.err != nil || !slices.Equal(r.warnings, want) {
		t.Fatalf("got %q, %v; want %q", r.warnings, r.err, want)
	}
}

// trickyStore lets a test fail or cut the broker's watch.
type trickyStore struct {
	*raftstore.Store
	mu       sync.Mutex // guards the fields below
	watchErr error      // Watch fails with it
	cut      *cutSub    // returned by the next Watch, then cleared
}

func (s *trickyStore) Watch(ctx context.Context, from uint64, kinds ...raftstore.Kind) (raftstore.Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watchErr != nil {
		return nil, s.watchErr
	}
	if c := s.cut; c != nil {
		s.cut = nil
		return c, nil
	}
	return s.Store.Watch(ctx, from, kinds...)
}

// cutSub delivers nothing and ends, when told, with err.
type cutSub struct {
	c   chan *shoalv1.WatchEvent
	err error
}

func (c *cutSub) C() <-chan *shoalv1.WatchEvent { return c.c }
func (c *cutSub) Err() error                    { return c.err }
func (c *cutSub) Close()                        {}

// serveBroker serves a broker over store on loopback and points e.cl at it.
func (e *env) serveBroker(store Store) {
	e.t.Helper()
	b := New(Config{Store: store, Certs: e.certs("m1", trust.RoleManager), Logger: discard()})
	ln := listen(e.t)
	g := grpc.NewServer(grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor()))
	shoalv1.RegisterLogsServer(g, b)
	go g.Serve(ln)
	e.t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	e.cl = shoalv1.NewLogsClient(conn)
}

// TestFollowWatchTrouble: a watch that cannot start is a warning (the
// tasks already there are still followed); a watch that falls behind is
// resumed from a fresh view, and tasks started meanwhile are picked up.
func TestFollowWatchTrouble(t *testing.T) {
	// Only lines written by the test from now on (whenever the agents'
	// readers start).
	newLines := timestamppb.New(t0.Add(30 * time.Second))
	t.Run("watch fails", func(t *testing.T) {
		e, a1, _ := webEnv(t)
		e.serveBroker(&trickyStore{Store: e.store, watchErr: errors.New("store closed")})
		f := e.follow(&shoalv1.LogsRequest{Service: "web", Options: &shoalv1.LogsOptions{Since: newLines}})
		f.expectWarning("tasks started from now on are not followed (watching the store failed: store closed)")
		a1.write("task1", line{time.Minute, "still followed"})
		f.expect("task1: still followed")
	})
	t.Run("watch falls behind", func(t *testing.T) {
		e, a1, _ := webEnv(t)
		cut := &cutSub{c: make(chan *shoalv1.WatchEvent), err: raftstore.ErrSlowConsumer}
		e.serveBroker(&trickyStore{Store: e.store, cut: cut})
		f := e.follow(&shoalv1.LogsRequest{Service: "web", Options: &shoalv1.LogsOptions{Since: newLines}})
		a1.write("task1", line{time.Minute, "ready"})
		f.expect("task1: ready") // the call is under way, on the cut watch
		a1.write("task4", line{time.Minute, "started meanwhile"})
		e.addTask("task4", "svcweb", "web", 4, "n1", running)
		close(cut.c)
		f.expect("task4: started meanwhile")
	})
}

// TestQuietTasks: the agent's "task unknown" warning is dropped for tasks
// whose logs may be gone (finished, or started while following), and kept
// for the others.
func TestQuietTasks(t *testing.T) {
	e, _, _ := webEnv(t)
	b := New(Config{Store: e.store, Certs: e.certs("m1", trust.RoleManager), Logger: discard()})
	node, _ := raftstore.Get[*shoalv1.Node](e.store.View(), "n1")
	ghost := &shoalv1.Task{Meta: &shoalv1.Meta{Id: "ghost"}, ServiceId: "svcweb", NodeId: "n1"}
	for _, c := range []struct {
		quiet map[string]bool
		want  []string
	}{
		{map[string]bool{"ghost": true}, nil},
		{nil, []string{logstream.UnknownTaskWarning("ghost", "n1")}},
	} {
		w := logstream.NewWarnings()
		out := make(chan *shoalv1.LogMessage, 10)
		b.streamNode(testCtx(t), node, []*shoalv1.Task{ghost}, &shoalv1.LogsOptions{}, c.quiet, out, w)
		close(out)
		var got []string
		logstream.SendBatches(testCtx(t), out, w, func(r *shoalv1.LogsResponse) error {
			got = append(got, r.GetWarnings()...)
			return nil
		})
		if !slices.Equal(got, c.want) {
			t.Errorf("quiet %v: warnings %q, want %q", c.quiet, got, c.want)
		}
	}
}

func (e *env) setNodeState(id string, state shoalv1.NodeState) {
	e.t.Helper()
	e.update(func(tx raftstore.WriteTx) error {
		n, ok := raftstore.Get[*shoalv1.Node](tx, id)
		if !ok {
			return fmt.Errorf("node %q missing", id)
		}
		n = proto.Clone(n).(*shoalv1.Node)
		n.Status.State = state
		return tx.Update(n)
	})
}

// TestFollowNodeComesBack: a node that is down when following starts is
// named once, and its tasks' logs are followed as soon as it is back.
func TestFollowNodeComesBack(t *testing.T) {
	e := newEnv(t, 0)
	a1 := e.startAgent("n1")
	a2 := e.startAgent("n2")
	e.addNode("n1", "w1", ready, a1.addr)
	e.addNode("n2", "w2", down, a2.addr)
	e.addService("svcweb", "web")
	e.addTask("task1", "svcweb", "web", 1, "n1", running)
	e.addTask("task2", "svcweb", "web", 2, "n2", running)
	a1.write("task1", line{0, "one"})
	a2.write("task2", line{time.Second, "two"})

	f := e.follow(&shoalv1.LogsRequest{Service: "web"})
	f.expectWarning(`node "w2" (n2) is down: logs of 1 task unavailable; followed again when it is back`)
	f.expect("task1: one")
	e.setNodeState("n2", ready)
	f.expect("task2: two")
	a2.write("task2", line{2 * time.Second, "three"})
	f.expect("task2: three")
}

// resumingAgent breaks its first stream after one line; the second call
// must ask only for what came after that line.
type resumingAgent struct {
	shoalv1.UnimplementedAgentAPIServer
	calls atomic.Int32
	since chan time.Time // the second call's since
}

func (r *resumingAgent) TaskLogs(req *shoalv1.TaskLogsRequest, st shoalv1.AgentAPI_TaskLogsServer) error {
	if err := st.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	id := req.GetTaskIds()[0]
	send := func(at time.Time, text string) error {
		return st.Send(&shoalv1.LogsResponse{Messages: []*shoalv1.LogMessage{{TaskId: id, Time: timestamppb.New(at), Stream: "stdout", Data: []byte(text)}}})
	}
	if r.calls.Add(1) == 1 {
		if err := send(t0, "before"); err != nil {
			return err
		}
		return errdefs.Unavailablef("agent restarting")
	}
	r.since <- req.GetOptions().GetSince().AsTime()
	if err := send(t0.Add(time.Second), "after"); err != nil {
		return err
	}
	<-st.Context().Done()
	return nil
}

// TestFollowResumesBrokenStream: a broken stream is named, then resumed
// after the last line passed on, so no line comes twice.
func TestFollowResumesBrokenStream(t *testing.T) {
	e := newEnv(t, 0)
	ra := &resumingAgent{since: make(chan time.Time, 1)}
	g := grpc.NewServer(agentapi.ServerOptions(e.certs("n1", trust.RoleWorker), discard())...)
	shoalv1.RegisterAgentAPIServer(g, ra)
	ln := listen(t)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	e.addNode("n1", "w1", ready, ln.Addr().String())
	e.addService("svcweb", "web")
	e.addTask("task1", "svcweb", "web", 1, "n1", running)

	f := e.follow(&shoalv1.LogsRequest{Service: "web"})
	f.expect("task1: before")
	f.expectWarning(`the log stream from node "w1" (n1) broke (agent restarting)`)
	f.expect("task1: after")
	select {
	case since := <-ra.since:
		if !since.After(t0) {
			t.Errorf("resumed with since %v, want after the last line (%v)", since, t0)
		}
	case <-time.After(waitLong):
		t.Fatal("the stream was not resumed")
	}
}
