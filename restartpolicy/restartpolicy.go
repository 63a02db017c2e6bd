package restartpolicy

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

const (
	stateRunning  = shoalv1.TaskState_TASK_STATE_RUNNING
	stateComplete = shoalv1.TaskState_TASK_STATE_COMPLETE
	stateFailed   = shoalv1.TaskState_TASK_STATE_FAILED
	stateRejected = shoalv1.TaskState_TASK_STATE_REJECTED
	stateOrphaned = shoalv1.TaskState_TASK_STATE_ORPHANED
)

// Decide says what svc's restart policy makes of a slot whose tasks are
// tasks (all of one slot, or of one node for a global service, live ones
// included): create a replacement now (restart), look again after retry
// (a restart delay or a max_attempts window is pending), or neither, for
// good, with the reason why. The rules:
//
//   - a slot without tasks, or whose newest task (CompareAge) is live, was
//     stopped by the orchestrator (desired state past RUNNING: scale down
//     and up, drain, update) or was built from an older spec, gets a task
//     at once: that is not a restart;
//   - otherwise the newest task ended on its own, and condition ANY
//     restarts it, ON_FAILURE only after FAILED, REJECTED or ORPHANED,
//     NONE never;
//   - an ORPHANED task (its node was lost) is replaced at once: neither the
//     delay (meant against crash loops) nor max_attempts holds it back;
//   - max_attempts counts restarts after the first run, so N allows N+1
//     ends (Attempts) before giving up; with a window, only ends within it
//     count, and the slot is looked at again when the oldest counted end
//     leaves it;
//   - not before Delay after the newest task ended: delay_ms, doubled for
//     each earlier end in the slot's current streak, up to max_delay_ms
//     (Streak, Delay).
func Decide(svc *shoalv1.Service, tasks []*shoalv1.Task, now time.Time) (restart bool, retry time.Duration, never string) {
	if len(tasks) == 0 {
		return true, 0, ""
	}
	latest := slices.MaxFunc(tasks, CompareAge)
	if latest.GetStatus().GetState() < stateComplete || latest.GetDesiredState() > stateRunning {
		return true, 0, ""
	}
	if latest.GetSpecVersion() != svc.GetSpecVersion() {
		// The service changed since the task ended: an update starts
		// afresh, whatever the restart policy says.
		return true, 0, ""
	}
	pol := svc.GetSpec().GetTask().GetRestart()
	switch pol.GetCondition() {
	case shoalv1.RestartCondition_RESTART_CONDITION_NONE:
		return false, 0, "restart condition none: it is not restarted"
	case shoalv1.RestartCondition_RESTART_CONDITION_ON_FAILURE:
		if !IsFailure(latest.GetStatus().GetState()) {
			return false, 0, "restart condition on-failure: a task that ended without failing is not restarted"
		}
	}
	if latest.GetStatus().GetState() == stateOrphaned {
		return true, 0, ""
	}
	if limit := pol.GetMaxAttempts(); limit > 0 {
		if counted := Attempts(svc, tasks, now); int64(len(counted)) > limit {
			window := time.Duration(pol.GetWindowMs()) * time.Millisecond
			if window <= 0 {
				return false, 0, fmt.Sprintf("gave up after %d restarts (restart max attempts)", limit)
			}
			// Below the limit again once the (limit+1)-th newest end
			// leaves the window.
			return false, max(StatusTime(counted[limit]).Add(window).Sub(now), 0), ""
		}
	}
	ready := StatusTime(latest).Add(Delay(pol, Streak(svc, tasks)))
	if now.Before(ready) {
		return false, ready.Sub(now), ""
	}
	return true, 0, ""
}

