package orchestrator

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// OrphanOnDownNodes returns clones, with status ORPHANED, of the tasks that
// have not ended and sit on a node that is DOWN or no longer exists: no
// agent will ever report on them, so the manager ends them and their slot
// gets a replacement (per the restart policy) elsewhere. Tasks without a
// node are not concerned.
func OrphanOnDownNodes(nodes []*shoalv1.Node, tasks []*shoalv1.Task, now time.Time) []*shoalv1.Task {
	state := nodeStates(nodes)
	var out []*shoalv1.Task
	for _, t := range tasks {
		if t == nil || t.GetNodeId() == "" || isTerminal(t) {
			continue
		}
		msg := ""
		switch n, ok := state[t.GetNodeId()]; {
		case !ok:
			msg = msgNodeRemoved
		case n.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_DOWN:
			msg = msgNodeDown
		default:
			continue
		}
		o := cloneTask(t)
		o.Status = &shoalv1.TaskStatus{State: stateOrphaned, Timestamp: timestamppb.New(now), Message: msg}
		out = append(out, o)
	}
	sortByID(out)
	return out
}

// DrainedNodeTasks returns clones, with desired state SHUTDOWN, of the live
// tasks of replicated services (slot > 0) on nodes whose availability is
// DRAIN, so their slots get new tasks elsewhere. Global services' tasks are
// left to ReconcileGlobal, for which a draining node is not eligible.
func DrainedNodeTasks(nodes []*shoalv1.Node, tasks []*shoalv1.Task, now time.Time) []*shoalv1.Task {
	state := nodeStates(nodes)
	var out []*shoalv1.Task
	for _, t := range tasks {
		if t == nil || t.GetSlot() == 0 || !isLive(t) {
			continue
		}
		n, ok := state[t.GetNodeId()]
		if !ok || n.GetSpec().GetAvailability() != shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN {
			continue
		}
		d := cloneTask(t)
		shutDown(d, now)
		out = append(out, d)
	}
	sortByID(out)
	return out
}

func nodeStates(nodes []*shoalv1.Node) map[string]*shoalv1.Node {
	m := make(map[string]*shoalv1.Node, len(nodes))
	for _, n := range nodes {
		if n != nil {
			m[n.GetMeta().GetId()] = n
		}
	}
	return m
}
