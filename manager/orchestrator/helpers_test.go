package orchestrator

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// t0 is the tests' "now".
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func ago(d time.Duration) time.Time { return t0.Add(-d) }

type svcOpt func(*shoalv1.Service)

func mkService(id string, replicas int64, opts ...svcOpt) *shoalv1.Service {
	s := &shoalv1.Service{
		Meta: &shoalv1.Meta{Id: id, Version: 7},
		Spec: &shoalv1.ServiceSpec{
			Name: "svc-" + id, Replicas: replicas,
			Task: &shoalv1.TaskSpec{
				Container: &shoalv1.ContainerSpec{Image: "demo@sha256:1"},
				Restart:   &shoalv1.RestartPolicy{Condition: shoalv1.RestartCondition_RESTART_CONDITION_ANY},
				Placement: &shoalv1.Placement{},
			},
		},
		SpecVersion: 1,
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func global() svcOpt {
	return func(s *shoalv1.Service) { s.Spec.Mode = shoalv1.ServiceMode_SERVICE_MODE_GLOBAL; s.Spec.Replicas = 0 }
}
func specVersion(v uint64) svcOpt { return func(s *shoalv1.Service) { s.SpecVersion = v } }
func restart(c shoalv1.RestartCondition, delay, maxAttempts, window time.Duration) svcOpt {
	return func(s *shoalv1.Service) {
		s.Spec.Task.Restart = &shoalv1.RestartPolicy{
			Condition: c, DelayMs: delay.Milliseconds(), MaxAttempts: int64(maxAttempts), WindowMs: window.Milliseconds(),
		}
	}
}
func svcConstraints(cs ...string) svcOpt {
	return func(s *shoalv1.Service) { s.Spec.Task.Placement.Constraints = cs }
}

var (
	condAny       = shoalv1.RestartCondition_RESTART_CONDITION_ANY
	condOnFailure = shoalv1.RestartCondition_RESTART_CONDITION_ON_FAILURE
	condNone      = shoalv1.RestartCondition_RESTART_CONDITION_NONE
)

type taskOpt func(*shoalv1.Task)

// mkTask makes a task of service svc in a slot, RUNNING on node n1 and
// desired RUNNING, created at t0-1h and with status time t0-1h, version 3.
func mkTask(id, svc string, slot uint64, opts ...taskOpt) *shoalv1.Task {
	t := &shoalv1.Task{
		Meta:         &shoalv1.Meta{Id: id, Version: 3, CreatedAt: timestamppb.New(ago(time.Hour))},
		ServiceId:    svc,
		ServiceName:  "svc-" + svc,
		Slot:         slot,
		NodeId:       "n1",
		DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING,
		Status:       &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING, Timestamp: timestamppb.New(ago(time.Hour))},
		Spec:         &shoalv1.TaskSpec{},
		SpecVersion:  1,
	}
	for _, o := range opts {
		o(t)
	}
	return t
}

func st(s shoalv1.TaskState) taskOpt { return func(t *shoalv1.Task) { t.Status.State = s } }
func desired(s shoalv1.TaskState) taskOpt {
	return func(t *shoalv1.Task) { t.DesiredState = s }
}
func onNode(n string) taskOpt { return func(t *shoalv1.Task) { t.NodeId = n } }
func version(v uint64) taskOpt {
	return func(t *shoalv1.Task) { t.SpecVersion = v }
}
func created(at time.Time) taskOpt {
	return func(t *shoalv1.Task) { t.Meta.CreatedAt = timestamppb.New(at) }
}
func ended(s shoalv1.TaskState, at time.Time) taskOpt {
	return func(t *shoalv1.Task) {
		t.Status = &shoalv1.TaskStatus{State: s, Timestamp: timestamppb.New(at)}
	}
}

// Short state names for test tables.
const (
	tsPending  = shoalv1.TaskState_TASK_STATE_PENDING
	tsAssigned = shoalv1.TaskState_TASK_STATE_ASSIGNED
	tsRunning  = shoalv1.TaskState_TASK_STATE_RUNNING
	tsComplete = shoalv1.TaskState_TASK_STATE_COMPLETE
	tsShutdown = shoalv1.TaskState_TASK_STATE_SHUTDOWN
	tsFailed   = shoalv1.TaskState_TASK_STATE_FAILED
	tsRejected = shoalv1.TaskState_TASK_STATE_REJECTED
	tsOrphaned = shoalv1.TaskState_TASK_STATE_ORPHANED
	tsRemove   = shoalv1.TaskState_TASK_STATE_REMOVE
)

type nodeOpt func(*shoalv1.Node)

func mkNode(id string, opts ...nodeOpt) *shoalv1.Node {
	n := &shoalv1.Node{
		Meta:        &shoalv1.Meta{Id: id, Version: 2},
		Spec:        &shoalv1.NodeSpec{},
		Description: &shoalv1.NodeDescription{Hostname: id, Os: "linux", Arch: "amd64"},
		Status:      &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_READY},
		Role:        shoalv1.NodeRole_NODE_ROLE_WORKER,
	}
	for _, o := range opts {
		o(n)
	}
	return n
}

