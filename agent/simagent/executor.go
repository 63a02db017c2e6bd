package simagent

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Counters count committed progress over a fleet: tasks seen ASSIGNED and
// tasks seen RUNNING (each task once), and when each count first reached
// Target.
type Counters struct {
	Target            int64
	assigned, running atomic.Int64
	assignedAt, runAt atomic.Int64 // unix nanoseconds; 0: not reached
}

// Assigned is the number of tasks seen assigned (committed).
func (c *Counters) Assigned() int64 { return c.assigned.Load() }

// Running is the number of tasks seen RUNNING (committed).
func (c *Counters) Running() int64 { return c.running.Load() }

// AssignedAt is when Assigned reached Target (zero: not yet).
func (c *Counters) AssignedAt() time.Time { return at(c.assignedAt.Load()) }

// RunningAt is when Running reached Target (zero: not yet).
func (c *Counters) RunningAt() time.Time { return at(c.runAt.Load()) }

func at(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

func (c *Counters) add(n *atomic.Int64, when *atomic.Int64) {
	if v := n.Add(1); c.Target > 0 && v == c.Target {
		when.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// seen is what the executor has counted and reported of one task.
type seen struct {
	counted  shoalv1.TaskState // highest of ASSIGNED / RUNNING counted
	reported shoalv1.TaskState // last state reported this session
}

// Executor is a simulated node's agent.TaskExecutor (see the package doc).
// Every method is safe for concurrent use.
type Executor struct {
	counters *Counters
	notify   chan struct{} // cap 1: reports are waiting

	mu    sync.Mutex // guards the fields below
	tasks map[string]*shoalv1.Task
	seen  map[string]*seen
	// pending are reports not taken yet; starting are tasks whose ACCEPTED
	// went out and whose RUNNING goes in the next batch.
	pending  []*shoalv1.TaskStatusUpdate
	starting []string
}

// NewExecutor returns an executor counting into c.
func NewExecutor(c *Counters) *Executor {
	return &Executor{counters: c, notify: make(chan struct{}, 1), tasks: map[string]*shoalv1.Task{}, seen: map[string]*seen{}}
}

func report(id string, st shoalv1.TaskState, msg string) *shoalv1.TaskStatusUpdate {
	return &shoalv1.TaskStatusUpdate{TaskId: id, Status: &shoalv1.TaskStatus{State: st, Timestamp: timestamppb.Now(), Message: msg}}
}

// Assign applies an assignment set (full) or a diff: counts what is newly
// committed and queues the reports the tasks call for.
func (e *Executor) Assign(full bool, upsert []*shoalv1.Task, removed []string) {
	e.mu.Lock()
	if full {
		e.tasks = map[string]*shoalv1.Task{}
		e.starting = nil
		for _, s := range e.seen {
			s.reported = 0 // a new session: report again what the store lacks
		}
	}
	for _, id := range removed {
		delete(e.tasks, id)
		delete(e.seen, id)
	}
	queued := false
	for _, t := range upsert {
		id := t.GetMeta().GetId()
		e.tasks[id] = t
		s := e.seen[id]
		if s == nil {
			s = &seen{}
			e.seen[id] = s
		}
		state := t.GetStatus().GetState()
		if s.counted < shoalv1.TaskState_TASK_STATE_ASSIGNED && state >= shoalv1.TaskState_TASK_STATE_ASSIGNED {
			s.counted = shoalv1.TaskState_TASK_STATE_ASSIGNED
			e.counters.add(&e.counters.assigned, &e.counters.assignedAt)
		}
		if s.counted < shoalv1.TaskState_TASK_STATE_RUNNING && state == shoalv1.TaskState_TASK_STATE_RUNNING {
			s.counted = shoalv1.TaskState_TASK_STATE_RUNNING
			e.counters.add(&e.counters.running, &e.counters.runAt)
		}
		switch {
		case t.GetDesiredState() >= shoalv1.TaskState_TASK_STATE_SHUTDOWN:
			if state < shoalv1.TaskState_TASK_STATE_COMPLETE && s.reported < shoalv1.TaskState_TASK_STATE_SHUTDOWN {
				s.reported = shoalv1.TaskState_TASK_STATE_SHUTDOWN
				e.pending = append(e.pending, report(id, shoalv1.TaskState_TASK_STATE_SHUTDOWN, "shutdown"))
				queued = true
			}
		case state < shoalv1.TaskState_TASK_STATE_ACCEPTED && s.reported < shoalv1.TaskState_TASK_STATE_ACCEPTED:
			s.reported = shoalv1.TaskState_TASK_STATE_ACCEPTED
			e.pending = append(e.pending, report(id, shoalv1.TaskState_TASK_STATE_ACCEPTED, "accepted"))
			e.starting = append(e.starting, id)
			queued = true
		case state >= shoalv1.TaskState_TASK_STATE_ACCEPTED && state < shoalv1.TaskState_TASK_STATE_RUNNING &&
			s.reported < shoalv1.TaskState_TASK_STATE_ACCEPTED:
			// Accepted in the store by an earlier session: run it now.
			s.reported = shoalv1.TaskState_TASK_STATE_ACCEPTED
			e.starting = append(e.starting, id)
			queued = true
		}
	}
	e.mu.Unlock()
	if queued {
		e.signal()
	}
}

func (e *Executor) signal() {
	select {
	case e.notify <- struct{}{}:
	default:
	}
}

// Updates is signalled when reports are waiting.
func (e *Executor) Updates() <-chan struct{} { return e.notify }

// TakeUpdates returns the reports not taken yet and moves the tasks
// started meanwhile to RUNNING, for the next batch. all (a new session)
// adds nothing: the full set that opens the session re-queues (Assign).
func (e *Executor) TakeUpdates(all bool) []*shoalv1.TaskStatusUpdate {
	e.mu.Lock()
	out := e.pending[:0:0]
	for _, u := range e.pending {
		s := e.seen[u.GetTaskId()]
		if _, held := e.tasks[u.GetTaskId()]; !held || s == nil ||
			(u.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_RUNNING && s.reported != shoalv1.TaskState_TASK_STATE_RUNNING) {
			continue // removed, or told to stop, since the report was queued
		}
		out = append(out, u)
	}
	e.pending = nil
	for _, id := range e.starting {
		s := e.seen[id]
		if _, held := e.tasks[id]; !held || s == nil || s.reported != shoalv1.TaskState_TASK_STATE_ACCEPTED {
			continue // removed or told to stop meanwhile
		}
		s.reported = shoalv1.TaskState_TASK_STATE_RUNNING
		e.pending = append(e.pending, report(id, shoalv1.TaskState_TASK_STATE_RUNNING, "started"))
	}
	e.starting = nil
	more := len(e.pending) > 0
	e.mu.Unlock()
	if more {
		e.signal()
	}
	return out
}

// Tasks returns the held assignment set, by task id.
func (e *Executor) Tasks() []*shoalv1.Task {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*shoalv1.Task, 0, len(e.tasks))
	for _, t := range e.tasks {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetMeta().GetId() < out[j].GetMeta().GetId() })
	return out
}
