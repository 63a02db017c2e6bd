package orchestrator

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/restartpolicy"
)

// Update defaults, as in swarm mode: they apply to a service without an
// update (or rollback) config, and monitor to a config that leaves it 0.
const (
	DefaultUpdateParallelism = 1
	DefaultUpdateMonitor     = 5 * time.Second
	DefaultUpdateOrder       = "stop-first"
	DefaultFailureAction     = "pause"
)

// Update states, short.
const (
	updUnknown          = shoalv1.UpdateState_UPDATE_STATE_UNKNOWN
	updUpdating         = shoalv1.UpdateState_UPDATE_STATE_UPDATING
	updPaused           = shoalv1.UpdateState_UPDATE_STATE_PAUSED
	updCompleted        = shoalv1.UpdateState_UPDATE_STATE_COMPLETED
	updRollbackStarted  = shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_STARTED
	updRollbackPaused   = shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_PAUSED
	updRollbackComplete = shoalv1.UpdateState_UPDATE_STATE_ROLLBACK_COMPLETED
)

// updatePolicy is the update config in force for a service's rollout,
// with the defaults filled in.
type updatePolicy struct {
	parallelism int // 0: all at once
	delay       time.Duration
	startFirst  bool
	monitor     time.Duration
	ratio       float64
	action      string // pause, continue or rollback
}

// isRollingBack: the service's latest rollout is a rollback (running,
// paused or done).
func isRollingBack(svc *shoalv1.Service) bool {
	switch svc.GetUpdateStatus().GetState() {
	case updRollbackStarted, updRollbackPaused, updRollbackComplete:
		return true
	}
	return false
}

// rollingBackNow: a rollback is under way (or paused): it runs under the
// rollback config.
func rollingBackNow(svc *shoalv1.Service) bool {
	s := svc.GetUpdateStatus().GetState()
	return s == updRollbackStarted || s == updRollbackPaused
}

// isPaused: a rollout stopped on failures; it stays so until the next
// service update or rollback.
func isPaused(svc *shoalv1.Service) bool {
	s := svc.GetUpdateStatus().GetState()
	return s == updPaused || s == updRollbackPaused
}

// inRollout: the service is rolling out (or paused in the middle of it),
// so task progress (running, healthy) matters to its plan.
func inRollout(svc *shoalv1.Service) bool {
	switch svc.GetUpdateStatus().GetState() {
	case updUpdating, updRollbackStarted, updPaused, updRollbackPaused:
		return true
	}
	return false
}

// policyOf returns the config a service's rollout runs under: spec.update,
// or for a rollback the rollback config of the spec rolled back from (now
// previous_spec: the one given with the update that failed), else the
// current spec's.
func policyOf(svc *shoalv1.Service, rollingBack bool) updatePolicy {
	u := svc.GetSpec().GetUpdate()
	if rollingBack {
		u = svc.GetPreviousSpec().GetRollback()
		if u == nil {
			u = svc.GetSpec().GetRollback()
		}
	}
	return policyFrom(u)
}

func policyFrom(u *shoalv1.UpdateConfig) updatePolicy {
	if u == nil {
		return updatePolicy{parallelism: DefaultUpdateParallelism, monitor: DefaultUpdateMonitor, action: DefaultFailureAction}
	}
	p := updatePolicy{
		parallelism: int(max(u.GetParallelism(), 0)),
		delay:       time.Duration(max(u.GetDelayMs(), 0)) * time.Millisecond,
		startFirst:  u.GetOrder() == "start-first",
		monitor:     time.Duration(u.GetMonitorMs()) * time.Millisecond,
		ratio:       u.GetMaxFailureRatio(),
		action:      u.GetFailureAction(),
	}
	if p.monitor <= 0 {
		p.monitor = DefaultUpdateMonitor
	}
	if p.action == "" {
		p.action = DefaultFailureAction
	}
	return p
}

