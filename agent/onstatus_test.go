package agent

import (
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/agent/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// OnStatus sees every recorded status of a task, in order, with the task.
func TestExecutorOnStatus(t *testing.T) {
	var mu sync.Mutex
	var seen []shoalv1.TaskState
	env := &execEnv{t: t, dir: t.TempDir(), rt: runtime.NewFake(), images: newFakeImages(), net: &fakeNet{up: map[string]bool{}}}
	env.onStatus = func(task *shoalv1.Task, st *shoalv1.TaskStatus) {
		if task.GetMeta().GetId() != "t1" {
			t.Errorf("status of %q", task.GetMeta().GetId())
		}
		mu.Lock()
		seen = append(seen, st.GetState())
		mu.Unlock()
	}
	env.start()
	t.Cleanup(env.stop)
	env.ex.Assign(true, []*shoalv1.Task{running("t1")}, nil)
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_RUNNING)
	if err := env.rt.Exit("t1", 0, false); err != nil {
		t.Fatal(err)
	}
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_COMPLETE)
	// OnStatus runs right after the status is queued: poll for it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		end := n > 0 && seen[n-1] == shoalv1.TaskState_TASK_STATE_COMPLETE
		mu.Unlock()
		if end || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	var run, done bool
	last := shoalv1.TaskState(0)
	for _, s := range seen {
		if s < last {
			t.Fatalf("out of order: %v", seen)
		}
		last = s
		run = run || s == shoalv1.TaskState_TASK_STATE_RUNNING
		done = done || s == shoalv1.TaskState_TASK_STATE_COMPLETE
	}
	if !run || !done {
		t.Fatalf("seen %v", seen)
	}
}
