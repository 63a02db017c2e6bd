package agent

import (
	"sort"
	"sync"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// fakeExecutor is an in-memory TaskExecutor for tests of the session: it
// holds the assignment set as given and reports what the test queues.
type fakeExecutor struct {
	notify chan struct{}

	mu      sync.Mutex // guards the fields below
	tasks   map[string]*shoalv1.Task
	assigns int // Assign calls
	pending []*shoalv1.TaskStatusUpdate
	// owed is what TakeUpdates(all=true) returns besides pending: what a
	// new session must hear again.
	owed []*shoalv1.TaskStatusUpdate
}

var _ TaskExecutor = (*fakeExecutor)(nil)

func newFakeExecutor() *fakeExecutor {
	return &fakeExecutor{notify: make(chan struct{}, 1), tasks: map[string]*shoalv1.Task{}}
}

func (f *fakeExecutor) Assign(full bool, upsert []*shoalv1.Task, removed []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.assigns++
	if full {
		f.tasks = map[string]*shoalv1.Task{}
	}
	for _, t := range upsert {
		f.tasks[t.GetMeta().GetId()] = t
	}
	for _, id := range removed {
		delete(f.tasks, id)
	}
}

// report queues a status for the session to send.
func (f *fakeExecutor) report(id string, state shoalv1.TaskState) {
	f.mu.Lock()
	u := &shoalv1.TaskStatusUpdate{TaskId: id, Status: &shoalv1.TaskStatus{State: state}}
	f.pending = append(f.pending, u)
	f.owed = append(f.owed, u)
	f.mu.Unlock()
	select {
	case f.notify <- struct{}{}:
	default:
	}
}

func (f *fakeExecutor) TakeUpdates(all bool) []*shoalv1.TaskStatusUpdate {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.pending
	if all {
		out = append([]*shoalv1.TaskStatusUpdate(nil), f.owed...)
	}
	f.pending = nil
	return out
}

func (f *fakeExecutor) Updates() <-chan struct{} { return f.notify }

func (f *fakeExecutor) Tasks() []*shoalv1.Task {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*shoalv1.Task, 0, len(f.tasks))
	for _, t := range f.tasks {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetMeta().GetId() < out[j].GetMeta().GetId() })
	return out
}

func (f *fakeExecutor) assignCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.assigns
}
