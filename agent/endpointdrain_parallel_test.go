package agent

import (
	"fmt"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/agent/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestWithdrawalWaitsRunInParallel: tasks stopping together wait for
// their withdrawals side by side: ten whose withdrawal never comes all
// end after about half their grace period, not ten times that.
func TestWithdrawalWaitsRunInParallel(t *testing.T) {
	const n = 10
	w := &fakeWithdrawal{called: make(chan string, n), release: make(chan struct{}), limits: make(chan time.Duration, n)}
	env := &execEnv{t: t, dir: t.TempDir(), rt: runtime.NewFake(), images: newFakeImages(), net: &fakeNet{up: map[string]bool{}},
		ov: &fakeOverlay{attached: map[string]int{}}, withdrawal: w}
	env.start()
	t.Cleanup(env.stop)
	mk := func(i int, desired shoalv1.TaskState) *shoalv1.Task {
		tk := task(fmt.Sprintf("t%d", i), "app:1", desired)
		tk.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "n1", Address: fmt.Sprintf("10.77.0.%d/24", i+2), Mac: fmt.Sprintf("02:42:0a:4d:00:%02x", i+2)}}
		tk.Spec.Container.StopGraceMs = 1000 // each wait: at most 500 ms
		return tk
	}
	var run, stop []*shoalv1.Task
	for i := range n {
		run, stop = append(run, mk(i, shoalv1.TaskState_TASK_STATE_RUNNING)), append(stop, mk(i, shoalv1.TaskState_TASK_STATE_SHUTDOWN))
	}
	env.ex.Assign(true, run, nil)
	for i := range n {
		env.waitStatus(fmt.Sprintf("t%d", i), shoalv1.TaskState_TASK_STATE_RUNNING)
	}
	start := time.Now()
	env.ex.Assign(true, stop, nil)
	for i := range n {
		env.waitStatus(fmt.Sprintf("t%d", i), shoalv1.TaskState_TASK_STATE_SHUTDOWN)
	}
	if d := time.Since(start); d > n*500*time.Millisecond/2 {
		t.Fatalf("%d stops took %v: their withdrawal waits (500 ms each) ran one after another", n, d)
	}
	if len(w.called) != n {
		t.Fatalf("%d withdrawal waits, want %d", len(w.called), n)
	}
}
