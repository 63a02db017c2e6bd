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

// Back-off: the delay doubles with each end of the slot's streak, up to
// the cap; a task that stayed up for the cap resets it; no cap, no
// back-off.
func TestBackoff(t *testing.T) {
	now := time.Now()
	const (
		failed   = shoalv1.TaskState_TASK_STATE_FAILED
		shutdown = shoalv1.TaskState_TASK_STATE_SHUTDOWN
		orphaned = shoalv1.TaskState_TASK_STATE_ORPHANED
	)
	// task i was created at -(100-i) min and lived `lived` before ending.
	mk := func(i int, lived time.Duration, st shoalv1.TaskState, desired shoalv1.TaskState) *shoalv1.Task {
		c := now.Add(-time.Duration(100-i) * time.Minute)
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: string(rune('a' + i)), CreatedAt: timestamppb.New(c)}, SpecVersion: 1,
			DesiredState: desired, Status: &shoalv1.TaskStatus{State: st, Timestamp: timestamppb.New(c.Add(lived))}}
	}
	run := shoalv1.TaskState_TASK_STATE_RUNNING
	stop := shoalv1.TaskState_TASK_STATE_SHUTDOWN
	crash := func(i int) *shoalv1.Task { return mk(i, time.Second, failed, run) }
	pol := func(delay, maxDelay time.Duration) *shoalv1.Service {
		return &shoalv1.Service{SpecVersion: 1, Spec: &shoalv1.ServiceSpec{Task: &shoalv1.TaskSpec{Restart: &shoalv1.RestartPolicy{
			DelayMs: delay.Milliseconds(), MaxDelayMs: maxDelay.Milliseconds()}}}}
	}
	for _, tc := range []struct {
		name   string
		svc    *shoalv1.Service
		tasks  []*shoalv1.Task
		streak int
		delay  time.Duration
	}{
		{"first end: delay", pol(time.Second, time.Minute), []*shoalv1.Task{crash(1)}, 1, time.Second},
		{"second: doubled", pol(time.Second, time.Minute), []*shoalv1.Task{crash(1), crash(2)}, 2, 2 * time.Second},
		{"fourth: x8", pol(time.Second, time.Minute), []*shoalv1.Task{crash(1), crash(2), crash(3), crash(4)}, 4, 8 * time.Second},
		{"capped", pol(time.Second, 5*time.Second), []*shoalv1.Task{crash(1), crash(2), crash(3), crash(4)}, 4, 5 * time.Second},
		{"no cap: no back-off", pol(time.Second, 0), []*shoalv1.Task{crash(1), crash(2), crash(3)}, 1, time.Second},
		{"a stop by the orchestrator ends the streak", pol(time.Second, time.Minute),
			[]*shoalv1.Task{crash(1), crash(2), mk(3, time.Second, shutdown, stop), crash(4)}, 1, time.Second},
		{"an orphaned task ends the streak", pol(time.Second, time.Minute),
			[]*shoalv1.Task{crash(1), mk(2, time.Second, orphaned, run), crash(3), crash(4)}, 2, 2 * time.Second},
		{"a task that stayed up for the cap resets it", pol(time.Second, time.Minute),
			[]*shoalv1.Task{crash(1), crash(2), mk(3, 2*time.Minute, failed, run), crash(4)}, 2, 2 * time.Second},
		{"an older spec ends the streak", pol(time.Second, time.Minute),
			[]*shoalv1.Task{func() *shoalv1.Task { t := crash(1); t.SpecVersion = 0; return t }(), crash(2), crash(3)}, 2, 2 * time.Second},
	} {
		n := Streak(tc.svc, tc.tasks)
		d := Delay(tc.svc.GetSpec().GetTask().GetRestart(), n)
		if n != tc.streak || d != tc.delay {
			t.Errorf("%s: streak %d, delay %s; want %d, %s", tc.name, n, d, tc.streak, tc.delay)
		}
	}
	// Decide waits the backed-off delay.
	svc := pol(time.Second, time.Minute)
	last := crash(4)
	last.Meta.CreatedAt = timestamppb.New(now.Add(-4 * time.Second))
	last.Status.Timestamp = timestamppb.New(now.Add(-3 * time.Second))
	if restart, retry, _ := Decide(svc, []*shoalv1.Task{crash(1), crash(2), crash(3), last}, now); restart || retry != 5*time.Second {
		t.Errorf("Decide after 4 crashes, 3 s ago: restart %v retry %s; want a retry in 5s (8 s back-off)", restart, retry)
	}
}
