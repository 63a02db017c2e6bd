package simagent

import (
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func task(id string, desired, state shoalv1.TaskState) *shoalv1.Task {
	return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, DesiredState: desired, Status: &shoalv1.TaskStatus{State: state}}
}

const (
	assignedS = shoalv1.TaskState_TASK_STATE_ASSIGNED
	acceptedS = shoalv1.TaskState_TASK_STATE_ACCEPTED
	runningS  = shoalv1.TaskState_TASK_STATE_RUNNING
	shutdownS = shoalv1.TaskState_TASK_STATE_SHUTDOWN
)

func states(ups []*shoalv1.TaskStatusUpdate) map[string]shoalv1.TaskState {
	out := map[string]shoalv1.TaskState{}
	for _, u := range ups {
		out[u.GetTaskId()] = u.GetStatus().GetState()
	}
	return out
}

func signalled(e *Executor) bool {
	select {
	case <-e.Updates():
		return true
	default:
		return false
	}
}

// TestReportsAcceptedThenRunning: a new assignment is reported ACCEPTED
// in one batch and RUNNING in the next (signalled), nothing after that;
// the counters move only on what the dispatcher sends back (committed).
func TestReportsAcceptedThenRunning(t *testing.T) {
	c := &Counters{Target: 2}
	e := NewExecutor(c)
	e.Assign(true, []*shoalv1.Task{task("a", runningS, assignedS), task("b", runningS, assignedS)}, nil)
	if !signalled(e) {
		t.Fatal("reports wait but Updates was not signalled")
	}
	if got := states(e.TakeUpdates(true)); len(got) != 2 || got["a"] != acceptedS || got["b"] != acceptedS {
		t.Fatalf("first batch: %v, want a and b ACCEPTED", got)
	}
	if !signalled(e) {
		t.Fatal("RUNNING waits but Updates was not signalled")
	}
	if got := states(e.TakeUpdates(false)); len(got) != 2 || got["a"] != runningS || got["b"] != runningS {
		t.Fatalf("second batch: %v, want a and b RUNNING", got)
	}
	if got := e.TakeUpdates(false); len(got) != 0 {
		t.Fatalf("third batch: %v, want nothing", got)
	}
	if c.Assigned() != 2 || c.Running() != 0 || c.AssignedAt().IsZero() || !c.RunningAt().IsZero() {
		t.Fatalf("counters after the set: assigned %d running %d", c.Assigned(), c.Running())
	}
	// The echoes of the committed statuses.
	e.Assign(false, []*shoalv1.Task{task("a", runningS, acceptedS), task("b", runningS, acceptedS)}, nil)
	e.Assign(false, []*shoalv1.Task{task("a", runningS, runningS)}, nil)
	e.Assign(false, []*shoalv1.Task{task("a", runningS, runningS)}, nil) // counted once
	if c.Assigned() != 2 || c.Running() != 1 || !c.RunningAt().IsZero() {
		t.Fatalf("counters after one RUNNING: assigned %d running %d", c.Assigned(), c.Running())
	}
	e.Assign(false, []*shoalv1.Task{task("b", runningS, runningS)}, nil)
	if c.Running() != 2 || c.RunningAt().IsZero() {
		t.Fatalf("RUNNING target not reached: %d", c.Running())
	}
	if got := e.TakeUpdates(false); len(got) != 0 {
		t.Fatalf("echoes caused reports: %v", states(got))
	}
}

// TestFullSetReportsWhatTheStoreLacks: a new session's full set reports
// again what the store has not recorded (a new leader may have missed
// it), and nothing for what it has.
func TestFullSetReportsWhatTheStoreLacks(t *testing.T) {
	e := NewExecutor(&Counters{})
	e.Assign(true, []*shoalv1.Task{task("a", runningS, assignedS), task("b", runningS, assignedS), task("c", runningS, assignedS)}, nil)
	e.TakeUpdates(true)
	e.TakeUpdates(false)
	// The store recorded: a nothing, b ACCEPTED, c RUNNING.
	e.Assign(true, []*shoalv1.Task{task("a", runningS, assignedS), task("b", runningS, acceptedS), task("c", runningS, runningS)}, nil)
	if got := states(e.TakeUpdates(true)); len(got) != 1 || got["a"] != acceptedS {
		t.Fatalf("first batch after the full set: %v, want a ACCEPTED", got)
	}
	if got := states(e.TakeUpdates(false)); len(got) != 2 || got["a"] != runningS || got["b"] != runningS {
		t.Fatalf("second batch after the full set: %v, want a and b RUNNING", got)
	}
}

// TestShutdownAndRemoval: a task told to stop is reported SHUTDOWN once
// (and not RUNNING if its start was still due); a removed task is dropped.
func TestShutdownAndRemoval(t *testing.T) {
	e := NewExecutor(&Counters{})
	e.Assign(true, []*shoalv1.Task{task("a", runningS, assignedS), task("b", runningS, assignedS)}, nil)
	e.TakeUpdates(true) // ACCEPTED of both; their RUNNING is due
	e.Assign(false, []*shoalv1.Task{task("a", shutdownS, acceptedS)}, []string{"b"})
	e.Assign(false, []*shoalv1.Task{task("a", shutdownS, acceptedS)}, nil)
	got := e.TakeUpdates(false)
	if s := states(got); len(got) != 1 || s["a"] != shutdownS {
		t.Fatalf("after stop and removal: %v, want one SHUTDOWN of a", s)
	}
	if len(e.Tasks()) != 1 || e.Tasks()[0].GetMeta().GetId() != "a" {
		t.Fatalf("held: %v", e.Tasks())
	}
}
