// Package nullexec is an executor that runs nothing: a node started with
// `--no-executor` (control-plane benchmarks such as bench -bigservice, and
// the daemon's own cluster tests) takes its assignments and reports them
// without containers, images or a node network.
//
// What it reports: nothing for a task that should run (it stays ASSIGNED in
// the store, as no agent accepts it), and SHUTDOWN once for a task told to
// stop that has not already ended in the store. A full assignment set
// opens every session, maybe with a new leader that never got the reports
// sent to the old one, so a full set forgets what was reported and reports
// again.
//
// It implements agent.TaskExecutor; the agent's session calls Assign from
// the goroutine receiving the session's messages, and TakeUpdates/Updates
// from the one sending statuses. Every method is safe for concurrent use.
package nullexec

import (
	"sort"
	"sync"

	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Executor holds the assignment set and the reports owed for it.
type Executor struct {
	notify chan struct{} // cap 1: reports are waiting

	mu sync.Mutex // guards the fields below
	// tasks is the assignment set as the dispatcher last described it.
	tasks map[string]*shoalv1.Task
	// reported remembers the terminal state already reported per task.
	reported map[string]shoalv1.TaskState
	// pending are reports not yet taken, in the order they were made.
	pending []*shoalv1.TaskStatusUpdate
}

// New returns an empty executor.
func New() *Executor {
	return &Executor{notify: make(chan struct{}, 1), tasks: map[string]*shoalv1.Task{}, reported: map[string]shoalv1.TaskState{}}
}

// Assign applies an assignment set (full) or a diff, and queues a SHUTDOWN
// report for each held task told to stop that has not been reported.
func (e *Executor) Assign(full bool, upsert []*shoalv1.Task, removed []string) {
	e.mu.Lock()
	if full {
		e.tasks = map[string]*shoalv1.Task{}
		e.reported = map[string]shoalv1.TaskState{}
	}
	for _, t := range upsert {
		e.tasks[t.GetMeta().GetId()] = t
	}
	for _, id := range removed {
		delete(e.tasks, id)
		delete(e.reported, id)
	}
	n := len(e.pending)
	for id, t := range e.tasks {
		if t.GetDesiredState() < shoalv1.TaskState_TASK_STATE_SHUTDOWN || e.reported[id] == shoalv1.TaskState_TASK_STATE_SHUTDOWN ||
			t.GetStatus().GetState() >= shoalv1.TaskState_TASK_STATE_COMPLETE {
			// Running, already reported, or already ended in the store.
			continue
		}
		e.reported[id] = shoalv1.TaskState_TASK_STATE_SHUTDOWN
		e.pending = append(e.pending, &shoalv1.TaskStatusUpdate{TaskId: id, Status: &shoalv1.TaskStatus{
			State: shoalv1.TaskState_TASK_STATE_SHUTDOWN, Timestamp: timestamppb.Now(), Message: "shutdown"}})
	}
	queued := len(e.pending) > n
	e.mu.Unlock()
	if queued {
		select {
		case e.notify <- struct{}{}:
		default:
		}
	}
}

// Updates is signalled when reports are waiting.
func (e *Executor) Updates() <-chan struct{} { return e.notify }

// TakeUpdates returns the reports not yet taken. all (a new session) adds
// nothing: what a new leader must hear again is reported when its full
// assignment set arrives (Assign).
func (e *Executor) TakeUpdates(all bool) []*shoalv1.TaskStatusUpdate {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.pending
	e.pending = nil
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
