package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

func TestLeaderHint(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{errdefs.ToGRPC(errdefs.NotLeader("127.0.0.22:4242")), "127.0.0.22:4242"},
		{errdefs.ToGRPC(errdefs.NotLeader("")), ""},
		{errdefs.ToGRPC(errdefs.PermissionDeniedf("leader=127.0.0.22:4242")), ""},
		// The address is a detail: text alone is not parsed.
		{errdefs.ToGRPC(errdefs.Unavailablef("this manager is not the leader; leader=127.0.0.22:4242")), ""},
		{errors.New("leader=x"), ""},
	}
	for _, tt := range tests {
		if got := leaderHint(tt.err); got != tt.want {
			t.Errorf("leaderHint(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// removedDispatcher refuses every session the way the authorizer refuses
// a removed node.
type removedDispatcher struct {
	shoalv1.UnimplementedDispatcherServer
}

func (removedDispatcher) Session(shoalv1.Dispatcher_SessionServer) error {
	return errdefs.NodeRemovedf("node %q %s; its certificate is no longer accepted", "n1", trust.RemovedReason)
}

// TestRunStopsWhenRemoved: a removed node's agent stops with ErrRemoved
// instead of reconnecting for ever.
func TestRunStopsWhenRemoved(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor()))
	shoalv1.RegisterDispatcherServer(srv, removedDispatcher{})
	go srv.Serve(ln)
	defer srv.Stop()

	a := New(Config{NodeID: "n1", Managers: []string{ln.Addr().String()}, Creds: insecure.NewCredentials(),
		Description: &shoalv1.NodeDescription{}, Executor: newFakeExecutor(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = a.Run(ctx)
	if !errors.Is(err, ErrRemoved) {
		t.Fatalf("Run = %v, want ErrRemoved", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Run only ended at the deadline")
	}
}

// goodbyeDispatcher welcomes a session, then records the messages it gets
// until the agent closes its side; it answers a goodbye by ending the
// stream once it has "recorded" it (released by the test).
type goodbyeDispatcher struct {
	shoalv1.UnimplementedDispatcherServer
	opened  chan struct{}
	got     chan *shoalv1.AgentMessage
	release chan struct{}
}

func (d *goodbyeDispatcher) Session(s shoalv1.Dispatcher_SessionServer) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	if err := s.Send(&shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Welcome{Welcome: &shoalv1.SessionWelcome{HeartbeatPeriodMs: 50}}}); err != nil {
		return err
	}
	close(d.opened)
	for {
		m, err := s.Recv()
		if err != nil {
			return err
		}
		if m.GetHeartbeat() != nil {
			if err := s.Send(&shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_HeartbeatAck{HeartbeatAck: &shoalv1.Heartbeat{}}}); err != nil {
				return err
			}
			continue
		}
		d.got <- m
		if m.GetGoodbye() != nil {
			<-d.release
			return nil
		}
	}
}

// TestGoodbyeOnStop: when its context ends with a session open, the agent
// sends Goodbye{restarting} as its last message and Run returns only once
// the dispatcher has ended the stream (it has recorded the restart).
func TestGoodbyeOnStop(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &goodbyeDispatcher{opened: make(chan struct{}), got: make(chan *shoalv1.AgentMessage, 16), release: make(chan struct{})}
	srv := grpc.NewServer()
	shoalv1.RegisterDispatcherServer(srv, d)
	go srv.Serve(ln)
	defer srv.Stop()

	a := New(Config{NodeID: "n1", Managers: []string{ln.Addr().String()}, Creds: insecure.NewCredentials(),
		Description: &shoalv1.NodeDescription{}, Executor: newFakeExecutor(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-d.opened:
	case <-time.After(10 * time.Second):
		t.Fatal("no session opened")
	}
	for deadline := time.Now().Add(10 * time.Second); !a.Connected(); {
		if time.Now().After(deadline) {
			t.Fatal("the agent does not see its session open")
		}
		time.Sleep(5 * time.Millisecond) // poll interval, not synchronisation
	}
	cancel()
	select {
	case m := <-d.got:
		if !m.GetGoodbye().GetRestarting() {
			t.Fatalf("first message after the stop: %v, want Goodbye{restarting: true}", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no goodbye")
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) before the dispatcher ended the stream", err)
	default:
	}
	close(d.release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the goodbye was acknowledged")
	}
}

func TestNextBackoff(t *testing.T) {
	b := firstBackoff
	for range 10 {
		b = nextBackoff(b, true)
	}
	if b != youngBackoff {
		t.Errorf("young agent's pause grows to %v, want capped at %v", b, youngBackoff)
	}
	for range 10 {
		b = nextBackoff(b, false)
	}
	if b != maxBackoff {
		t.Errorf("older agent's pause grows to %v, want capped at %v", b, maxBackoff)
	}
}

// TestSilentManagerSkipped: a manager that accepts the connection but
// never answers (a powered-off host looks like this, or worse) does not
// hold the agent for gRPC's 20 s connect timeout: the attempt is given up
// after openTimeout and the next manager is tried.
func TestSilentManagerSkipped(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &goodbyeDispatcher{opened: make(chan struct{}), got: make(chan *shoalv1.AgentMessage, 16), release: make(chan struct{})}
	close(d.release)
	srv := grpc.NewServer()
	shoalv1.RegisterDispatcherServer(srv, d)
	go srv.Serve(ln)
	defer srv.Stop()

	a := New(Config{NodeID: "n1", Managers: []string{silent.Addr().String(), ln.Addr().String()}, Creds: insecure.NewCredentials(),
		Description: &shoalv1.NodeDescription{}, Executor: newFakeExecutor(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-d.opened:
	case <-time.After(10 * time.Second): // half gRPC's connect timeout
		t.Fatal("the agent is still held by the silent manager")
	}
}

// overlapDispatcher's first session sends a node update (which the test
// holds in the agent's OnNode) and ends; it records whether a later
// session opened while that update was still being handled.
type overlapDispatcher struct {
	shoalv1.UnimplementedDispatcherServer
	sessions atomic.Int32
	handling *atomic.Bool // the agent is inside OnNode
	overlap  atomic.Bool  // a session opened meanwhile
	second   chan struct{}
}

func (d *overlapDispatcher) Session(s shoalv1.Dispatcher_SessionServer) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	n := d.sessions.Add(1)
	if n > 1 && d.handling.Load() {
		d.overlap.Store(true)
	}
	if err := s.Send(&shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Welcome{Welcome: &shoalv1.SessionWelcome{HeartbeatPeriodMs: 20}}}); err != nil {
		return err
	}
	if n > 1 {
		if n == 2 {
			close(d.second)
		}
		<-s.Context().Done()
		return nil
	}
	if err := s.Send(&shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Node{Node: &shoalv1.Node{Meta: &shoalv1.Meta{Id: "n1"}}}}); err != nil {
		return err
	}
	return errdefs.Unavailablef("leadership lost")
}

// TestSessionEndsAfterItsReceiver: a session that ends while one of its
// messages is still being handled waits for that before the next session
// opens, so nothing of an old session is applied after the next one's
// full set.
func TestSessionEndsAfterItsReceiver(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var handling atomic.Bool
	d := &overlapDispatcher{handling: &handling, second: make(chan struct{})}
	srv := grpc.NewServer(grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor()))
	shoalv1.RegisterDispatcherServer(srv, d)
	go srv.Serve(ln)
	defer srv.Stop()

	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	a := New(Config{NodeID: "n1", Managers: []string{ln.Addr().String()}, Creds: insecure.NewCredentials(),
		Description: &shoalv1.NodeDescription{}, Executor: newFakeExecutor(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnNode: func(*shoalv1.Node) {
			first := false
			once.Do(func() { first = true })
			if !first {
				return
			}
			handling.Store(true)
			close(entered)
			<-release
			handling.Store(false)
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-entered:
	case <-time.After(15 * time.Second):
		t.Fatal("the node update was not handled")
	}
	// The first session is over on the manager's side and its heartbeats
	// fail; give a reconnect (50 ms away) ample time to happen before the
	// update is let through. Only a defect makes it happen.
	select {
	case <-d.second:
	case <-time.After(3 * time.Second):
	}
	close(release)
	select {
	case <-d.second:
	case <-time.After(15 * time.Second):
		t.Fatal("no second session after the update was handled")
	}
	if d.overlap.Load() {
		t.Fatal("a new session opened while the previous one's message was still being handled")
	}
}

// slowWelcomeDispatcher answers at once (response headers) but welcomes
// only after more than openTimeout, as a leader does whose raft write of
// the registration is slow to commit.
type slowWelcomeDispatcher struct {
	shoalv1.UnimplementedDispatcherServer
	opened chan struct{}
	once   sync.Once
}

func (d *slowWelcomeDispatcher) Session(s shoalv1.Dispatcher_SessionServer) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	if err := s.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	select {
	case <-time.After(openTimeout * 3 / 2): // the slow registration
	case <-s.Context().Done():
		return nil
	}
	if err := s.Send(&shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Welcome{Welcome: &shoalv1.SessionWelcome{HeartbeatPeriodMs: 50}}}); err != nil {
		return err
	}
	d.once.Do(func() { close(d.opened) })
	for {
		m, err := s.Recv()
		if err != nil {
			return nil
		}
		if m.GetHeartbeat() != nil {
			if err := s.Send(&shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_HeartbeatAck{HeartbeatAck: &shoalv1.Heartbeat{}}}); err != nil {
				return err
			}
		}
	}
}

// TestSlowWelcomeWaited: a manager that has answered but registers the
// session slowly (longer than openTimeout) still gets the session; only
// a manager that does not answer at all is given up on after openTimeout.
func TestSlowWelcomeWaited(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &slowWelcomeDispatcher{opened: make(chan struct{})}
	srv := grpc.NewServer()
	shoalv1.RegisterDispatcherServer(srv, d)
	go srv.Serve(ln)
	defer srv.Stop()

	a := New(Config{NodeID: "n1", Managers: []string{ln.Addr().String()}, Creds: insecure.NewCredentials(),
		Description: &shoalv1.NodeDescription{}, Executor: newFakeExecutor(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-d.opened:
	case <-time.After(15 * time.Second):
		t.Fatal("no session with a manager that answers but welcomes after more than openTimeout")
	}
	for deadline := time.Now().Add(15 * time.Second); !a.Connected(); {
		if time.Now().After(deadline) {
			t.Fatal("the agent does not see its session open")
		}
		time.Sleep(5 * time.Millisecond) // poll interval, not synchronisation
	}
}

// TestSessionSendsExecutorStatuses: a new session sends everything the
// executor owes it (TakeUpdates(all)), then each change it signals.
func TestSessionSendsExecutorStatuses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &goodbyeDispatcher{opened: make(chan struct{}), got: make(chan *shoalv1.AgentMessage, 16), release: make(chan struct{})}
	close(d.release)
	srv := grpc.NewServer()
	shoalv1.RegisterDispatcherServer(srv, d)
	go srv.Serve(ln)
	defer srv.Stop()

	ex := newFakeExecutor()
	ex.report("t1", shoalv1.TaskState_TASK_STATE_RUNNING) // before the session: owed to it
	a := New(Config{NodeID: "n1", Managers: []string{ln.Addr().String()}, Creds: insecure.NewCredentials(),
		Description: &shoalv1.NodeDescription{}, Executor: ex, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	next := func() *shoalv1.TaskStatusUpdate {
		t.Helper()
		select {
		case m := <-d.got:
			ups := m.GetStatus().GetUpdates()
			if len(ups) != 1 {
				t.Fatalf("got %v, want one status update", m)
			}
			return ups[0]
		case <-time.After(10 * time.Second):
			t.Fatal("no status sent")
			return nil
		}
	}
	if u := next(); u.GetTaskId() != "t1" || u.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
		t.Fatalf("first report %v", u)
	}
	ex.report("t2", shoalv1.TaskState_TASK_STATE_COMPLETE)
	if u := next(); u.GetTaskId() != "t2" {
		t.Fatalf("second report %v", u)
	}
}
