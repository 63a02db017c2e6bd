package dispatcher

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestSessionOverflowResyncs: an agent that stops reading while its node
// gets more events than a session may queue (a ring's worth, 16,384) is
// not left with a silent gap: once it reads again its session ends with
// Unavailable (resync needed), and the next session's full set holds every
// task. The tasks are fat enough that the session's sends block on flow
// control long before the burst ends, so its queue does fill.
func TestSessionOverflowResyncs(t *testing.T) {
	const tasks, perTx = 20000, 1000
	s, open := overflowSession(t)
	stream := open()
	createFatTasks(t, s, "f", tasks, perTx)
	seen := map[string]bool{}
	var err error
	for {
		var m *shoalv1.SessionMessage
		if m, err = stream.Recv(); err != nil {
			break
		}
		for _, tk := range m.GetAssignments().GetUpsert() {
			seen[tk.GetMeta().GetId()] = true
		}
	}
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "resync needed") {
		t.Fatalf("session with %d of %d tasks delivered ended with %v, want a resync", len(seen), tasks+1, err)
	}
	// A new session (as the agent's reconnect) gets them all.
	st2 := open()
	// The full set: its first chunk says full, every chunk but the last
	// says more.
	full := map[string]bool{}
	for first := true; ; {
		m, err := st2.Recv()
		if err != nil {
			t.Fatalf("new session after %d of %d tasks: %v", len(full), tasks+1, err)
		}
		a := m.GetAssignments()
		if a == nil {
			continue
		}
		if first && !a.GetFull() {
			t.Fatal("new session's first assignments are not a full set")
		}
		first = false
		for _, tk := range a.GetUpsert() {
			full[tk.GetMeta().GetId()] = true
		}
		if !a.GetMore() {
			break
		}
	}
	if len(full) != tasks+1 {
		t.Fatalf("new session's full set holds %d tasks, want %d", len(full), tasks+1)
	}
}

// overflowSession serves node n1's sessions (with task t1) from a
// dispatcher on a store of its own; open opens one and reads its welcome,
// leaving the full set unread.
func overflowSession(t *testing.T) (*raftstore.Store, func() shoalv1.Dispatcher_SessionClient) {
	t.Helper()
	s, open, _ := sessionServer(t)
	return s, open
}

// sessionServer is overflowSession that also returns what ends the
// dispatcher's Run (as a lost leadership does), and whose server maps
// errors to gRPC statuses as the manager's does.
func sessionServer(t *testing.T) (*raftstore.Store, func() shoalv1.Dispatcher_SessionClient, func()) {
	t.Helper()
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	tk := task("t1", "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED)
	tk.DesiredState = shoalv1.TaskState_TASK_STATE_RUNNING
	if _, err := s.Update(ctx, func(tx raftstore.WriteTx) error {
		if err := tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: "n1"}, Spec: &shoalv1.NodeSpec{}}); err != nil {
			return err
		}
		// The test agent does not heartbeat: a period longer than the
		// test keeps the node from being judged down meanwhile.
		if err := tx.Create(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c"},
			Settings: &shoalv1.ClusterSettings{HeartbeatPeriodMs: 60000}}); err != nil {
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
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(func() { stopRun(); <-runDone }) }
	t.Cleanup(stop)
	conn := serveDispatcher(t, d, asNode1)
	return s, func() shoalv1.Dispatcher_SessionClient { return openSession(t, ctx, conn) }, stop
}

// TestGoodbyeNotStarvedByBurst: an agent's goodbye is acted on between
// the batches of a burst, not after the session has sent everything
// queued for its node. The session loop took batch after batch while any
// was queued and looked at its receiver only once the queue was empty:
// under a steady stream of events (an overlay network's tasks reach every
// session) a restarting agent's goodbye waited until it gave up, and the
// node, not marked as restarting, was then judged down and its tasks
// replaced. Here the agent stops reading while ~16,000 fat tasks are
// queued for it (the session blocks on flow control), says goodbye, then
// reads: the session must end before sending the whole queue.
func TestGoodbyeNotStarvedByBurst(t *testing.T) {
	const tasks, perTx = 16000, 1000
	s, open := overflowSession(t)
	stream := open()
	createFatTasks(t, s, "g", tasks, perTx)
	if err := stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Goodbye{Goodbye: &shoalv1.Goodbye{}}}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var err error
	for {
		var m *shoalv1.SessionMessage
		if m, err = stream.Recv(); err != nil {
			break
		}
		for _, tk := range m.GetAssignments().GetUpsert() {
			seen[tk.GetMeta().GetId()] = true
		}
	}
	if err != io.EOF {
		t.Fatalf("session ended with %v after %d tasks, want the goodbye's clean end", err, len(seen))
	}
	if len(seen) >= tasks {
		t.Fatalf("the session sent all %d queued tasks before acting on the goodbye", len(seen))
	}
}

// TestSessionTellsLeaderWhenLeadershipEnds: a session busy with a burst
// when its dispatcher stops (leadership lost) ends with NotLeader and the
// leader's address, as an idle one does, not with "resync needed: context
// canceled": the subscription ends with the session's context, and the
// loop took that end for a resync, so the agent lost the hint that sends
// it straight to the leader and backed off instead. The agent here stops
// reading while a burst is queued (the session blocks on flow control),
// the dispatcher stops, then the agent reads.
func TestSessionTellsLeaderWhenLeadershipEnds(t *testing.T) {
	const tasks, perTx = 8000, 1000
	s, open, stop := sessionServer(t)
	stream := open()
	fat := strings.Repeat("x", 4096)
	for b := range tasks / perTx {
		if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
			for i := range perTx {
				tk := task(fmt.Sprintf("l%05d", b*perTx+i), "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED)
				tk.DesiredState = shoalv1.TaskState_TASK_STATE_RUNNING
				tk.Spec = &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo", Env: []string{"PAD=" + fat}}}
				if err := tx.Create(tk); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	var err error
	for err == nil {
		_, err = stream.Recv()
	}
	if addr, ok := errdefs.LeaderAddr(err); !ok || addr == "" {
		t.Fatalf("session ended with %v, want NotLeader with the leader's address", err)
	}
}

// createFatTasks creates n running tasks of node n1 named prefix%05d, perTx
// a transaction, each with a 4 KiB environment so that a session's sends
// block on flow control long before they are all sent.
func createFatTasks(t *testing.T, s *raftstore.Store, prefix string, n, perTx int) {
	t.Helper()
	fat := strings.Repeat("x", 4096)
	for b := range n / perTx {
		if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
			for i := range perTx {
				tk := task(fmt.Sprintf("%s%05d", prefix, b*perTx+i), "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED)
				tk.DesiredState = shoalv1.TaskState_TASK_STATE_RUNNING
				tk.Spec = &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo", Env: []string{"PAD=" + fat}}}
				if err := tx.Create(tk); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}
