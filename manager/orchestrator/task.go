package orchestrator

import (
	"cmp"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/restartpolicy"
)

// HistoryLimit is how many terminal tasks a slot (or a global service's
// node) keeps for `service ps` by default; older ones are deleted (the
// cluster setting task_history_limit overrides it; see Reapable).
const HistoryLimit = 5

// Status messages the orchestrator writes.
const (
	msgPending       = "pending"
	msgNeverAssigned = "shut down before reaching a node"
	msgNodeDown      = "node down"
	msgNodeRemoved   = "node removed"
)

// Short names for the states the rules talk about.
const (
	statePending  = shoalv1.TaskState_TASK_STATE_PENDING
	stateAssigned = shoalv1.TaskState_TASK_STATE_ASSIGNED
	stateRunning  = shoalv1.TaskState_TASK_STATE_RUNNING
	stateComplete = shoalv1.TaskState_TASK_STATE_COMPLETE
	stateShutdown = shoalv1.TaskState_TASK_STATE_SHUTDOWN
	stateFailed   = shoalv1.TaskState_TASK_STATE_FAILED
	stateRejected = shoalv1.TaskState_TASK_STATE_REJECTED
	stateOrphaned = shoalv1.TaskState_TASK_STATE_ORPHANED
	stateRemove   = shoalv1.TaskState_TASK_STATE_REMOVE
)

// isLive: the task is wanted and has not ended. A slot is satisfied by
// exactly one live task.
func isLive(t *shoalv1.Task) bool {
	return t.GetDesiredState() <= stateRunning && t.GetStatus().GetState() < stateComplete
}

// isTerminal: the task has ended (COMPLETE, SHUTDOWN, FAILED, REJECTED or
// ORPHANED) and will never run again.
func isTerminal(t *shoalv1.Task) bool {
	return t.GetStatus().GetState() >= stateComplete
}

// neverReachedAgent: no agent holds the task, so the manager may close it.
func neverReachedAgent(t *shoalv1.Task) bool {
	return t.GetStatus().GetState() <= statePending
}

// isFailure: the task ended because something went wrong, which is what
// RESTART_CONDITION_ON_FAILURE restarts.
func isFailure(s shoalv1.TaskState) bool { return restartpolicy.IsFailure(s) }

func statusTime(t *shoalv1.Task) time.Time { return restartpolicy.StatusTime(t) }

func createdTime(t *shoalv1.Task) time.Time {
	if ts := t.GetMeta().GetCreatedAt(); ts != nil {
		return ts.AsTime()
	}
	return time.Time{}
}

// compareAge orders tasks oldest first: by creation, then status time, then
// id so that the order is total and deterministic.
func compareAge(a, b *shoalv1.Task) int { return restartpolicy.CompareAge(a, b) }

// compareEnded orders terminal tasks newest first by the time they ended.
func compareEnded(a, b *shoalv1.Task) int { return restartpolicy.CompareEnded(a, b) }

func cloneTask(t *shoalv1.Task) *shoalv1.Task { return proto.Clone(t).(*shoalv1.Task) }

// newTask builds the task for a slot (replicated) or node (global) from
// the service's current task template. The task shares the service's
// TaskSpec (stored objects are never changed in place, and a task is
// cloned before any change): no copy per task, and the store writes a
// task holding its service's spec at its spec version as a compact
// TASK_CREATE op (raftstore/taskbulk.go).
func newTask(svc *shoalv1.Service, slot uint64, nodeID string, now time.Time) *shoalv1.Task {
	spec := svc.GetSpec().GetTask()
	if spec == nil {
		spec = &shoalv1.TaskSpec{}
	}
	return &shoalv1.Task{
		Meta:         &shoalv1.Meta{Id: raftstore.NewID()},
		ServiceId:    svc.GetMeta().GetId(),
		ServiceName:  svc.GetSpec().GetName(),
		Slot:         slot,
		NodeId:       nodeID,
		DesiredState: stateRunning,
		Status:       &shoalv1.TaskStatus{State: statePending, Timestamp: timestamppb.New(now), Message: msgPending},
		Spec:         spec,
		SpecVersion:  svc.GetSpecVersion(),
	}
}

// shutDown asks for the task to stop (t is already a clone). A task no
// agent holds is closed at once: managers own the states up to ASSIGNED,
// and nobody else would ever report on it.
func shutDown(t *shoalv1.Task, now time.Time) {
	if t.DesiredState < shoalv1.TaskState_TASK_STATE_SHUTDOWN {
		t.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN
	}
	if neverReachedAgent(t) {
		closeTask(t, now)
	}
}

// closeTask moves a task no agent holds to SHUTDOWN.
func closeTask(t *shoalv1.Task, now time.Time) {
	t.Status = &shoalv1.TaskStatus{State: stateShutdown, Timestamp: timestamppb.New(now), Message: msgNeverAssigned}
}

func sortByID(ts []*shoalv1.Task) {
	slices.SortFunc(ts, func(a, b *shoalv1.Task) int { return cmp.Compare(a.GetMeta().GetId(), b.GetMeta().GetId()) })
}
