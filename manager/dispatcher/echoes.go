package dispatcher

import (
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// echoDelay is how long a session holds back the echo of a status its
// agent reported (a task of its own going ACCEPTED … RUNNING, nothing
// else changed), so that it rides along with the next message the
// session sends anyway, or with the echoes of the statuses that follow.
// The agent needs nothing from such an echo (it reported the status; the
// real agent acts on desired state and spec only, and SwarmKit's
// dispatcher does not send them at all), but every one of them was a
// message, a gRPC write and a flush of its own: with 5,000 sessions each
// holding about one task per raft entry, a task cost its session three
// messages (assignment, ACCEPTED, RUNNING), and the leader's writes were
// the largest part of its CPU beyond the 1,000-node run's (README,
// "Scheduler at scale"). Short, so that a client reading the agent's
// copy of a task sees it catch up soon; anything else (an assignment, a
// removal, a desired state or spec change, a task leaving RUNNING, a node
// or network event) is sent at once with the held echoes before it.
var echoDelay = 250 * time.Millisecond

// echoes is a session's held-back echoes. Owned by the session loop.
type echoes struct {
	nodeID string
	// sent is the last copy of each task the agent was sent (set or
	// diff), what an echo is compared with.
	sent map[string]*shoalv1.Task
	// held are the events held back, in order.
	held []*shoalv1.WatchEvent
}

func newEchoes(nodeID string, set []*shoalv1.Task) *echoes {
	e := &echoes{nodeID: nodeID, sent: make(map[string]*shoalv1.Task, len(set))}
	e.record(set, nil)
	return e
}

// record notes what a message sent to the agent carried.
func (e *echoes) record(upsert []*shoalv1.Task, removed []string) {
	for _, t := range upsert {
		e.sent[t.GetMeta().GetId()] = t
	}
	for _, id := range removed {
		delete(e.sent, id)
	}
}

// holdable says whether every event of evs is an echo the session may
// hold back (see echoDelay).
func (e *echoes) holdable(evs []*shoalv1.WatchEvent) bool {
	for _, ev := range evs {
		if !e.echo(ev) {
			return false
		}
	}
	return len(evs) > 0
}

// echo says whether ev changes nothing of a task of this node but its
// status, to a state its agent reports while starting it (ACCEPTED to
// RUNNING), against the copy the agent was last sent. The fields are
// compared as the status writer leaves them (raftstore shares every field
// but meta and status with the stored task): a spec equal in content but
// not the same pointer counts as a change, which only sends it at once.
func (e *echoes) echo(ev *shoalv1.WatchEvent) bool {
	t := ev.GetObject().GetTask()
	if t == nil || ev.GetAction() != shoalv1.WatchAction_WATCH_ACTION_UPDATE || t.GetNodeId() != e.nodeID || len(t.GetNetworks()) > 0 {
		return false
	}
	if st := t.GetStatus().GetState(); st < shoalv1.TaskState_TASK_STATE_ACCEPTED || st > shoalv1.TaskState_TASK_STATE_RUNNING {
		return false
	}
	p := e.sent[t.GetMeta().GetId()]
	return p != nil && p.GetSpec() == t.GetSpec() && p.GetDesiredState() == t.GetDesiredState() &&
		p.GetServiceId() == t.GetServiceId() && p.GetSlot() == t.GetSlot() && p.GetSpecVersion() == t.GetSpecVersion() &&
		p.GetJobIteration() == t.GetJobIteration() && len(p.GetNetworks()) == 0
}
