package dispatcher

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// taskWrite stores fn applied to a clone of task id (a whole update).
func taskWrite(t testing.TB, s *raftstore.Store, id string, fn func(*shoalv1.Task)) {
	t.Helper()
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		cur, _ := raftstore.Get[*shoalv1.Task](tx, id)
		c := proto.Clone(cur).(*shoalv1.Task)
		fn(c)
		return tx.Update(c)
	}); err != nil {
		t.Fatal(err)
	}
}

// taskStatus stores status as task id's (the compact op an agent's
// report becomes).
func taskStatus(t testing.TB, s *raftstore.Store, id string, status *shoalv1.TaskStatus) {
	t.Helper()
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		cur, _ := raftstore.Get[*shoalv1.Task](tx, id)
		return tx.UpdateTaskStatus(id, cur.GetMeta().GetVersion(), status)
	}); err != nil {
		t.Fatal(err)
	}
}

// nodeWrite stores fn applied to a clone of node id.
func nodeWrite(t testing.TB, s *raftstore.Store, id string, fn func(*shoalv1.Node)) {
	t.Helper()
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		cur, _ := raftstore.Get[*shoalv1.Node](tx, id)
		c := proto.Clone(cur).(*shoalv1.Node)
		fn(c)
		return tx.Update(c)
	}); err != nil {
		t.Fatal(err)
	}
}

// newWebRig is newStateRig with overlay network a, service web on it
// (VIP 10.1.0.2) and tasks.
func newWebRig(t *testing.T, nodes []string, tasks ...raftstore.Object) *stateRig {
	t.Helper()
	return newStateRig(t, nodes, func(tx raftstore.WriteTx) error {
		for _, o := range append([]raftstore.Object{mkNet("a"), mkSvc("web", "", map[string]string{"a": "10.1.0.2/24"}, "a")}, tasks...) {
			if err := tx.Create(o); err != nil {
				return err
			}
		}
		return nil
	})
}

// TestTaskLifecycleReachesEveryAgent: a task's whole life on an overlay
// network, and its node's changes, over real sessions — created, given
// its addresses, assigned, through every state to RUNNING, its health,
// a status message and a failing streak, stopped, updated once ended,
// deleted; its node labelled, given another underlay address, DOWN and
// back — after each write every agent holds exactly the states computed
// afresh (the writes that change none are skipped by every other
// session: TestTaskWritesThatChangeNoStateWakeNoSession).
func TestTaskLifecycleReachesEveryAgent(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	r := newWebRig(t, nodes, mkNetTask("w1", "web", "n1", stRunning, "a=10.1.0.3/24"))
	s := r.s
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Task{Meta: &shoalv1.Meta{Id: "w2"}, ServiceId: "web", ServiceName: "svc-web", Slot: 2,
			DesiredState: stRunning, Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_NEW}})
	}); err != nil {
		t.Fatal(err)
	}
	r.converge(t, "created")
	taskWrite(t, s, "w2", func(x *shoalv1.Task) {
		x.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "a", Address: "10.1.0.4/24", Mac: "m-w2", Aliases: []string{"two"}}}
		x.Status = &shoalv1.TaskStatus{State: stPending}
	})
	r.converge(t, "addresses")
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		cur, _ := raftstore.Get[*shoalv1.Task](tx, "w2")
		return tx.AssignTask("w2", cur.GetMeta().GetVersion(), "n2", &shoalv1.TaskStatus{State: stAssigned})
	}); err != nil {
		t.Fatal(err)
	}
	r.converge(t, "assigned")
	if got := len(AllNodeNetworks(s.View())["n2"]); got != 1 {
		t.Fatalf("n2 takes part in %d networks once assigned, want 1 (the test's premise)", got)
	}
	for _, st := range []shoalv1.TaskState{shoalv1.TaskState_TASK_STATE_ACCEPTED, shoalv1.TaskState_TASK_STATE_PREPARING, shoalv1.TaskState_TASK_STATE_STARTING, stRunning} {
		taskStatus(t, s, "w2", &shoalv1.TaskStatus{State: st})
		r.converge(t, st.String())
	}
	taskStatus(t, s, "w2", &shoalv1.TaskStatus{State: stRunning, Health: shoalv1.TaskHealth_TASK_HEALTH_STARTING})
	r.converge(t, "health starting")
	taskStatus(t, s, "w2", &shoalv1.TaskStatus{State: stRunning, Health: shoalv1.TaskHealth_TASK_HEALTH_STARTING, Message: "probing", HealthFailingStreak: 1})
	r.converge(t, "a failing streak")
	taskStatus(t, s, "w2", &shoalv1.TaskStatus{State: stRunning, Health: shoalv1.TaskHealth_TASK_HEALTH_HEALTHY})
	r.converge(t, "healthy")

	nodeWrite(t, s, "n2", func(n *shoalv1.Node) { n.Spec.Labels = map[string]string{"zone": "b"} })
	r.converge(t, "node labelled")
	nodeWrite(t, s, "n2", func(n *shoalv1.Node) { n.Status.Addr = "192.168.250.22:4243" })
	r.converge(t, "node's underlay address")
	nodeWrite(t, s, "n2", func(n *shoalv1.Node) { n.Status.State = shoalv1.NodeState_NODE_STATE_DOWN })
	r.converge(t, "node down")
	nodeWrite(t, s, "n2", func(n *shoalv1.Node) { n.Status.State = ready })
	r.converge(t, "node back")

	taskWrite(t, s, "w2", func(x *shoalv1.Task) { x.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN })
	r.converge(t, "stopping")
	taskStatus(t, s, "w2", &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_SHUTDOWN})
	r.converge(t, "stopped")
	taskWrite(t, s, "w2", func(x *shoalv1.Task) { x.DesiredState = shoalv1.TaskState_TASK_STATE_REMOVE })
	r.converge(t, "updated once ended")
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error { return tx.Delete(raftstore.KindTask, "w2", 0) }); err != nil {
		t.Fatal(err)
	}
	r.converge(t, "deleted")
	// w1 deleted while RUNNING (no stop first): its endpoint goes.
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error { return tx.Delete(raftstore.KindTask, "w1", 0) }); err != nil {
		t.Fatal(err)
	}
	r.converge(t, "a running task deleted")
}

