package restartpolicy

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// The orchestrator's table tests (manager/orchestrator) cover the rules
// through its reconciler; these pin what the CLI relies on: a verdict of
// "never" comes with its reason, and only then.
func TestDecide(t *testing.T) {
	now := time.Now()
	ended := func(id string, ago time.Duration, st shoalv1.TaskState) *shoalv1.Task {
		ts := timestamppb.New(now.Add(-ago))
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id, CreatedAt: ts}, SpecVersion: 1,
			DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING, Status: &shoalv1.TaskStatus{State: st, Timestamp: ts}}
	}
	svc := func(pol *shoalv1.RestartPolicy) *shoalv1.Service {
		return &shoalv1.Service{SpecVersion: 1, Spec: &shoalv1.ServiceSpec{Task: &shoalv1.TaskSpec{Restart: pol}}}
	}
	const (
		failed   = shoalv1.TaskState_TASK_STATE_FAILED
		complete = shoalv1.TaskState_TASK_STATE_COMPLETE
		orphaned = shoalv1.TaskState_TASK_STATE_ORPHANED
	)
	none := &shoalv1.RestartPolicy{Condition: shoalv1.RestartCondition_RESTART_CONDITION_NONE}
	onFailure := &shoalv1.RestartPolicy{Condition: shoalv1.RestartCondition_RESTART_CONDITION_ON_FAILURE}
	for _, tc := range []struct {
		name    string
		svc     *shoalv1.Service
		tasks   []*shoalv1.Task
		restart bool
		retry   bool // a retry > 0
		never   bool
	}{
		{"empty slot", svc(nil), nil, true, false, false},
		{"any: failed", svc(nil), []*shoalv1.Task{ended("a", time.Minute, failed)}, true, false, false},
		{"any: delay pending", svc(&shoalv1.RestartPolicy{DelayMs: 60_000}), []*shoalv1.Task{ended("a", time.Second, failed)}, false, true, false},
		{"none", svc(none), []*shoalv1.Task{ended("a", time.Minute, failed)}, false, false, true},
		{"none: orphaned", svc(none), []*shoalv1.Task{ended("a", time.Minute, orphaned)}, false, false, true},
		{"on-failure: complete", svc(onFailure), []*shoalv1.Task{ended("a", time.Minute, complete)}, false, false, true},
		{"on-failure: orphaned", svc(onFailure), []*shoalv1.Task{ended("a", time.Minute, orphaned)}, true, false, false},
		{"max 1: first run ended", svc(&shoalv1.RestartPolicy{MaxAttempts: 1}), []*shoalv1.Task{ended("a", time.Minute, failed)}, true, false, false},
		{"max 1: restart ended too", svc(&shoalv1.RestartPolicy{MaxAttempts: 1}),
			[]*shoalv1.Task{ended("a", 2*time.Minute, failed), ended("b", time.Minute, failed)}, false, false, true},
		{"max 1 in a window", svc(&shoalv1.RestartPolicy{MaxAttempts: 1, WindowMs: 600_000}),
			[]*shoalv1.Task{ended("a", 2*time.Minute, failed), ended("b", time.Minute, failed)}, false, true, false},
	} {
		restart, retry, never := Decide(tc.svc, tc.tasks, now)
		if restart != tc.restart || (retry > 0) != tc.retry || (never != "") != tc.never {
			t.Errorf("%s: Decide = %v, %v, %q; want restart %v, retry %v, never %v", tc.name, restart, retry, never, tc.restart, tc.retry, tc.never)
		}
	}
}
