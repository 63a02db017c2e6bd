package dispatcher

import (
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// echoes tells which events of a session are echoes of statuses its own
// agent reported while starting a task (ACCEPTED … RUNNING, nothing else
// changed against the copy the agent was last sent). A session does not
// send them at all, as SwarmKit's dispatcher sends assignments and
// removals only: the agent needs nothing from them. It acts on desired
// state and spec (agent.actionable) and on the managers ending a task
// (a state past RUNNING, never an echo); it resends every status it holds
// on each new session (TakeUpdates(all)), which is how a status the
// managers missed gets recorded, not by comparing echoes; and a
// reconnecting agent gets its full set, with the stored statuses, as
// before. Each echo was a message, a gRPC write and a flush of its own:
// with 5,000 sessions each holding about one task per raft entry, a task
// cost its session three messages (assignment, ACCEPTED, RUNNING), and
// holding them back for 250 ms to merge them (sixth round) still sent
// about one per task (docs/benchmarks-history.md, "Scheduler at scale"). Anything else (an
// assignment, a removal, a desired state or spec change, a task leaving
// RUNNING, a task on a network, a node or network event) is sent, in
// order. Owned by the session loop.
type echoes struct {
	nodeID string
	// sent is the last copy of each task the agent was sent (set or
	// diff), what an echo is compared with.
	sent map[string]*shoalv1.Task
	// seen is the last version of each of the node's tasks on a network
	// the session has seen (sent or not), what ownTaskChangesNetworks
	// compares an event with.
	seen map[string]*shoalv1.Task
	// scratch is the task slice of the last diff sent, emptied, which
	// forward builds the next one in (one allocation less per diff).
	scratch []*shoalv1.Task
}

func newEchoes(nodeID string, set []*shoalv1.Task) *echoes {
	e := &echoes{nodeID: nodeID, sent: make(map[string]*shoalv1.Task, len(set)), seen: map[string]*shoalv1.Task{}}
	e.record(set, nil)
	for _, t := range set {
		if len(t.GetNetworks()) > 0 {
			e.seen[t.GetMeta().GetId()] = t
		}
	}
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

// drop removes the echoes from evs, in place, keeping the order of the
// rest, and returns what is left; the dropped slots are cleared.
func (e *echoes) drop(evs []*shoalv1.WatchEvent) []*shoalv1.WatchEvent {
	keep := evs[:0]
	for _, ev := range evs {
		if !e.echo(ev) {
			keep = append(keep, ev)
		}
	}
	clear(evs[len(keep):])
	return keep
}

// echo says whether ev changes nothing of a task of this node but its
// status, to a state its agent reports while starting it (ACCEPTED to
// RUNNING), against the copy the agent was last sent. The fields are
// compared as the status writer leaves them (raftstore shares every field
// but meta and status with the stored task): a spec equal in content but
// not the same pointer counts as a change, which only sends it.
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
