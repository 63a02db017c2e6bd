package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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

func TestAssignmentsAndShutdownReports(t *testing.T) {
	a := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var sent []*shoalv1.AgentMessage
	send := func(m *shoalv1.AgentMessage) error { sent = append(sent, m); return nil }
	mk := func(id string, desired shoalv1.TaskState) *shoalv1.Task {
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, DesiredState: desired, Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED}}
	}
	full := &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Assignments{Assignments: &shoalv1.Assignments{
		Full: true, Upsert: []*shoalv1.Task{mk("a", shoalv1.TaskState_TASK_STATE_RUNNING), mk("b", shoalv1.TaskState_TASK_STATE_RUNNING)}}}}
	if err := a.handle(full, send); err != nil {
		t.Fatal(err)
	}
	if got := len(a.Assignments()); got != 2 || len(sent) != 0 {
		t.Fatalf("after full set: %d tasks, %d messages", got, len(sent))
	}
	diff := &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Assignments{Assignments: &shoalv1.Assignments{
		Upsert: []*shoalv1.Task{mk("b", shoalv1.TaskState_TASK_STATE_SHUTDOWN)}, Removed: []string{"a"}}}}
	if err := a.handle(diff, send); err != nil {
		t.Fatal(err)
	}
	if got := a.Assignments(); len(got) != 1 || got[0].GetMeta().GetId() != "b" {
		t.Fatalf("after diff: %v", got)
	}
	if len(sent) != 1 || len(sent[0].GetStatus().GetUpdates()) != 1 ||
		sent[0].GetStatus().GetUpdates()[0].GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_SHUTDOWN {
		t.Fatalf("want one SHUTDOWN report, got %v", sent)
	}
	// The same diff again is not reported twice.
	if err := a.handle(diff, send); err != nil {
		t.Fatal(err)
	}
	if len(sent) != 1 {
		t.Fatalf("reported twice: %v", sent)
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
		Description: &shoalv1.NodeDescription{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
		Description: &shoalv1.NodeDescription{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
		Description: &shoalv1.NodeDescription{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