// runningHealthy is what "running" means for rollouts and discovery: the
// task runs and, if it has a health check, has been found healthy.
func runningHealthy(t *shoalv1.Task) bool {
	if t.GetStatus().GetState() != stateRunning {
		return false
	}
	h := t.GetStatus().GetHealth()
	return h == shoalv1.TaskHealth_TASK_HEALTH_NONE || h == shoalv1.TaskHealth_TASK_HEALTH_HEALTHY
}

// readySince is when a running (and healthy) task became ready, which
// the rollout's monitor and delay count from: when it began running, or,
// for a task with a health check, when the check last had news of it (it
// turned healthy, or a failing probe since). A health report keeps the
// RUNNING status's timestamp (the start), so without this a check slower
// than the monitor would never be monitored at all.
func readySince(t *shoalv1.Task) time.Time {
	since := statusTime(t)
	if t.GetStatus().GetHealth() == shoalv1.TaskHealth_TASK_HEALTH_HEALTHY {
		if at := t.GetStatus().GetHealthCheckedAt(); at != nil && at.AsTime().After(since) {
			since = at.AsTime()
		}
	}
	return since
}

// endedBadly: a task of the rollout that ended on its own while it was
// meant to run (failed, rejected, or exited although the task of a
// service that is not a job should not): it counts as a failed update. Tasks lost with their node
// (ORPHANED) or stopped on purpose do not.
func endedBadly(svc *shoalv1.Service, t *shoalv1.Task) bool {
	if t.GetDesiredState() > stateRunning {
		return false
	}
	switch t.GetStatus().GetState() {
	case stateFailed, stateRejected:
		return true
	case stateComplete:
		return !isJob(svc) // a job's task is meant to complete
	}
	return false
}

func isJob(svc *shoalv1.Service) bool {
	m := svc.GetSpec().GetMode()
	return m == shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB || m == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL_JOB
}

// slotState is what the rollout needs to know of one wanted slot (or
// node) after its reconcile.
type slotState struct {
	g *group
	// outdated: the slot's live task is of an older spec (nil if not).
	outdated *shoalv1.Task
	// current: the slot's live task of the current spec, if any.
	current *shoalv1.Task
	// fellBack: start-first, the current task cannot be placed for want
	// of room the outdated one holds, which is stopped (the scheduler's
	// reason); blocked: it cannot be placed for another reason, and the
	// outdated one keeps serving.
	fellBack, blocked string
}

// unschedulable is the scheduler's reason for a pending task it could not
// place ("" if it was not tried yet or is placed).
func unschedulable(t *shoalv1.Task) string {
	if t.GetNodeId() != "" || t.GetStatus().GetState() != statePending {
		return ""
	}
	if m := t.GetStatus().GetMessage(); m != msgPending {
		return m
	}
	return ""
}

// freedByStopping says whether the scheduler's reason names a cause that
// stopping one of the service's tasks can lift: max replicas per node,
// memory or CPU (scheduler.failureReason's counts).
func freedByStopping(reason string) bool {
	for _, s := range []string{"the maximum of the service's tasks per node", "lack memory", "lacks memory", "lack CPU", "lacks CPU"} {
		if strings.Contains(reason, s) {
			return true
		}
	}
	return false
}

// tally sums up a service's wanted slots for the rollout as they are
// reconciled, keeping only the outdated ones (a pass over a huge service
// costs no memory per settled slot).
type tally struct {
	monitor time.Duration
	now     time.Time
	// total wanted slots; updated: current task ran healthy for monitor;
	// inFlight: no outdated task and the current one not running healthy.
	total, updated, inFlight int
	// lastReady is when the newest current task began running (healthy).
	lastReady time.Time
	// retry: when the next slot passes its monitor.
	retry    time.Duration
	outdated []slotState
	// failed: tasks of the current spec that ended on their own.
	failed []*shoalv1.Task
	// fellBack, blocked: slots whose new task is unschedulable (see
	// slotState), and the first one's reason.
	fellBack, blocked     int
	fellBackWhy, blockWhy string
}

func newTally(svc *shoalv1.Service, now time.Time) *tally {
	return &tally{monitor: policyOf(svc, rollingBackNow(svc)).monitor, now: now}
}

