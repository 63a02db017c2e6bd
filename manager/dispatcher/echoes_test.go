package dispatcher

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestEchoDropped: which events a session does not send — a status-only
// change of its own task to a starting state, against the copy its agent
// was sent — and which it sends.
func TestEchoDropped(t *testing.T) {
	spec := &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo"}}
	sent := &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}, NodeId: "n1", ServiceId: "s", Slot: 1, Spec: spec,
		DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING, Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED}}
	withStatus := func(st shoalv1.TaskState, change func(*shoalv1.Task)) *shoalv1.WatchEvent {
		n := proto.Clone(sent).(*shoalv1.Task)
		n.Spec = spec // shared, as the status writer leaves it
		n.Status = &shoalv1.TaskStatus{State: st}
		if change != nil {
			change(n)
		}
		return &shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_UPDATE, Object: raftstore.Wrap(n)}
	}
	tests := []struct {
		name string
		ev   *shoalv1.WatchEvent
		want bool
	}{
		{"accepted", withStatus(shoalv1.TaskState_TASK_STATE_ACCEPTED, nil), true},
		{"running", withStatus(shoalv1.TaskState_TASK_STATE_RUNNING, nil), true},
		{"failed", withStatus(shoalv1.TaskState_TASK_STATE_FAILED, nil), false},
		{"shutdown asked", withStatus(shoalv1.TaskState_TASK_STATE_RUNNING, func(t *shoalv1.Task) {
			t.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN
		}), false},
		{"new spec", withStatus(shoalv1.TaskState_TASK_STATE_RUNNING, func(t *shoalv1.Task) {
			t.Spec = proto.Clone(spec).(*shoalv1.TaskSpec)
		}), false},
		{"on a network", withStatus(shoalv1.TaskState_TASK_STATE_RUNNING, func(t *shoalv1.Task) {
			t.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "net1"}}
		}), false},
		{"other node", withStatus(shoalv1.TaskState_TASK_STATE_RUNNING, func(t *shoalv1.Task) { t.NodeId = "n2" }), false},
		{"not sent", withStatus(shoalv1.TaskState_TASK_STATE_RUNNING, func(t *shoalv1.Task) { t.Meta.Id = "t2" }), false},
		{"deleted", &shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_DELETE, Object: raftstore.Wrap(sent)}, false},
		{"node", &shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_UPDATE, Object: raftstore.Wrap(&shoalv1.Node{Meta: &shoalv1.Meta{Id: "n1"}})}, false},
	}
	for _, tc := range tests {
		e := newEchoes("n1", []*shoalv1.Task{sent})
		if got := len(e.drop([]*shoalv1.WatchEvent{tc.ev})) == 0; got != tc.want {
			t.Errorf("%s: dropped = %v, want %v", tc.name, got, tc.want)
		}
	}
	// In a batch, the echoes go and the rest keeps its order.
	e := newEchoes("n1", []*shoalv1.Task{sent})
	shutdown, node := tests[3].ev, tests[len(tests)-1].ev
	batch := []*shoalv1.WatchEvent{withStatus(shoalv1.TaskState_TASK_STATE_ACCEPTED, nil), shutdown,
		withStatus(shoalv1.TaskState_TASK_STATE_RUNNING, nil), node}
	if got := e.drop(batch); len(got) != 2 || got[0] != shutdown || got[1] != node {
		t.Errorf("drop(echo, shutdown, echo, node) = %v, want shutdown, node", got)
	}
	e.record(nil, []string{"t1"})
	if len(e.drop([]*shoalv1.WatchEvent{withStatus(shoalv1.TaskState_TASK_STATE_RUNNING, nil)})) == 0 {
		t.Error("the echo of a task removed since is dropped")
	}
}

