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
