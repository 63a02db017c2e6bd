package orchestrator

import (
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/manager/allocator"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/scheduler"
)

// placement is what the tasks on nodes take (a scheduler.Placed), shared by
// the two loops that place tasks: the scheduler loop, which places pending
// tasks, and the reconciler, which places the tasks it creates in the
// entry that creates them (placeCreated). A loop holds it from the read of
// what it places against to the record of what it committed, so each
// always counts the other's placements and the two never hand out the same
// free capacity. Only the scheduler loop feeds it task events; the
// reconciler, whose pass may be ahead of those events, first observes the
// tasks it read of the services it places for (catchUp in reconciler.go).
// Either loop drops it after a write of unknown outcome, and the next
// placement reads it from the store again.
type placement struct {
	mu     sync.Mutex
	placed *scheduler.Placed // nil: read from the store at the next use
	// waiting: the scheduler loop's last round left a task with a CPU or
	// memory reservation that no node could take. While it waits, a new
	// task that reserves CPU or memory is created PENDING, not placed at
	// creation, so that it queues behind the waiting ones for capacity
	// that frees (the scheduler loop places pending tasks by service,
	// slot and id) instead of taking it first.
	waiting bool
}

// lock takes the placement for one pass.
func (p *placement) lock() { p.mu.Lock() }

func (p *placement) unlock() { p.mu.Unlock() }

// current returns the placed set (lock held), reading it from r when it
// was dropped. rebuilt reports a read: the caller stores it in p.placed
// only once its write committed, since r may be a transaction that fails.
func (p *placement) current(r raftstore.Reader) (placed *scheduler.Placed, rebuilt bool) {
	if p.placed != nil {
		return p.placed, false
	}
	return readPlaced(r), true
}

// record notes the committed tasks (lock held) with the entry's index as
// their version, so the late events of their older states (a pending
// task's creation) are seen as older and do not take them out.
func (p *placement) record(written []*shoalv1.Task, index uint64) {
	if p.placed == nil {
		return
	}
	for _, t := range written {
		t.Meta = proto.Clone(t.GetMeta()).(*shoalv1.Meta)
		t.Meta.Version = index
		p.placed.Observe(t)
	}
}

// placeable reports whether a pending task may be placed now: it is to run
// and has the addresses of its networks (a task on networks waits for the
// allocator, whose write makes the scheduler loop's pass due).
func placeable(t *shoalv1.Task) bool {
	return t.GetStatus().GetState() == statePending && t.GetDesiredState() <= stateRunning && allocator.Allocated(t)
}

// reserves reports whether a task reserves CPU or memory.
func reserves(t *shoalv1.Task) bool {
	r := t.GetSpec().GetResources().GetReservations()
	return r.GetMemoryBytes() > 0 || r.GetNanoCpus() > 0
}

// placeCreated places the tasks a pass is about to create, in one call of
// scheduler.SchedulePlaced against placed: those placed get their node and
// status ASSIGNED before they are written, so a task that can run at once
// costs one raft op (its creation) instead of two (creation, then the
// scheduler loop's assignment). Tasks it cannot place, and tasks waiting
// for the allocator, stay PENDING for the scheduler loop, which records
// why. It changes the tasks in creates (the plan's own new objects) and
// returns those it placed.
func placeCreated(nodes []*shoalv1.Node, placed *scheduler.Placed, creates []*shoalv1.Task, waiting bool, now time.Time) []*shoalv1.Task {
	var pending []*shoalv1.Task
	byID := make(map[string]*shoalv1.Task)
	for _, t := range creates {
		if placeable(t) && !(waiting && reserves(t)) {
			pending = append(pending, t)
			byID[t.GetMeta().GetId()] = t
		}
	}
	if len(pending) == 0 {
		return nil
	}
	assigned, _ := scheduler.SchedulePlaced(nodes, placed, pending)
	out := make([]*shoalv1.Task, 0, len(assigned))
	for _, a := range assigned {
		t := byID[a.TaskID]
		t.NodeId = a.NodeID
		t.Status = &shoalv1.TaskStatus{State: stateAssigned, Timestamp: timestamppb.New(now), Message: msgAssigned}
		out = append(out, t)
	}
	return out
}
