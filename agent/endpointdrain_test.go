package agent

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/agent/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestEndpointDrainDuration(t *testing.T) {
	nets := []*shoalv1.NetworkAttachment{{NetworkId: "n1", Address: "10.77.0.2/24"}}
	mk := func(networks []*shoalv1.NetworkAttachment, desired, state shoalv1.TaskState) *shoalv1.Task {
		return &shoalv1.Task{Networks: networks, DesiredState: desired, Status: &shoalv1.TaskStatus{State: state}}
	}
	const (
		run  = shoalv1.TaskState_TASK_STATE_RUNNING
		shut = shoalv1.TaskState_TASK_STATE_SHUTDOWN
		rm   = shoalv1.TaskState_TASK_STATE_REMOVE
		orph = shoalv1.TaskState_TASK_STATE_ORPHANED
	)
	for _, c := range []struct {
		name  string
		task  *shoalv1.Task
		grace time.Duration
		want  time.Duration
	}{
		{"on a network, stopping", mk(nets, shut, run), 10 * time.Second, EndpointDrain},
		{"on a network, removed", mk(nets, rm, run), 10 * time.Second, EndpointDrain},
		{"at most half the grace", mk(nets, shut, run), 400 * time.Millisecond, 200 * time.Millisecond},
		{"no network: no endpoint to drain", mk(nil, shut, run), 10 * time.Second, 0},
		{"ended for the managers (orphaned): endpoints gone", mk(nets, run, orph), 10 * time.Second, 0},
	} {
		if got := endpointDrain(c.task, c.grace); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestStopWaitsForEndpointDrain: a task on an overlay network asked to
// stop keeps running through the endpoint drain, and is signalled only
// after it; a task without networks is signalled at once.
func TestStopWaitsForEndpointDrain(t *testing.T) {
	called := make(chan time.Duration, 4)
	release := make(chan struct{})
	orig := drainWait
	drainWait = func(ctx context.Context, d time.Duration) bool {
		called <- d
		select {
		case <-release:
			return true
		case <-ctx.Done():
			return false
		}
	}
	t.Cleanup(func() { drainWait = orig })
	env := newExecEnvOverlay(t, &fakeOverlay{attached: map[string]int{}})
	withNets := running("t1")
	withNets.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "n1", Address: "10.77.0.2/24", Mac: "02:42:0a:4d:00:02"}}
	withNets.Spec.Container.StopGraceMs = 10_000
	env.ex.Assign(true, []*shoalv1.Task{withNets, running("t2")}, nil)
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_RUNNING)
	env.waitStatus("t2", shoalv1.TaskState_TASK_STATE_RUNNING)

	// t2 (no network) stops without a drain.
	stopped2 := task("t2", "app:1", shoalv1.TaskState_TASK_STATE_SHUTDOWN)
	env.ex.Assign(false, []*shoalv1.Task{stopped2}, nil)
	env.waitStatus("t2", shoalv1.TaskState_TASK_STATE_SHUTDOWN)
	select {
	case d := <-called:
		t.Fatalf("a task without networks drained for %v", d)
	default:
	}

	stopped1 := task("t1", "app:1", shoalv1.TaskState_TASK_STATE_SHUTDOWN)
	stopped1.Networks = withNets.Networks
	stopped1.Spec.Container.StopGraceMs = 10_000
	env.ex.Assign(false, []*shoalv1.Task{stopped1}, nil)
	select {
	case d := <-called:
		if d != EndpointDrain {
			t.Fatalf("drain %v, want %v", d, EndpointDrain)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no endpoint drain for a task on a network")
	}
	// Held in the drain: not signalled yet.
	if st, err := env.rt.State(context.Background(), "t1"); err != nil || st.Status != runtime.StatusRunning {
		t.Fatalf("during the drain: state %v, err %v; want still running", st.Status, err)
	}
	close(release)
	if st := env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_SHUTDOWN); st.GetExitCode() != 143 {
		t.Fatalf("exit code %d, want 143 (SIGTERM after the drain)", st.GetExitCode())
	}
}