func down() nodeOpt {
	return func(n *shoalv1.Node) { n.Status.State = shoalv1.NodeState_NODE_STATE_DOWN }
}
func drain() nodeOpt {
	return func(n *shoalv1.Node) { n.Spec.Availability = shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN }
}
func nodeLabel(k, v string) nodeOpt {
	return func(n *shoalv1.Node) {
		if n.Spec.Labels == nil {
			n.Spec.Labels = map[string]string{}
		}
		n.Spec.Labels[k] = v
	}
}

// applyPlan is what the store would hold after writing p: created tasks are
// stamped with now (as the FSM does), updates replace, deletes remove.
func applyPlan(tasks []*shoalv1.Task, p Plan, now time.Time) []*shoalv1.Task {
	byID := map[string]*shoalv1.Task{}
	for _, t := range tasks {
		byID[t.GetMeta().GetId()] = t
	}
	for _, t := range p.Update {
		byID[t.GetMeta().GetId()] = t
	}
	for _, t := range p.Delete {
		delete(byID, t.GetMeta().GetId())
	}
	for _, t := range p.Create {
		c := cloneTask(t)
		c.Meta.CreatedAt = timestamppb.New(now)
		byID[c.GetMeta().GetId()] = c
	}
	out := make([]*shoalv1.Task, 0, len(byID))
	for _, t := range byID {
		out = append(out, t)
	}
	sortByID(out)
	return out
}

// describe renders a plan compactly for comparisons: creates as
// "+slot/node@version", updates as "~id:desired/state", deletes as "-id".
func describe(p Plan) string {
	var parts []string
	for _, t := range p.Create {
		key := fmt.Sprint(t.GetSlot())
		if t.GetNodeId() != "" {
			key = t.GetNodeId()
		}
		parts = append(parts, fmt.Sprintf("+%s@%d", key, t.GetSpecVersion()))
	}
	for _, t := range p.Update {
		parts = append(parts, fmt.Sprintf("~%s:%s/%s", t.GetMeta().GetId(), short(t.GetDesiredState()), short(t.GetStatus().GetState())))
	}
	for _, t := range p.Delete {
		parts = append(parts, "-"+t.GetMeta().GetId())
	}
	slices.Sort(parts)
	if p.RetryAfter > 0 {
		parts = append(parts, fmt.Sprintf("retry=%s", p.RetryAfter))
	}
	return strings.Join(parts, " ")
}

func short(s shoalv1.TaskState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "TASK_STATE_"))
}

// snapshot deep-copies inputs so a test can check they were not changed.
func snapshot[T proto.Message](in []T) []T {
	out := make([]T, len(in))
	for i, m := range in {
		out[i] = proto.Clone(m).(T)
	}
	return out
}

func sameMessages[T proto.Message](t *testing.T, what string, got, want []T) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d messages, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("%s[%d] was changed:\n got %v\nwant %v", what, i, got[i], want[i])
		}
	}
}
