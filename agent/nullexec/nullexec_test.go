package nullexec

import (
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func mk(id string, desired shoalv1.TaskState) *shoalv1.Task {
	return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, DesiredState: desired, Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED}}
}

func signalled(e *Executor) bool {
	select {
	case <-e.Updates():
		return true
	default:
		return false
	}
}

// TestAssignmentsAndShutdownReports: tasks that should run are held and
// not reported; a task told to stop is reported SHUTDOWN once; a full set
// (a new session, maybe a new leader) reports it again.
func TestAssignmentsAndShutdownReports(t *testing.T) {
	e := New()
	e.Assign(true, []*shoalv1.Task{mk("a", shoalv1.TaskState_TASK_STATE_RUNNING), mk("b", shoalv1.TaskState_TASK_STATE_RUNNING)}, nil)
	if got := len(e.Tasks()); got != 2 || signalled(e) || len(e.TakeUpdates(true)) != 0 {
		t.Fatalf("after full set: %d tasks, or reports", got)
	}
	diff := func() {
		e.Assign(false, []*shoalv1.Task{mk("b", shoalv1.TaskState_TASK_STATE_SHUTDOWN)}, []string{"a"})
	}
	diff()
	if got := e.Tasks(); len(got) != 1 || got[0].GetMeta().GetId() != "b" {
		t.Fatalf("after diff: %v", got)
	}
	if !signalled(e) {
		t.Fatal("a report is waiting but Updates was not signalled")
	}
	if ups := e.TakeUpdates(false); len(ups) != 1 || ups[0].GetTaskId() != "b" || ups[0].GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_SHUTDOWN {
		t.Fatalf("want one SHUTDOWN report, got %v", ups)
	}
	// The same diff again is not reported twice.
	diff()
	if ups := e.TakeUpdates(false); len(ups) != 0 || signalled(e) {
		t.Fatalf("reported twice: %v", ups)
	}
	// A new session with its full set: the new leader hears it again.
	e.Assign(true, []*shoalv1.Task{mk("b", shoalv1.TaskState_TASK_STATE_SHUTDOWN)}, nil)
	if ups := e.TakeUpdates(true); len(ups) != 1 || ups[0].GetTaskId() != "b" {
		t.Fatalf("full set after a new session: %v, want b reported again", ups)
	}
	// A task that already ended in the store is not reported.
	done := mk("c", shoalv1.TaskState_TASK_STATE_SHUTDOWN)
	done.Status.State = shoalv1.TaskState_TASK_STATE_COMPLETE
	e.Assign(false, []*shoalv1.Task{done}, nil)
	if ups := e.TakeUpdates(false); len(ups) != 0 {
		t.Fatalf("an ended task was reported: %v", ups)
	}
	// A removed task that comes back is reported again.
	e.Assign(false, nil, []string{"b"})
	e.Assign(false, []*shoalv1.Task{mk("b", shoalv1.TaskState_TASK_STATE_SHUTDOWN)}, nil)
	if ups := e.TakeUpdates(false); len(ups) != 1 {
		t.Fatalf("re-added task: %v", ups)
	}
}

// TestShutdownReportedAgainToANewLeader: a SHUTDOWN reported in one
// session is reported again when a new session's full set still shows the
// task not ended (the old leader may have lost the report when it stepped
// down), and not when the set shows it ended.
func TestShutdownReportedAgainToANewLeader(t *testing.T) {
	e := New()
	sent := 0
	for i, step := range []struct {
		state shoalv1.TaskState
		want  int // reports sent so far
	}{
		{shoalv1.TaskState_TASK_STATE_ASSIGNED, 1}, // first session
		{shoalv1.TaskState_TASK_STATE_ASSIGNED, 2}, // new session, the report was lost
		{shoalv1.TaskState_TASK_STATE_SHUTDOWN, 2}, // new session, the report was recorded
	} {
		e.Assign(true, []*shoalv1.Task{{Meta: &shoalv1.Meta{Id: "t1"}, DesiredState: shoalv1.TaskState_TASK_STATE_REMOVE,
			Status: &shoalv1.TaskStatus{State: step.state}}}, nil)
		sent += len(e.TakeUpdates(true))
		if sent != step.want {
			t.Fatalf("session %d: %d reports sent, want %d", i+1, sent, step.want)
		}
	}
}
