package scheduler

import (
	"maps"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Placed is what the tasks already on nodes take: per node, the task count,
// the reservations and the count per service. The manager's scheduler loop
// keeps one across batches, fed with every task change it sees (Observe,
// Forget) and its own assignments, so that a batch costs the nodes and the
// services on them rather than a read of every placed task (at 100,000
// tasks, rebuilding it from all of them on every batch of 1,000 was most of
// the scheduler's time). Not safe for concurrent use.
type Placed struct {
	tasks map[string]placedTask // by task id
	nodes map[string]*nodeUsage // by node id
}

// placedTask is what one task counts for, to take it back out.
type placedTask struct {
	node, service string
	cpu, mem      int64
	// version is the task's meta.version when it was seen: an older
	// observation arriving later (an event that lags a state the set
	// was given first) is ignored.
	version uint64
}

// sameUse reports whether the two count for the same (versions aside).
func (t placedTask) sameUse(o placedTask) bool {
	t.version, o.version = 0, 0
	return t == o
}

// nodeUsage is what the placed tasks take of one node.
type nodeUsage struct {
	tasks    int
	cpu, mem int64
	bySvc    map[string]int
}

// NewPlaced returns an empty set; Observe each task on a node to fill it.
func NewPlaced() *Placed {
	return &Placed{tasks: map[string]placedTask{}, nodes: map[string]*nodeUsage{}}
}

// Len is the number of tasks counted.
func (p *Placed) Len() int { return len(p.tasks) }

// Observe records t's current state: a task from ASSIGNED up to (not
// including) COMPLETE on a node counts there, any other state counts
// nowhere. A task seen again replaces what it counted before (it may have
// moved, or its reservations changed), so observing the same state twice,
// or an older state and then the newer one, ends where the newest leaves
// it. A state older (by meta.version) than the one counted is ignored:
// the scheduler loop records its own assignments as committed and then
// sees the events of the states before them still queued (a pending
// task's creation); taking the task out then would count its node as
// freer than it is until the assignment's event came, and a batch
// meanwhile could overcommit it.
func (p *Placed) Observe(t *shoalv1.Task) {
	id := t.GetMeta().GetId()
	st := t.GetStatus().GetState()
	v := t.GetMeta().GetVersion()
	old, counted := p.tasks[id]
	if counted && v < old.version {
		return
	}
	if t.GetNodeId() == "" || st < shoalv1.TaskState_TASK_STATE_ASSIGNED || st >= shoalv1.TaskState_TASK_STATE_COMPLETE {
		p.Forget(id)
		return
	}
	r := t.GetSpec().GetResources().GetReservations()
	now := placedTask{node: t.GetNodeId(), service: t.GetServiceId(), cpu: r.GetNanoCpus(), mem: r.GetMemoryBytes(), version: v}
	if counted {
		if old.sameUse(now) {
			p.tasks[id] = now
			return
		}
		p.remove(old)
	}
	p.tasks[id] = now
	u := p.nodes[now.node]
	if u == nil {
		u = &nodeUsage{bySvc: map[string]int{}}
		p.nodes[now.node] = u
	}
	u.tasks++
	u.cpu += now.cpu
	u.mem += now.mem
	u.bySvc[now.service]++
}

// Forget takes a task out (deleted, ended, or back to pending).
func (p *Placed) Forget(id string) {
	if old, ok := p.tasks[id]; ok {
		delete(p.tasks, id)
		p.remove(old)
	}
}

func (p *Placed) remove(t placedTask) {
	u := p.nodes[t.node]
	if u == nil {
		return
	}
	u.tasks--
	u.cpu -= t.cpu
	u.mem -= t.mem
	if u.bySvc[t.service]--; u.bySvc[t.service] <= 0 {
		delete(u.bySvc, t.service)
	}
	if u.tasks <= 0 {
		delete(p.nodes, t.node)
	}
}

// PlacedOf counts existing: the tasks already on nodes (states outside
// ASSIGNED up to COMPLETE are ignored).
func PlacedOf(existing []*shoalv1.Task) *Placed {
	p := NewPlaced()
	for _, t := range existing {
		p.Observe(t)
	}
	return p
}

// Usage is what the placed tasks take of one node.
type Usage struct {
	Tasks                 int
	NanoCPUs, MemoryBytes int64
	// ByService counts the tasks per service id.
	ByService map[string]int
}

// Nodes returns the usage of every node with placed tasks, by node id.
func (p *Placed) Nodes() map[string]Usage {
	out := make(map[string]Usage, len(p.nodes))
	for id, u := range p.nodes {
		out[id] = Usage{Tasks: u.tasks, NanoCPUs: u.cpu, MemoryBytes: u.mem, ByService: maps.Clone(u.bySvc)}
	}
	return out
}