// Attempts returns, newest end first, the tasks that count towards svc's
// max_attempts: ended on their own (desired state still RUNNING, not
// ORPHANED) from the current spec, within the policy's window of now (0:
// ever).
func Attempts(svc *shoalv1.Service, tasks []*shoalv1.Task, now time.Time) []*shoalv1.Task {
	window := time.Duration(svc.GetSpec().GetTask().GetRestart().GetWindowMs()) * time.Millisecond
	var out []*shoalv1.Task
	for _, t := range tasks {
		if t.GetStatus().GetState() < stateComplete || t.GetDesiredState() > stateRunning ||
			t.GetSpecVersion() != svc.GetSpecVersion() || t.GetStatus().GetState() == stateOrphaned {
			continue
		}
		if window > 0 && !StatusTime(t).After(now.Add(-window)) {
			continue
		}
		out = append(out, t)
	}
	slices.SortFunc(out, CompareEnded)
	return out
}

// Streak counts the slot's consecutive restarts-to-be: its tasks of the
// current spec that ended on their own (desired state still RUNNING, not
// ORPHANED), newest first, up to the first task that does not (stopped by
// the orchestrator, built from an older spec, orphaned, or still live). A
// task that stayed up at least max_delay_ms before it ended (from its
// creation to its end) was not crash-looping: it is counted, and ends the
// streak, so a service that failed once a week is not held back by the
// cap. With max_delay_ms 0 there is no back-off and the streak is not
// needed.
func Streak(svc *shoalv1.Service, tasks []*shoalv1.Task) int {
	pol := svc.GetSpec().GetTask().GetRestart()
	reset := time.Duration(pol.GetMaxDelayMs()) * time.Millisecond
	sorted := slices.Clone(tasks)
	slices.SortFunc(sorted, func(a, b *shoalv1.Task) int { return CompareAge(b, a) })
	n := 0
	for _, t := range sorted {
		st := t.GetStatus().GetState()
		if st < stateComplete || st == stateOrphaned || t.GetDesiredState() > stateRunning || t.GetSpecVersion() != svc.GetSpecVersion() {
			break
		}
		n++
		if c := createdTime(t); !c.IsZero() && StatusTime(t).Sub(c) >= reset {
			break
		}
	}
	return n
}

// Delay is the wait before a restart after a streak of n ends on their own
// (Streak): delay_ms for the first, doubled for each one before it, up to
// max_delay_ms. max_delay_ms 0 means no back-off (always delay_ms); a cap
// below delay_ms is not one (the API refuses it) and leaves delay_ms.
func Delay(pol *shoalv1.RestartPolicy, n int) time.Duration {
	d := time.Duration(pol.GetDelayMs()) * time.Millisecond
	limit := time.Duration(pol.GetMaxDelayMs()) * time.Millisecond
	if limit <= d || d <= 0 {
		return d
	}
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// IsFailure: the task ended because something went wrong, which is what
// RESTART_CONDITION_ON_FAILURE restarts.
func IsFailure(s shoalv1.TaskState) bool {
	return s == stateFailed || s == stateRejected || s == stateOrphaned
}

// StatusTime is the time of t's last status (zero if none).
func StatusTime(t *shoalv1.Task) time.Time {
	if ts := t.GetStatus().GetTimestamp(); ts != nil {
		return ts.AsTime()
	}
	return time.Time{}
}

func createdTime(t *shoalv1.Task) time.Time {
	if ts := t.GetMeta().GetCreatedAt(); ts != nil {
		return ts.AsTime()
	}
	return time.Time{}
}

// CompareAge orders tasks oldest first: by creation, then status time, then
// id (the newest task of a slot is its MaxFunc).
func CompareAge(a, b *shoalv1.Task) int {
	return cmp.Or(
		createdTime(a).Compare(createdTime(b)),
		StatusTime(a).Compare(StatusTime(b)),
		cmp.Compare(a.GetMeta().GetId(), b.GetMeta().GetId()),
	)
}

// CompareEnded orders terminal tasks newest first by the time they ended.
func CompareEnded(a, b *shoalv1.Task) int {
	return cmp.Or(
		StatusTime(b).Compare(StatusTime(a)),
		cmp.Compare(a.GetMeta().GetId(), b.GetMeta().GetId()),
	)
}