// echoSession opens a dispatcher over a store holding node n1 and task t1
// (ASSIGNED to it) and a real gRPC session as n1, past its full set.
func echoSession(t *testing.T) (*raftstore.Store, shoalv1.Dispatcher_SessionClient, func() shoalv1.Dispatcher_SessionClient) {
	t.Helper()
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	tk := task("t1", "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED)
	tk.DesiredState = shoalv1.TaskState_TASK_STATE_RUNNING
	tk.Spec = &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo"}}
	if _, err := s.Update(ctx, func(tx raftstore.WriteTx) error {
		if err := tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: "n1"}, Spec: &shoalv1.NodeSpec{}}); err != nil {
			return err
		}
		return tx.Create(tk)
	}); err != nil {
		t.Fatal(err)
	}
	d := New(Config{Store: s, Logger: slog.New(slog.DiscardHandler), Managers: func() []string { return []string{"solo:4242"} }})
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(runCtx) }()
	// Cleanups run last-added first: the connection, the server, then Run.
	t.Cleanup(func() { stopRun(); <-runDone })
	conn := serveDispatcher(t, d, asNode1)
	open := func() shoalv1.Dispatcher_SessionClient {
		return openSession(t, ctx, conn)
	}
	stream := open()
	if a := nextAssignments(t, stream); !a.GetFull() || len(a.GetUpsert()) != 1 {
		t.Fatalf("first assignments %v, want the full set of t1", a)
	}
	return s, stream, open
}

// openSession opens a session as n1 on conn, up to its welcome.
func openSession(t *testing.T, ctx context.Context, conn *grpc.ClientConn) shoalv1.Dispatcher_SessionClient {
	t.Helper()
	for {
		stream, err := shoalv1.NewDispatcherClient(conn).Session(ctx)
		if err == nil {
			err = stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Hello{Hello: &shoalv1.AgentHello{Addr: "n1"}}})
		}
		var first *shoalv1.SessionMessage
		if err == nil {
			first, err = stream.Recv()
		}
		if err == nil && first.GetWelcome() != nil {
			return stream
		}
		if ctx.Err() != nil {
			t.Fatalf("no session: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval while Run starts
	}
}

// nextAssignments is the next assignments message of the session.
func nextAssignments(t *testing.T, stream shoalv1.Dispatcher_SessionClient) *shoalv1.Assignments {
	t.Helper()
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("session: %v", err)
		}
		if a := m.GetAssignments(); a != nil {
			return a
		}
	}
}

// report sends a status of t1 as the agent would and waits for it to be
// committed.
func report(t *testing.T, s *raftstore.Store, stream shoalv1.Dispatcher_SessionClient, st shoalv1.TaskState) {
	t.Helper()
	if err := stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Status{Status: &shoalv1.TaskStatusBatch{Updates: []*shoalv1.TaskStatusUpdate{
		{TaskId: "t1", Status: &shoalv1.TaskStatus{State: st}}}}}}); err != nil {
		t.Fatal(err)
	}
	poll(t, "status "+st.String()+" committed", func() bool { return taskState(s, "t1") == st })
}

// TestSessionSendsNoEchoes: the statuses an agent reported do not come
// back to it. After ACCEPTED and RUNNING of t1 are committed, the next
// message is the next assignment (t2) alone: before, it carried t1's
// echo as well (held, then sent with it), or the echoes came on their
// own. A new session's full set still carries t1 with its stored status
// (a reconnecting agent gets the full set).
func TestSessionSendsNoEchoes(t *testing.T) {
	s, stream, open := echoSession(t)
	report(t, s, stream, shoalv1.TaskState_TASK_STATE_ACCEPTED)
	report(t, s, stream, shoalv1.TaskState_TASK_STATE_RUNNING)
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		t2 := task("t2", "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED)
		t2.DesiredState = shoalv1.TaskState_TASK_STATE_RUNNING
		return tx.Create(t2)
	}); err != nil {
		t.Fatal(err)
	}
	a := nextAssignments(t, stream)
	if len(a.GetUpsert()) != 1 || a.GetUpsert()[0].GetMeta().GetId() != "t2" || len(a.GetRemoved()) != 0 {
		t.Fatalf("next assignments %v, want t2 alone (no echo of t1)", a)
	}
	full := nextAssignments(t, open())
	states := map[string]shoalv1.TaskState{}
	for _, tk := range full.GetUpsert() {
		states[tk.GetMeta().GetId()] = tk.GetStatus().GetState()
	}
	if !full.GetFull() || len(states) != 2 || states["t1"] != shoalv1.TaskState_TASK_STATE_RUNNING {
		t.Fatalf("a new session's full set %v, want t1 RUNNING and t2", full)
	}
}
