package dispatcher

import (
	"errors"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func task(id, node string, state shoalv1.TaskState) *shoalv1.Task {
	return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, NodeId: node, Status: &shoalv1.TaskStatus{State: state}}
}

func TestCheckTransition(t *testing.T) {
	st := func(s shoalv1.TaskState) *shoalv1.TaskStatus { return &shoalv1.TaskStatus{State: s} }
	tests := []struct {
		name    string
		task    *shoalv1.Task
		node    string
		to      shoalv1.TaskState
		wantErr bool
	}{
		{"accept", task("t", "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED), "n1", shoalv1.TaskState_TASK_STATE_ACCEPTED, false},
		{"run", task("t", "n1", shoalv1.TaskState_TASK_STATE_STARTING), "n1", shoalv1.TaskState_TASK_STATE_RUNNING, false},
		// An identical repeat (a new session resends all) is skipped.
		{"same status again", task("t", "n1", shoalv1.TaskState_TASK_STATE_RUNNING), "n1", shoalv1.TaskState_TASK_STATE_RUNNING, true},
		{"other node", task("t", "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED), "n2", shoalv1.TaskState_TASK_STATE_ACCEPTED, true},
		{"backwards", task("t", "n1", shoalv1.TaskState_TASK_STATE_RUNNING), "n1", shoalv1.TaskState_TASK_STATE_STARTING, true},
		{"out of terminal", task("t", "n1", shoalv1.TaskState_TASK_STATE_FAILED), "n1", shoalv1.TaskState_TASK_STATE_FAILED, true},
		{"manager-owned state", task("t", "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED), "n1", shoalv1.TaskState_TASK_STATE_PENDING, true},
		{"orphaned is the manager's", task("t", "n1", shoalv1.TaskState_TASK_STATE_RUNNING), "n1", shoalv1.TaskState_TASK_STATE_ORPHANED, true},
		{"shutdown", task("t", "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED), "n1", shoalv1.TaskState_TASK_STATE_SHUTDOWN, false},
	}
	// Same state with new details is recorded.
	if err := checkTransition(task("t", "n1", shoalv1.TaskState_TASK_STATE_RUNNING), "n1",
		&shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING, Pid: 42}); err != nil {
		t.Errorf("same state, new pid: %v", err)
	}
	if err := checkTransition(task("t", "n1", shoalv1.TaskState_TASK_STATE_RUNNING), "n1", st(shoalv1.TaskState_TASK_STATE_RUNNING)); !errors.Is(err, errAlreadyRecorded) {
		t.Errorf("identical repeat: %v, want errAlreadyRecorded", err)
	}
	// A node's end of a task the managers already ended (orphaned while the
	// node was away) is skipped quietly, not refused with a warning.
	if err := checkTransition(task("t", "n1", shoalv1.TaskState_TASK_STATE_ORPHANED), "n1", st(shoalv1.TaskState_TASK_STATE_SHUTDOWN)); !errors.Is(err, errAlreadyRecorded) {
		t.Errorf("shutdown after orphaned: %v, want errAlreadyRecorded", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkTransition(tt.task, tt.node, st(tt.to))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func TestAssigned(t *testing.T) {
	for s, want := range map[shoalv1.TaskState]bool{
		shoalv1.TaskState_TASK_STATE_PENDING:  false,
		shoalv1.TaskState_TASK_STATE_ASSIGNED: true,
		shoalv1.TaskState_TASK_STATE_RUNNING:  true,
		// Finished tasks stay with their node (their logs) until deleted.
		shoalv1.TaskState_TASK_STATE_COMPLETE: true,
		shoalv1.TaskState_TASK_STATE_ORPHANED: true,
	} {
		if got := assigned(task("t", "n", s)); got != want {
			t.Errorf("assigned(%s) = %v", s, got)
		}
	}
}