// TestTaskWritesThatChangeNoStateWakeNoSession: on a cluster with an
// overlay network, a task's status message and failing streak, a task
// created before its addresses, updated and deleted once ended, and a
// node's label reach only their own node's session (a task not yet on a
// node, none); a write that changes a state (the alias marker) reaches
// every session once.
func TestTaskWritesThatChangeNoStateWakeNoSession(t *testing.T) {
	const nodes = 5
	r := newSessionRig(t, nodes, true)
	r.setAlias(t, "m0")
	taken := r.d.sessionEventsTaken.Load()
	running := &shoalv1.TaskStatus{State: stRunning}
	taskStatus(t, r.s, "t001", &shoalv1.TaskStatus{State: stRunning, Message: "still running"})      // n001's: 1
	taskStatus(t, r.s, "t002", &shoalv1.TaskStatus{State: stRunning, HealthFailingStreak: 2})        // n002's: 1
	taskStatus(t, r.s, "t002", running)                                                              // n002's: 1
	nodeWrite(t, r.s, "n003", func(n *shoalv1.Node) { n.Spec.Labels = map[string]string{"k": "v"} }) // n003's: 1
	ended := mkNetTask("x1", "web", "n004", stFailed, "a=10.1.0.99/24")
	if _, err := r.s.Update(context.Background(), func(tx raftstore.WriteTx) error { return tx.Create(ended) }); err != nil { // n004's: 1
		t.Fatal(err)
	}
	taskWrite(t, r.s, "x1", func(x *shoalv1.Task) { x.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN })                                       // n004's: 1
	if _, err := r.s.Update(context.Background(), func(tx raftstore.WriteTx) error { return tx.Delete(raftstore.KindTask, "x1", 0) }); err != nil { // n004's: 1
		t.Fatal(err)
	}
	fresh := mkNetTask("x2", "web", "", stPending, "a=10.1.0.98/24") // on no node: 0
	if _, err := r.s.Update(context.Background(), func(tx raftstore.WriteTx) error { return tx.Create(fresh) }); err != nil {
		t.Fatal(err)
	}
	r.setAlias(t, "m1") // every session: 5
	if n, want := r.d.sessionEventsTaken.Load()-taken, int64(7+nodes); n != want {
		t.Errorf("the sessions took %d events, want %d (each write by its own node's session alone, the alias by every session)", n, want)
	}
}

// TestOwnTaskStatusComputesNoState: a session takes every event of its own
// node's tasks, but one that changes no network state (a status message,
// a failing streak) makes it compute no network states; the alias marker
// after them is computed once for every session.
func TestOwnTaskStatusComputesNoState(t *testing.T) {
	const nodes = 5
	r := newSessionRig(t, nodes, true)
	r.setAlias(t, "m0")
	computed := func() int {
		r.d.nets.mu.Lock()
		defer r.d.nets.mu.Unlock()
		return r.d.nets.computed
	}
	before := computed()
	taskStatus(t, r.s, "t001", &shoalv1.TaskStatus{State: stRunning, Message: "still running"})
	taskStatus(t, r.s, "t001", &shoalv1.TaskStatus{State: stRunning, HealthFailingStreak: 1})
	r.setAlias(t, "m1")
	if n := computed() - before; n != 1 {
		t.Errorf("%d computations of the network states for two status messages of n001's task and an alias, want 1 (the alias)", n)
	}
	// A status that does change the state is computed and reaches n001's
	// agent, and every other.
	got := r.networks[1].Load()
	got0 := r.networks[0].Load()
	taskStatus(t, r.s, "t001", &shoalv1.TaskStatus{State: stRunning, Health: shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY})
	poll(t, "n001's and n000's agents get the task's health", func() bool { return r.networks[1].Load() > got && r.networks[0].Load() > got0 })
}
