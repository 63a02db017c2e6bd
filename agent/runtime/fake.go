package runtime

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Fake is an in-memory Runtime for unit tests of the executor. Started
// tasks run until Exit, KillShim, Stop or Remove (which also end a Wait);
// StartErr makes the next Starts fail.
type Fake struct {
	mu       sync.Mutex // guards all fields below
	tasks    map[string]*fakeTask
	StartErr error
	// ExecFunc answers Exec for a running task (nil: exit code 0, no
	// output); tests script health probes with it.
	ExecFunc func(ctx context.Context, id string, args []string) (int, []byte, error)
	now      func() time.Time
}

type fakeTask struct {
	spec    Spec
	logPath string
	state   State
	// done is closed when the task stops running (its "shim" is gone):
	// what Wait waits for.
	done chan struct{}
}

// finish closes t.done once; the caller holds f.mu.
func (t *fakeTask) finish() {
	select {
	case <-t.done:
	default:
		close(t.done)
	}
}

var _ Runtime = (*Fake)(nil)

// NewFake returns an empty Fake.
func NewFake() *Fake { return &Fake{tasks: map[string]*fakeTask{}, now: time.Now} }

// Start implements Runtime.
func (f *Fake) Start(_ context.Context, spec Spec, logPath string) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.StartErr != nil {
		return f.StartErr
	}
	if _, ok := f.tasks[spec.ID]; ok {
		return fmt.Errorf("task %q: %w", spec.ID, ErrAlreadyExists)
	}
	f.tasks[spec.ID] = &fakeTask{spec: spec, logPath: logPath, done: make(chan struct{}), state: State{
		ID: spec.ID, Status: StatusRunning, Pid: 1000 + len(f.tasks), StartedAt: f.now(),
	}}
	return nil
}

// Exit makes a running task exit with code (what the container would do).
func (f *Fake) Exit(id string, code int, oom bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tasks[id]
	if !ok {
		return fmt.Errorf("task %q: %w", id, ErrNotFound)
	}
	if t.state.Status == StatusRunning {
		t.state.Status = StatusExited
		t.state.Exit = &ExitStatus{Code: code, OOMKilled: oom, FinishedAt: f.now()}
		t.finish()
	}
	return nil
}

// KillShim simulates a shim killed with kill -9.
func (f *Fake) KillShim(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tasks[id]
	if !ok {
		return fmt.Errorf("task %q: %w", id, ErrNotFound)
	}
	if t.state.Status == StatusRunning {
		t.state.Status = StatusFailed
		t.state.Error = "shim died without recording an exit status"
		t.state.ContainerAlive = true
		t.finish()
	}
	return nil
}

// Spec returns the spec a task was started with.
func (f *Fake) Spec(id string) (Spec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tasks[id]
	if !ok {
		return Spec{}, false
	}
	return t.spec, true
}

// Exec runs ExecFunc for a running task (see Libcontainer.Exec).
func (f *Fake) Exec(ctx context.Context, id string, args []string) (int, []byte, error) {
	f.mu.Lock()
	t, ok := f.tasks[id]
	running := ok && t.state.Status == StatusRunning
	fn := f.ExecFunc
	f.mu.Unlock()
	if !running {
		return -1, nil, fmt.Errorf("task %q: not running: %w", id, ErrNotFound)
	}
	if fn == nil {
		return 0, nil, nil
	}
	return fn(ctx, id, args)
}

// State implements Runtime.
func (f *Fake) State(_ context.Context, id string) (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tasks[id]
	if !ok {
		return State{}, fmt.Errorf("task %q: %w", id, ErrNotFound)
	}
	return copyState(t.state), nil
}

// Stop implements Runtime: the fake's process honours SIGTERM at once.
func (f *Fake) Stop(_ context.Context, id string, sig os.Signal, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tasks[id]
	if !ok {
		return fmt.Errorf("task %q: %w", id, ErrNotFound)
	}
	if t.state.Status == StatusRunning || (t.state.Status == StatusFailed && t.state.ContainerAlive) {
		s, _ := sig.(syscall.Signal)
		if s == 0 {
			s = syscall.SIGTERM
		}
		t.state.Status = StatusExited
		t.state.ContainerAlive = false
		t.state.Exit = &ExitStatus{Code: 128 + int(s), Signal: int(s), FinishedAt: f.now()}
		t.finish()
	}
	return nil
}

// Remove implements Runtime.
func (f *Fake) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.tasks[id]; ok {
		t.finish() // a pending Wait then reports ErrNotFound
	}
	delete(f.tasks, id)
	return nil
}

// Wait implements Runtime: it returns once the task is no longer running
// (Exit, KillShim, Stop), ErrNotFound if it was removed meanwhile.
func (f *Fake) Wait(ctx context.Context, id string) (State, error) {
	f.mu.Lock()
	t, ok := f.tasks[id]
	f.mu.Unlock()
	if !ok {
		return State{}, fmt.Errorf("task %q: %w", id, ErrNotFound)
	}
	select {
	case <-t.done:
	case <-ctx.Done():
		return State{}, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if cur, ok := f.tasks[id]; !ok || cur != t {
		return State{}, fmt.Errorf("task %q: %w", id, ErrNotFound)
	}
	return copyState(t.state), nil
}

// List implements Runtime.
func (f *Fake) List(_ context.Context) ([]State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]State, 0, len(f.tasks))
	for _, t := range f.tasks {
		out = append(out, copyState(t.state))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func copyState(s State) State {
	if s.Exit != nil {
		e := *s.Exit
		s.Exit = &e
	}
	return s
}