// fakeWithdrawal is an EndpointWithdrawal whose answer the test gives.
type fakeWithdrawal struct {
	called  chan string        // task ids asked about
	release chan struct{}      // closed: every task is withdrawn
	limits  chan time.Duration // the time left to each wait's deadline
}

func (f *fakeWithdrawal) WaitWithdrawn(ctx context.Context, t *shoalv1.Task) bool {
	if dl, ok := ctx.Deadline(); ok {
		f.limits <- time.Until(dl)
	} else {
		f.limits <- -1
	}
	f.called <- t.GetMeta().GetId()
	select {
	case <-f.release:
		return true
	case <-ctx.Done():
		return false
	}
}

// TestStopWaitsForWithdrawal: with an EndpointWithdrawal, a stopping task
// on an overlay network is signalled only once every node has withdrawn
// it (here: when the test says so), however long that takes past
// EndpointDrain; a node that never confirms holds the stop for at most
// half the grace period.
func TestStopWaitsForWithdrawal(t *testing.T) {
	orig := drainWait
	drainWait = func(ctx context.Context, d time.Duration) bool { return ctx.Err() == nil } // EndpointDrain has passed
	t.Cleanup(func() { drainWait = orig })
	w := &fakeWithdrawal{called: make(chan string, 4), release: make(chan struct{}), limits: make(chan time.Duration, 4)}
	env := &execEnv{t: t, dir: t.TempDir(), rt: runtime.NewFake(), images: newFakeImages(), net: &fakeNet{up: map[string]bool{}},
		ov: &fakeOverlay{attached: map[string]int{}}, withdrawal: w}
	env.start()
	t.Cleanup(env.stop)
	nets := []*shoalv1.NetworkAttachment{{NetworkId: "n1", Address: "10.77.0.2/24", Mac: "02:42:0a:4d:00:02"}}
	mk := func(id string, desired shoalv1.TaskState, graceMs int64) *shoalv1.Task {
		tk := task(id, "app:1", desired)
		tk.Networks = nets
		tk.Spec.Container.StopGraceMs = graceMs
		return tk
	}
	env.ex.Assign(true, []*shoalv1.Task{mk("t1", shoalv1.TaskState_TASK_STATE_RUNNING, 10_000), mk("t2", shoalv1.TaskState_TASK_STATE_RUNNING, 400)}, nil)
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_RUNNING)
	env.waitStatus("t2", shoalv1.TaskState_TASK_STATE_RUNNING)

	env.ex.Assign(false, []*shoalv1.Task{mk("t1", shoalv1.TaskState_TASK_STATE_SHUTDOWN, 10_000)}, nil)
	select {
	case id := <-w.called:
		if id != "t1" {
			t.Fatalf("withdrawal asked for %q, want t1", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stop did not wait for the withdrawal")
	}
	if l := <-w.limits; l <= 0 || l > 5*time.Second {
		t.Fatalf("withdrawal wait limited to %v, want at most half the 10 s grace", l)
	}
	if st, err := env.rt.State(context.Background(), "t1"); err != nil || st.Status != runtime.StatusRunning {
		t.Fatalf("before the withdrawal: state %v, err %v; want still running", st.Status, err)
	}
	close(w.release)
	if st := env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_SHUTDOWN); st.GetExitCode() != 143 {
		t.Fatalf("exit code %d, want 143 (SIGTERM after the withdrawal)", st.GetExitCode())
	}

	// A withdrawal that never comes: signalled after grace/2.
	w.release = make(chan struct{})
	env.ex.Assign(false, []*shoalv1.Task{mk("t2", shoalv1.TaskState_TASK_STATE_SHUTDOWN, 400)}, nil)
	<-w.called
	if l := <-w.limits; l <= 0 || l > 200*time.Millisecond {
		t.Fatalf("withdrawal wait limited to %v, want at most 200ms (half the grace)", l)
	}
	if st := env.waitStatus("t2", shoalv1.TaskState_TASK_STATE_SHUTDOWN); st.GetExitCode() != 143 {
		t.Fatalf("exit code %d, want 143 (SIGTERM after the limit)", st.GetExitCode())
	}
}
