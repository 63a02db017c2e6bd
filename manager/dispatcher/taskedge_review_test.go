package dispatcher

import (
	"context"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestTaskAndNodeEdgesReachEveryAgentReview: writes the session filter
// and the own-task comparison could misjudge, over real sessions, with a
// service publishing an ingress port (every node not DOWN takes part):
// two status ops on one task in one entry (the filter given the entry's
// own intermediate version as prev), a round trip in one entry (STARTING
// and back to RUNNING: nothing changes), a running task's attachment
// readdressed, a STARTING task told to stop, a node DOWN and back, a node
// whose address moves while DOWN, a node deleted under its running task.
func TestTaskAndNodeEdgesReachEveryAgentReview(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4"}
	r := newStateRig(t, nodes, func(tx raftstore.WriteTx) error {
		ingress := mkSvc("web", "", map[string]string{"a": "10.1.0.2/24"}, "a")
		ingress.Spec.Endpoint.Ports = []*shoalv1.PortConfig{{Protocol: "tcp", TargetPort: 80, PublishedPort: 8080}}
		for _, o := range []raftstore.Object{
			mkNet("a"), ingress,
			mkNetTask("w1", "web", "n1", stRunning, "a=10.1.0.3/24"),
			mkNetTask("w2", "web", "n2", stAssigned, "a=10.1.0.4/24"),
			mkNetTask("w3", "web", "n3", stRunning, "a=10.1.0.5/24"),
		} {
			if err := tx.Create(o); err != nil {
				return err
			}
		}
		return nil
	})
	s := r.s
	update := func(what string, fn func(tx raftstore.WriteTx) error) {
		t.Helper()
		if _, err := s.Update(context.Background(), fn); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		r.converge(t, what)
	}
	status := func(tx raftstore.WriteTx, id string, st shoalv1.TaskState) error {
		cur, _ := raftstore.Get[*shoalv1.Task](tx, id)
		return tx.UpdateTaskStatus(id, cur.GetMeta().GetVersion(), &shoalv1.TaskStatus{State: st})
	}
	update("w2 STARTING then RUNNING in one entry", func(tx raftstore.WriteTx) error {
		if err := status(tx, "w2", shoalv1.TaskState_TASK_STATE_STARTING); err != nil {
			return err
		}
		return status(tx, "w2", stRunning)
	})
	update("w2 STARTING and back in one entry", func(tx raftstore.WriteTx) error {
		if err := status(tx, "w2", shoalv1.TaskState_TASK_STATE_STARTING); err != nil {
			return err
		}
		return status(tx, "w2", stRunning)
	})
	taskWrite(t, s, "w1", func(x *shoalv1.Task) { x.Networks[0].Address = "10.1.0.33/24" })
	r.converge(t, "w1 readdressed")
	update("w2 STARTING", func(tx raftstore.WriteTx) error { return status(tx, "w2", shoalv1.TaskState_TASK_STATE_STARTING) })
	taskWrite(t, s, "w2", func(x *shoalv1.Task) { x.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN })
	r.converge(t, "w2 told to stop while STARTING")
	update("w2 RUNNING while told to stop", func(tx raftstore.WriteTx) error { return status(tx, "w2", stRunning) })

	nodeWrite(t, s, "n4", func(n *shoalv1.Node) { n.Status.State = shoalv1.NodeState_NODE_STATE_DOWN })
	r.converge(t, "n4 (no task) DOWN: out of the ingress network")
	nodeWrite(t, s, "n3", func(n *shoalv1.Node) { n.Status.State = shoalv1.NodeState_NODE_STATE_DOWN })
	r.converge(t, "n3 DOWN")
	nodeWrite(t, s, "n3", func(n *shoalv1.Node) { n.Status.Addr = "192.168.250.33:4243" })
	r.converge(t, "n3's address moved while DOWN")
	nodeWrite(t, s, "n3", func(n *shoalv1.Node) { n.Status.State = ready })
	r.converge(t, "n3 back")
	nodeWrite(t, s, "n4", func(n *shoalv1.Node) { n.Status.State = ready })
	r.converge(t, "n4 back")
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error { return tx.Delete(raftstore.KindNode, "n3", 0) }); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.nodes = []string{"n1", "n2", "n4"} // n3's session ends (node rm)
	r.mu.Unlock()
	r.converge(t, "n3 deleted under w3")
}