func (t *tally) add(s slotState) {
	t.total++
	if s.fellBack != "" {
		if t.fellBack++; t.fellBack == 1 {
			t.fellBackWhy = s.fellBack
		}
	}
	if s.blocked != "" {
		if t.blocked++; t.blocked == 1 {
			t.blockWhy = s.blocked
		}
	}
	if s.outdated != nil {
		t.outdated = append(t.outdated, s)
		return
	}
	c := s.current
	if c == nil || !runningHealthy(c) {
		t.inFlight++
		return
	}
	since := readySince(c)
	if since.After(t.lastReady) {
		t.lastReady = since
	}
	if left := since.Add(t.monitor).Sub(t.now); left > 0 {
		t.retry = minRetry(t.retry, left)
		return
	}
	t.updated++
}

// rolloutResult is the rollout's part of a plan.
type rolloutResult struct {
	replace []slotState
	status  *shoalv1.UpdateStatus // nil: unchanged
	// rollback: write the service with its previous spec (status set).
	rollback bool
	retry    time.Duration
}

// planRollout decides, from the store's state alone (tasks of the
// current spec_version and the service's update_status), which outdated
// slots are replaced now and what the update status becomes. A new leader
// computing it over the same store continues the rollout where it was:
// slots in flight are counted from their tasks, never from memory.
//
//   - a slot is in flight while it has no outdated live task and its
//     current task is not yet running (and healthy); at most parallelism
//     (0: all) slots are in flight, and a new one starts no sooner than
//     delay after the newest current task became running.
//   - a slot is updated once its current task has been running (and
//     healthy) for monitor; the rollout completes when every wanted slot
//     is updated.
//   - every task of the current spec that ended on its own (failed,
//     rejected, exited) counts as failed; once failed/slots exceeds
//     max_failure_ratio, failure_action applies: pause (PAUSED, nothing
//     more is replaced until the next update), continue (ignored), or
//     rollback (the previous spec comes back, ROLLBACK_STARTED). A
//     rollback that fails pauses (ROLLBACK_PAUSED).
func planRollout(svc *shoalv1.Service, ty *tally, now time.Time) rolloutResult {
	var res rolloutResult
	cur := svc.GetUpdateStatus()
	state := cur.GetState()
	outdated, failed := ty.outdated, ty.failed
	if isPaused(svc) {
		return res
	}
	status := proto.Clone(cur).(*shoalv1.UpdateStatus)
	if status == nil {
		status = &shoalv1.UpdateStatus{}
	}
	switch state {
	case updUpdating, updRollbackStarted:
	default:
		if len(outdated) == 0 {
			return res
		}
		// A spec change the control API did not mark (or a service
		// that predates update status): roll it out all the same.
		status = &shoalv1.UpdateStatus{State: updUpdating, StartedAt: timestamppb.New(now), Message: msgUpdating}
		state = updUpdating
	}
	rollingBack := state == updRollbackStarted
	pol := policyOf(svc, rollingBack)
	total, updated, inFlight, lastReady := ty.total, ty.updated, ty.inFlight, ty.lastReady
	res.retry = ty.retry
	status.Updated = int64(updated)
	status.Failed = int64(len(failed))

	if len(failed) > 0 && pol.action != "continue" && float64(len(failed)) > pol.ratio*float64(total) {
		why := failureText(len(failed), total, failed)
		switch {
		case rollingBack:
			status.State, status.Message = updRollbackPaused, "rollback paused: "+why
		case pol.action == "rollback" && svc.GetPreviousSpec() != nil:
			res.rollback = true
			status = &shoalv1.UpdateStatus{State: updRollbackStarted, StartedAt: timestamppb.New(now),
				Message: "update rolled back: " + why}
		default:
			status.State, status.Message = updPaused, "update paused: "+why
		}
		res.status, res.retry = status, 0
		return res
	}

	if len(outdated) == 0 && updated == total {
		status.State, status.Message = updCompleted, msgCompleted
		if rollingBack {
			status.State, status.Message = updRollbackComplete, msgRollbackCompleted
		}
		status.CompletedAt = timestamppb.New(now)
		res.status, res.retry = status, 0
		return res
	}
	// An unschedulable new task is said in the status (it stays there
	// until the rollout's next state): a rollout that waits says why.
	switch {
	case ty.fellBack > 0:
		status.Message = fmt.Sprintf("start-first fell back to stop-first for %d slot(s), the new task could not be placed: %s", ty.fellBack, ty.fellBackWhy)
	case ty.blocked > 0:
		status.Message = fmt.Sprintf("waiting: %d new task(s) cannot be placed: %s", ty.blocked, ty.blockWhy)
	}
	if !proto.Equal(status, cur) {
		res.status = status
	}

	window := len(outdated)
	if pol.parallelism > 0 {
		window = min(window, max(pol.parallelism-inFlight, 0))
	}
	if window > 0 && pol.delay > 0 && !lastReady.IsZero() {
		if next := lastReady.Add(pol.delay); now.Before(next) {
			res.retry = minRetry(res.retry, next.Sub(now))
			window = 0
		}
	}
	for _, s := range outdated {
		if window == 0 {
			break
		}
		// A slot whose new task ended on its own waits for the restart
		// policy (delay, max attempts) before it is tried again: an
		// update must not turn a crashing image into a restart storm.
		if ok, retry := s.mayRetry(now); !ok {
			res.retry = minRetry(res.retry, retry)
			continue
		}
		res.replace = append(res.replace, s)
		window--
	}
	return res
}

// mayRetry applies the restart policy to a slot's ended tasks of the
// current spec, as if its outdated task were not there.
func (s *slotState) mayRetry(now time.Time) (bool, time.Duration) {
	var ended []*shoalv1.Task
	for _, t := range s.g.tasks {
		if !isLive(t) {
			ended = append(ended, t)
		}
	}
	ok, retry, _ := restartpolicy.Decide(s.g.svc, ended, now)
	return ok, retry
}

// Update status messages.
const (
	msgUpdating          = "update in progress"
	msgCompleted         = "update completed"
	msgRollbackCompleted = "rollback completed"
)

// failureText is "2 of 5 tasks failed: task x: exit code 1" (the newest
// failure named).
func failureText(n, total int, failed []*shoalv1.Task) string {
	last := slices.MinFunc(failed, compareEnded) // newest first
	return fmt.Sprintf("%d of %d tasks failed: task %s: %s", n, total, last.GetMeta().GetId(), endReason(last))
}

// endReason says briefly why a task ended.
func endReason(t *shoalv1.Task) string {
	st := t.GetStatus()
	switch {
	case st.GetErr() != "":
		return st.GetErr()
	case st.GetState() == stateFailed || st.GetState() == stateComplete:
		return fmt.Sprintf("exit code %d", st.GetExitCode())
	case st.GetMessage() != "":
		return st.GetMessage()
	}
	return strings.ToLower(stateName(st.GetState()))
}

func stateName(s shoalv1.TaskState) string {
	n := s.String()
	const p = "TASK_STATE_"
	if len(n) > len(p) {
		n = n[len(p):]
	}
	return n
}

// RolledBack returns the service with its previous spec as its spec (and
// the spec it had as previous_spec), a new spec_version if the task spec
// differs, and the update
// status of a rollback that starts now with message msg. The control API
// (RollbackService) and the orchestrator (failure_action rollback) use
// it; svc must have a previous spec.
func RolledBack(svc *shoalv1.Service, now time.Time, msg string) *shoalv1.Service {
	out := proto.Clone(svc).(*shoalv1.Service)
	out.Spec, out.PreviousSpec = out.PreviousSpec, out.Spec
	if !proto.Equal(out.GetSpec().GetTask(), out.GetPreviousSpec().GetTask()) {
		out.SpecVersion++
	}
	out.UpdateStatus = &shoalv1.UpdateStatus{State: updRollbackStarted, StartedAt: timestamppb.New(now), Message: msg}
	return out
}
