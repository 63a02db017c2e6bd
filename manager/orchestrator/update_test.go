package orchestrator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/scheduler"
)

// updateCfg sets spec.update.
func updateCfg(parallelism int64, delay, monitor time.Duration, order, action string, ratio float64) svcOpt {
	return func(s *shoalv1.Service) {
		s.Spec.Update = &shoalv1.UpdateConfig{Parallelism: parallelism, DelayMs: delay.Milliseconds(),
			MonitorMs: monitor.Milliseconds(), Order: order, FailureAction: action, MaxFailureRatio: ratio}
	}
}

// allAtOnce: update parallelism 0.
func allAtOnce() svcOpt { return updateCfg(0, 0, 0, "", "", 0) }

func updState(st shoalv1.UpdateState) svcOpt {
	return func(s *shoalv1.Service) {
		s.UpdateStatus = &shoalv1.UpdateStatus{State: st, StartedAt: timestamppb.New(ago(time.Hour))}
	}
}

// withPrevious gives the service a previous spec (image demo@sha256:0).
func withPrevious() svcOpt {
	return func(s *shoalv1.Service) {
		prev := proto.Clone(s.Spec).(*shoalv1.ServiceSpec)
		prev.Task.Container.Image = "demo@sha256:0"
		s.PreviousSpec = prev
	}
}

func since(d time.Duration) taskOpt {
	return func(t *shoalv1.Task) { t.Status.Timestamp = timestamppb.New(ago(d)) }
}

// healthySince: the task's check found it healthy d ago (its last health
// news).
func healthySince(d time.Duration) taskOpt {
	return func(t *shoalv1.Task) {
		t.Status.Health = shoalv1.TaskHealth_TASK_HEALTH_HEALTHY
		t.Status.HealthCheckedAt = timestamppb.New(ago(d))
	}
}

func exited(code int32, at time.Time) taskOpt {
	return func(t *shoalv1.Task) {
		t.Status = &shoalv1.TaskStatus{State: tsFailed, Timestamp: timestamppb.New(at), ExitCode: code}
	}
}

// describeRollout is describe plus the service the plan writes:
// "status=STATE updated/failed [message]" and "rollback->vN".
func describeRollout(p Plan) string {
	d := describe(p)
	if p.Service != nil {
		st := p.Service.GetUpdateStatus()
		s := fmt.Sprintf("status=%s %d/%d", strings.TrimPrefix(st.GetState().String(), "UPDATE_STATE_"), st.GetUpdated(), st.GetFailed())
		if m := st.GetMessage(); m != msgUpdating && m != "" {
			s += " [" + m + "]"
		}
		d = strings.TrimSpace(d + " " + s)
	}
	return d
}

func TestRollout(t *testing.T) {
	v2 := specVersion(2)
	old := func(id string, slot uint64, opts ...taskOpt) *shoalv1.Task { return mkTask(id, "s", slot, opts...) }
	cur := func(id string, slot uint64, opts ...taskOpt) *shoalv1.Task {
		return mkTask(id, "s", slot, append([]taskOpt{version(2)}, opts...)...)
	}
	three := []*shoalv1.Task{old("a", 1), old("b", 2), old("c", 3)}
	sf := func(p int64, opts ...svcOpt) *shoalv1.Service {
		return mkService("s", 3, append([]svcOpt{v2, updateCfg(p, 0, time.Second, "stop-first", "pause", 0)}, opts...)...)
	}
	tests := []struct {
		name  string
		svc   *shoalv1.Service
		tasks []*shoalv1.Task
		want  string
	}{
		{"no update config: parallelism 1, stop-first; the rollout starts", mkService("s", 3, v2), three,
			"+1@2 ~a:shutdown/running status=UPDATING 0/0"},
		{"parallelism 2", sf(2), three, "+1@2 +2@2 ~a:shutdown/running ~b:shutdown/running status=UPDATING 0/0"},
		{"parallelism 0: all at once", sf(0), three,
			"+1@2 +2@2 +3@2 ~a:shutdown/running ~b:shutdown/running ~c:shutdown/running status=UPDATING 0/0"},
		{"a slot in flight (new task not running) holds the window", sf(1, updState(updUpdating)),
			[]*shoalv1.Task{cur("n1", 1, st(tsAssigned)), old("b", 2), old("c", 3)}, ""},
		{"a slot whose new task failed stays in flight (continue: no failure action)",
			mkService("s", 3, v2, updState(updUpdating), updateCfg(1, 0, time.Second, "", "continue", 0), restart(condAny, 10*time.Second, 0, 0)),
			[]*shoalv1.Task{cur("n1", 1, exited(1, ago(time.Second))), old("b", 2), old("c", 3)}, "retry=9s status=UPDATING 0/1"},
		{"a new task running but unhealthy holds the window", sf(1, updState(updUpdating)),
			[]*shoalv1.Task{cur("n1", 1, health(shoalv1.TaskHealth_TASK_HEALTH_STARTING)), old("b", 2), old("c", 3)}, ""},
		{"once the new task runs, the next slot goes (monitor still running: retry)", sf(1, updState(updUpdating)),
			[]*shoalv1.Task{cur("n1", 1, since(200*time.Millisecond)), old("b", 2), old("c", 3)}, "+2@2 ~b:shutdown/running retry=800ms"},
		{"past the monitor a slot counts as updated", sf(1, updState(updUpdating)),
			[]*shoalv1.Task{cur("n1", 1, since(2*time.Second)), old("b", 2), old("c", 3)}, "+2@2 ~b:shutdown/running status=UPDATING 1/0"},
		{"delay: the next slot waits delay after the newest new task began running",
			mkService("s", 3, v2, updState(updUpdating), updateCfg(1, 10*time.Second, time.Second, "", "", 0)),
			[]*shoalv1.Task{cur("n1", 1, since(2*time.Second)), old("b", 2), old("c", 3)}, "retry=8s status=UPDATING 1/0"},
		{"monitor: counted from when the new task was found healthy, not from its start", sf(1, updState(updUpdating)),
			[]*shoalv1.Task{cur("n1", 1, since(time.Minute), healthySince(200*time.Millisecond)), old("b", 2), old("c", 3)},
			"+2@2 ~b:shutdown/running retry=800ms"},
		{"delay: counted from when the newest new task was found healthy",
			mkService("s", 3, v2, updState(updUpdating), updateCfg(1, 10*time.Second, time.Second, "", "", 0)),
			[]*shoalv1.Task{cur("n1", 1, since(time.Minute), healthySince(2*time.Second)), old("b", 2), old("c", 3)}, "retry=8s status=UPDATING 1/0"},
		{"delay over: the next slot goes",
			mkService("s", 3, v2, updState(updUpdating), updateCfg(1, 10*time.Second, time.Second, "", "", 0)),
			[]*shoalv1.Task{cur("n1", 1, since(11*time.Second)), old("b", 2), old("c", 3)}, "+2@2 ~b:shutdown/running status=UPDATING 1/0"},
		{"monitor: the last slot running but not for long enough: not completed yet", sf(1, updState(updUpdating)),
			[]*shoalv1.Task{cur("n1", 1, since(time.Minute)), cur("n2", 2, since(time.Minute)), cur("n3", 3, since(300*time.Millisecond))},
			"retry=700ms status=UPDATING 2/0"},
		{"every slot past the monitor: completed", sf(1, updState(updUpdating)),
			[]*shoalv1.Task{cur("n1", 1), cur("n2", 2), cur("n3", 3)}, "status=COMPLETED 3/0 [update completed]"},
		{"start-first: the new task is added, the old one stays",
			mkService("s", 3, v2, updateCfg(1, 0, time.Second, "start-first", "", 0)), three, "+1@2 status=UPDATING 0/0"},
		{"start-first: the old task stays while the new one is not running",
			mkService("s", 3, v2, updState(updUpdating), updateCfg(1, 0, time.Second, "start-first", "", 0)),
			[]*shoalv1.Task{old("a", 1), cur("n1", 1, st(tsAssigned)), old("b", 2), old("c", 3)}, ""},
		{"start-first: the old task stays while the new one is not healthy",
			mkService("s", 3, v2, updState(updUpdating), updateCfg(1, 0, time.Second, "start-first", "", 0)),
			[]*shoalv1.Task{old("a", 1), cur("n1", 1, health(shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY)), old("b", 2), old("c", 3)}, ""},
		{"start-first: the old task stops once the new one runs healthy; the next slot starts",
			mkService("s", 3, v2, updState(updUpdating), updateCfg(1, 0, time.Second, "start-first", "", 0)),
			[]*shoalv1.Task{old("a", 1), cur("n1", 1, health(shoalv1.TaskHealth_TASK_HEALTH_HEALTHY)), old("b", 2), old("c", 3)},
			"+2@2 ~a:shutdown/running status=UPDATING 1/0"},
		// A start-first rollout of a service whose max replicas per node
		// is reached on every node: the new task can never be placed while
		// the old one runs, so the slot falls back to stop-first and the
		// status says why (it used to wait in UPDATING for ever).
		{"start-first, new task unplaceable for max replicas per node: the slot falls back to stop-first",
			mkService("s", 3, v2, updState(updUpdating), updateCfg(1, 0, time.Second, "start-first", "", 0)),
			[]*shoalv1.Task{old("a", 1), cur("n1", 1, st(tsPending), onNode(""), msg("no suitable node: 3 have the maximum of the service's tasks per node")), old("b", 2), old("c", 3)},
			"~a:shutdown/running status=UPDATING 0/0 [start-first fell back to stop-first for 1 slot(s), the new task could not be placed: no suitable node: 3 have the maximum of the service's tasks per node]"},
		{"start-first, new task unplaceable for another reason: the old one keeps serving, the status says why",
			mkService("s", 3, v2, updState(updUpdating), updateCfg(1, 0, time.Second, "start-first", "", 0)),
			[]*shoalv1.Task{old("a", 1), cur("n1", 1, st(tsPending), onNode(""), msg("no suitable node: 3 do not satisfy the constraints")), old("b", 2), old("c", 3)},
			"status=UPDATING 0/0 [waiting: 1 new task(s) cannot be placed: no suitable node: 3 do not satisfy the constraints]"},
		{"start-first, new task pending but not tried yet: the old one stays",
			mkService("s", 3, v2, updState(updUpdating), updateCfg(1, 0, time.Second, "start-first", "", 0)),
			[]*shoalv1.Task{old("a", 1), cur("n1", 1, st(tsPending), onNode("")), old("b", 2), old("c", 3)}, ""},
		{"stop-first: an outdated task next to a new one that is not running is stopped",
			sf(1, updState(updUpdating)),
			[]*shoalv1.Task{old("a", 1), cur("n1", 1, st(tsAssigned)), old("b", 2), old("c", 3)}, "~a:shutdown/running"},
		{"failure action pause: any failure over the ratio 0 pauses", sf(3, updState(updUpdating)),
			[]*shoalv1.Task{cur("f", 1, exited(1, ago(time.Second)), created(ago(time.Minute))), cur("n2", 2, st(tsAssigned)), old("c", 3)},
			"+1@2 status=PAUSED 0/1 [update paused: 1 of 3 tasks failed: task f: exit code 1]"},
		{"paused stays paused: nothing replaced, no status written", sf(3, updState(updPaused)),
			[]*shoalv1.Task{cur("n1", 1), old("b", 2), old("c", 3)}, ""},
		{"a paused start-first update keeps the old task while the new one is not running",
			mkService("s", 1, v2, updState(updPaused), updateCfg(1, 0, time.Second, "start-first", "", 0)),
			[]*shoalv1.Task{old("a", 1), cur("n1", 1, st(tsAssigned))}, ""},
		{"max failure ratio: 2 of 4 failed with ratio 0.5 goes on",
			mkService("s", 4, v2, updState(updUpdating), updateCfg(0, 0, time.Second, "", "pause", 0.5)),
			[]*shoalv1.Task{cur("f1", 1, exited(1, ago(time.Minute))), cur("f2", 2, exited(1, ago(time.Minute))), cur("n1", 1), cur("n2", 2), cur("n3", 3), old("d", 4)},
			"+4@2 ~d:shutdown/running status=UPDATING 3/2"},
		{"max failure ratio: 3 of 4 failed with ratio 0.5 pauses",
			mkService("s", 4, v2, updState(updUpdating), updateCfg(0, 0, time.Second, "", "pause", 0.5)),
			[]*shoalv1.Task{cur("f1", 1, exited(1, ago(time.Minute))), cur("f2", 2, exited(1, ago(time.Minute))), cur("f3", 3, exited(2, ago(time.Second))),
				cur("n1", 1), cur("n2", 2), cur("n3", 3), old("d", 4)},
			"status=PAUSED 3/3 [update paused: 3 of 4 tasks failed: task f3: exit code 2]"},
		{"failure action continue: failures are counted, the rollout goes on",
			mkService("s", 3, v2, updState(updUpdating), updateCfg(1, 0, time.Second, "", "continue", 0)),
			[]*shoalv1.Task{cur("f", 1, exited(1, ago(time.Minute))), cur("n1", 1), old("b", 2), old("c", 3)},
			"+2@2 ~b:shutdown/running status=UPDATING 1/1"},
		{"failure action rollback: the service gets its previous spec back",
			mkService("s", 3, v2, withPrevious(), updState(updUpdating), updateCfg(1, 0, time.Second, "", "rollback", 0)),
			[]*shoalv1.Task{cur("f", 1, exited(1, ago(time.Second))), old("b", 2), old("c", 3)},
			"status=ROLLBACK_STARTED 0/0 [update rolled back: 1 of 3 tasks failed: task f: exit code 1]"},
		{"failure action rollback without a previous spec pauses",
			mkService("s", 3, v2, updState(updUpdating), updateCfg(1, 0, time.Second, "", "rollback", 0)),
			[]*shoalv1.Task{cur("f", 1, exited(1, ago(time.Second))), old("b", 2), old("c", 3)},
			"+1@2 status=PAUSED 0/1 [update paused: 1 of 3 tasks failed: task f: exit code 1]"},
		{"a rollback rolls out under the rollback config",
			mkService("s", 3, v2, withPrevious(), updState(updRollbackStarted), func(s *shoalv1.Service) {
				s.PreviousSpec.Rollback = &shoalv1.UpdateConfig{Parallelism: 2}
			}),
			three, "+1@2 +2@2 ~a:shutdown/running ~b:shutdown/running"},
		{"a rollback's own failures pause it",
			mkService("s", 3, v2, withPrevious(), updState(updRollbackStarted), updateCfg(1, 0, time.Second, "", "rollback", 0)),
			[]*shoalv1.Task{cur("f", 1, exited(1, ago(time.Second))), old("b", 2), old("c", 3)},
			"+1@2 status=ROLLBACK_PAUSED 0/1 [rollback paused: 1 of 3 tasks failed: task f: exit code 1]"},
		{"a rollback keeps the tasks still built from the spec rolled back to",
			mkService("s", 2, specVersion(3), withPrevious(), updState(updRollbackStarted), func(s *shoalv1.Service) {
				s.Spec.Task.Container.Image = "demo@sha256:0"
			}),
			[]*shoalv1.Task{mkTask("old", "s", 1, func(t *shoalv1.Task) {
				t.Spec = &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo@sha256:0"},
					Restart: &shoalv1.RestartPolicy{Condition: condAny}, Placement: &shoalv1.Placement{}}
			}), cur("bad", 2)},
			"+2@3 ~bad:shutdown/running status=ROLLBACK_STARTED 1/0"},
		{"a rollback completes", mkService("s", 2, v2, withPrevious(), updState(updRollbackStarted)),
			[]*shoalv1.Task{cur("n1", 1), cur("n2", 2)}, "status=ROLLBACK_COMPLETED 2/0 [rollback completed]"},
		{"a completed service changes nothing", mkService("s", 2, v2, updState(updCompleted)),
			[]*shoalv1.Task{cur("n1", 1), cur("n2", 2)}, ""},
		{"a new service (no status) is created, not rolled out", mkService("s", 2), nil, "+1@1 +2@1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshot(tt.tasks)
			svcBefore := proto.Clone(tt.svc)
			p := ReconcileReplicated(tt.svc, tt.tasks, t0)
			if got := describeRollout(p); got != tt.want {
				t.Fatalf("plan = %q\n          want %q", got, tt.want)
			}
			sameMessages(t, "tasks", tt.tasks, before)
			if !proto.Equal(svcBefore, tt.svc) {
				t.Fatal("the service was changed")
			}
			if p.Service != nil && p.Service.GetMeta().GetVersion() != tt.svc.GetMeta().GetVersion() {
				t.Fatal("the service is written without the version it was read at")
			}
		})
	}
}

func TestRolloutRollbackSwapsSpecs(t *testing.T) {
	svc := mkService("s", 1, specVersion(2), withPrevious(), updState(updUpdating), updateCfg(1, 0, time.Second, "", "rollback", 0))
	p := ReconcileReplicated(svc, []*shoalv1.Task{mkTask("f", "s", 1, version(2), exited(1, ago(time.Second)))}, t0)
	got := p.Service
	if got == nil || !p.Empty() && (len(p.Create) > 0 || len(p.Update) > 0) {
		t.Fatalf("plan %q: want only the service written", describeRollout(p))
	}
	if got.GetSpec().GetTask().GetContainer().GetImage() != "demo@sha256:0" || got.GetPreviousSpec().GetTask().GetContainer().GetImage() != "demo@sha256:1" {
		t.Fatalf("specs not swapped: spec %v previous %v", got.GetSpec(), got.GetPreviousSpec())
	}
	if got.GetSpecVersion() != 3 {
		t.Fatalf("spec_version %d, want 3", got.GetSpecVersion())
	}
	if s := got.GetUpdateStatus(); s.GetState() != updRollbackStarted || !s.GetStartedAt().AsTime().Equal(t0) {
		t.Fatalf("status %v", s)
	}
	// The old tasks (spec version 1 == the rolled-back spec's tasks, but
	// now outdated by version) are rolled under the rollback config.
	again := ReconcileReplicated(got, []*shoalv1.Task{mkTask("f", "s", 1, version(2), exited(1, ago(time.Second)))}, t0)
	if d := describeRollout(again); d != "+1@3" {
		t.Fatalf("after the swap: %q", d)
	}
}

func TestRolloutGlobal(t *testing.T) {
	nodes := []*shoalv1.Node{mkNode("n1"), mkNode("n2"), mkNode("n3")}
	svc := mkService("g", 0, global(), specVersion(2), updateCfg(1, 0, time.Second, "start-first", "", 0))
	on := func(id, node string, opts ...taskOpt) *shoalv1.Task {
		return mkTask(id, "g", 0, append([]taskOpt{onNode(node)}, opts...)...)
	}
	tasks := []*shoalv1.Task{on("t1", "n1"), on("t2", "n2"), on("t3", "n3")}
	p := ReconcileGlobal(svc, tasks, nodes, t0)
	if d := describeRollout(p); d != "+n1@2 status=UPDATING 0/0" {
		t.Fatalf("first pass %q", d)
	}
	svc = p.Service
	tasks = applyPlan(tasks, p, t0)
	if d := describeRollout(ReconcileGlobal(svc, tasks, nodes, t0)); d != "" {
		t.Fatalf("new task on n1 pending: %q", d)
	}
	for i, tk := range tasks {
		if tk.GetSpecVersion() == 2 {
			tk = cloneTask(tk)
			tk.Status.State = tsRunning
			tasks[i] = tk
		}
	}
	if d := describeRollout(ReconcileGlobal(svc, tasks, nodes, t0)); d != "+n2@2 ~t1:shutdown/running retry=1s" {
		t.Fatalf("new task on n1 running: %q", d)
	}
}

// sim plays a rollout to its end: each step runs the reconcile, writes
// its plan (and service) and plays the agents: stopped tasks end, new ones
// run (or fail, per fails) one step later; the clock moves on by step.
type sim struct {
	t     *testing.T
	svc   *shoalv1.Service
	tasks []*shoalv1.Task
	now   time.Time
	fails func(*shoalv1.Task) bool
}

func (s *sim) step() Plan {
	p := ReconcileReplicated(s.svc, s.tasks, s.now)
	s.tasks = applyPlan(s.tasks, p, s.now)
	if p.Service != nil {
		s.svc = p.Service
	}
	s.now = s.now.Add(400 * time.Millisecond)
	for i, tk := range s.tasks {
		switch {
		case isTerminal(tk):
			continue
		case tk.GetDesiredState() > tsRunning:
			tk = cloneTask(tk)
			tk.Status = &shoalv1.TaskStatus{State: tsShutdown, Timestamp: timestamppb.New(s.now)}
		case tk.GetStatus().GetState() < tsRunning:
			tk = cloneTask(tk)
			tk.Status = &shoalv1.TaskStatus{State: tsRunning, Timestamp: timestamppb.New(s.now)}
			if s.fails != nil && s.fails(tk) {
				tk.Status = &shoalv1.TaskStatus{State: tsFailed, Timestamp: timestamppb.New(s.now), ExitCode: 1}
			}
		default:
			continue
		}
		s.tasks[i] = tk
	}
	return p
}

// runToEnd steps until the update status is final (or a step limit).
func (s *sim) runToEnd(check func(p Plan)) shoalv1.UpdateState {
	for i := 0; i < 500; i++ {
		p := s.step()
		if check != nil {
			check(p)
		}
		switch st := s.svc.GetUpdateStatus().GetState(); st {
		case updCompleted, updPaused, updRollbackComplete, updRollbackPaused:
			return st
		}
	}
	s.t.Fatalf("the rollout did not end: %v", s.svc.GetUpdateStatus())
	return 0
}

// liveBySlot counts, per slot, the live tasks and the running ones of the
// current spec.
func servingSlots(svc *shoalv1.Service, tasks []*shoalv1.Task) (serving int, liveCurrent map[uint64]int) {
	liveCurrent = map[uint64]int{}
	seen := map[uint64]bool{}
	for _, t := range tasks {
		if !isLive(t) {
			continue
		}
		if t.GetSpecVersion() == svc.GetSpecVersion() {
			liveCurrent[t.GetSlot()]++
		}
		if t.GetStatus().GetState() == tsRunning && !seen[t.GetSlot()] {
			seen[t.GetSlot()] = true
			serving++
		}
	}
	return serving, liveCurrent
}

func TestRolloutSimulated(t *testing.T) {
	for _, tc := range []struct {
		order       string
		parallelism int64
		// minServing: slots with a running task at every step.
		minServing int
	}{
		{"stop-first", 1, 6}, {"stop-first", 3, 4}, {"start-first", 1, 7}, {"start-first", 3, 7},
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.order, tc.parallelism), func(t *testing.T) {
			var tasks []*shoalv1.Task
			for slot := uint64(1); slot <= 7; slot++ {
				tasks = append(tasks, mkTask(fmt.Sprintf("old%d", slot), "s", slot))
			}
			s := &sim{t: t, svc: mkService("s", 7, specVersion(2), updateCfg(tc.parallelism, 0, time.Second, tc.order, "pause", 0)), tasks: tasks, now: t0}
			end := s.runToEnd(func(p Plan) {
				serving, liveCur := servingSlots(s.svc, s.tasks)
				if serving < tc.minServing {
					t.Fatalf("%d slots serving, want >= %d", serving, tc.minServing)
				}
				for slot, n := range liveCur {
					if n > 1 {
						t.Fatalf("slot %d has %d live new tasks", slot, n)
					}
				}
				if c := len(p.Create); c > int(tc.parallelism) {
					t.Fatalf("%d tasks created in one pass, parallelism %d", c, tc.parallelism)
				}
			})
			if end != updCompleted || s.svc.GetUpdateStatus().GetUpdated() != 7 {
				t.Fatalf("ended %v", s.svc.GetUpdateStatus())
			}
			if n := len(liveOf(s.tasks)); n != 7 {
				t.Fatalf("%d live tasks at the end", n)
			}
		})
	}
}

func TestRolloutSimulatedRollback(t *testing.T) {
	var tasks []*shoalv1.Task
	for slot := uint64(1); slot <= 5; slot++ {
		tasks = append(tasks, mkTask(fmt.Sprintf("old%d", slot), "s", slot))
	}
	svc := mkService("s", 5, specVersion(2), withPrevious(), updateCfg(2, 0, time.Second, "stop-first", "rollback", 0.2))
	svc.PreviousSpec.Task.Container.Image = "demo@sha256:1"           // what the old tasks run
	svc.Spec.Task.Container.Image = "demo@sha256:bad"                 // fails at once
	svc.PreviousSpec.Rollback = &shoalv1.UpdateConfig{Parallelism: 0} // roll back at once
	s := &sim{t: t, svc: svc, tasks: tasks, now: t0, fails: func(tk *shoalv1.Task) bool {
		return tk.GetSpec().GetContainer().GetImage() == "demo@sha256:bad"
	}}
	if end := s.runToEnd(nil); end != updRollbackComplete {
		t.Fatalf("ended %v", s.svc.GetUpdateStatus())
	}
	if img := s.svc.GetSpec().GetTask().GetContainer().GetImage(); img != "demo@sha256:1" {
		t.Fatalf("spec image %s after the rollback", img)
	}
	for _, tk := range liveOf(s.tasks) {
		if tk.GetSpec().GetContainer().GetImage() != "demo@sha256:1" {
			t.Fatalf("live task %s runs %s", tk.GetMeta().GetId(), tk.GetSpec().GetContainer().GetImage())
		}
	}
	if n := len(liveOf(s.tasks)); n != 5 {
		t.Fatalf("%d live tasks", n)
	}
}

func TestLimitDrain(t *testing.T) {
	nodes := []*shoalv1.Node{mkNode("up"), mkNode("dr", drain())}
	one := mkService("one", 4, updateCfg(1, 0, 0, "", "", 0))
	two := mkService("two", 4, updateCfg(2, 0, 0, "", "", 0))
	all := mkService("all", 4, allAtOnce())
	on := func(id, svc string, slot uint64, node string, opts ...taskOpt) *shoalv1.Task {
		return mkTask(id, svc, slot, append([]taskOpt{onNode(node)}, opts...)...)
	}
	tests := []struct {
		name    string
		tasks   []*shoalv1.Task
		want    string
		waiting bool
	}{
		{"parallelism 1: one at a time, in slot order",
			[]*shoalv1.Task{on("x2", "one", 2, "dr"), on("x1", "one", 1, "dr"), on("x3", "one", 3, "up")},
			"~x1:shutdown/running", true},
		{"parallelism 1: a move in flight (a new task not running yet) holds the next",
			[]*shoalv1.Task{on("x2", "one", 2, "dr"), on("n1", "one", 1, "up", st(tsAssigned))},
			"", true},
		{"parallelism 1: a task that fits nowhere does not hold it",
			[]*shoalv1.Task{on("x2", "one", 2, "dr"), on("n1", "one", 1, "", st(tsPending), func(t *shoalv1.Task) {
				t.Status.Message = "no node has 2 GiB free"
			})},
			"~x2:shutdown/running", false},
		{"parallelism 2", []*shoalv1.Task{on("y1", "two", 1, "dr"), on("y2", "two", 2, "dr"), on("y3", "two", 3, "dr")},
			"~y1:shutdown/running ~y2:shutdown/running", true},
		{"parallelism 0: all", []*shoalv1.Task{on("z1", "all", 1, "dr"), on("z2", "all", 2, "dr"), on("z3", "all", 3, "dr")},
			"~z1:shutdown/running ~z2:shutdown/running ~z3:shutdown/running", false},
		{"services are limited each on its own", []*shoalv1.Task{on("x1", "one", 1, "dr"), on("x2", "one", 2, "dr"), on("y1", "two", 1, "dr")},
			"~x1:shutdown/running ~y1:shutdown/running", true},
		{"a removed service's tasks all go", []*shoalv1.Task{on("g1", "gone", 1, "dr"), on("g2", "gone", 2, "dr")},
			"~g1:shutdown/running ~g2:shutdown/running", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			services := map[string]*shoalv1.Service{}
			bySvc := map[string][]*shoalv1.Task{}
			for _, tk := range tt.tasks {
				bySvc[tk.GetServiceId()] = append(bySvc[tk.GetServiceId()], tk)
			}
			for _, s := range []*shoalv1.Service{one, two, all} {
				if _, ok := bySvc[s.GetMeta().GetId()]; ok {
					services[s.GetMeta().GetId()] = s
				}
			}
			kept, waiting := LimitDrain(DrainedNodeTasks(nodes, tt.tasks, t0), services, bySvc)
			if d := describe(Plan{Update: kept}); d != tt.want {
				t.Fatalf("kept %q, want %q", d, tt.want)
			}
			if waiting["dr"] != tt.waiting || len(waiting) > 1 {
				t.Fatalf("waiting %v, want dr=%v", waiting, tt.waiting)
			}
		})
	}
}

// TestRolloutResumesAfterFailover: a leader that loses leadership in the
// middle of a rollout leaves its progress in the store; a new
// orchestrator over the same store continues it: the slots in flight are
// not started again, none is lost, and the rollout completes with exactly
// one new task per slot.
func TestRolloutResumesAfterFailover(t *testing.T) {
	const replicas = 6
	s := openStore(t)
	svc := mkService("web", replicas, noRestartDelay(), updateCfg(2, 0, 50*time.Millisecond, "start-first", "pause", 0))
	create(t, s, mkNode("n1"), mkNode("n2"), svc)
	start := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- newOrchestrator(s, testLogger()).Run(ctx) }()
		stopped := false
		stop = func() {
			if stopped {
				return
			}
			stopped = true
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(waitFor):
				t.Error("Run did not return")
			}
		}
		t.Cleanup(stop)
		return stop
	}
	// agent plays the agents once: assigned tasks run, stopped ones end.
	agent := func() {
		report(t, s, func(tk *shoalv1.Task) bool {
			return tk.GetDesiredState() == tsRunning && tk.GetStatus().GetState() == tsAssigned
		}, tsRunning)
		report(t, s, func(tk *shoalv1.Task) bool {
			return tk.GetDesiredState() >= tsShutdown && !isTerminal(tk)
		}, tsShutdown)
	}
	stop1 := start()
	eventually(t, "running", func() error {
		agent()
		if n := len(liveOf(tasksOf(s, "web"))); n != replicas {
			return fmt.Errorf("%d live", n)
		}
		for _, tk := range liveOf(tasksOf(s, "web")) {
			if tk.GetStatus().GetState() != tsRunning {
				return fmt.Errorf("not running: %s", brief([]*shoalv1.Task{tk}))
			}
		}
		return nil
	})

	changeService(t, s, "web", func(v *shoalv1.Service) {
		v.Spec.Task.Container.Image = "demo@sha256:2"
		v.SpecVersion = 2
		v.UpdateStatus = &shoalv1.UpdateStatus{State: updUpdating, StartedAt: timestamppb.Now()}
	})
	newTasks := func() []*shoalv1.Task {
		var out []*shoalv1.Task
		for _, tk := range tasksOf(s, "web") {
			if tk.GetSpecVersion() == 2 {
				out = append(out, tk)
			}
		}
		return out
	}
	eventually(t, "the first batch assigned", func() error { return allAssigned(newTasks(), 2) })
	stop1() // leadership lost with two slots in flight

	stop2 := start()
	defer stop2()
	eventually(t, "the rollout completed", func() error {
		if n := len(newTasks()); n > replicas {
			return nil // reported below
		}
		agent()
		v, _ := raftstore.Get[*shoalv1.Service](s.View(), "web")
		if st := v.GetUpdateStatus().GetState(); st != updCompleted {
			return fmt.Errorf("status %v; %s", v.GetUpdateStatus(), brief(liveOf(tasksOf(s, "web"))))
		}
		return nil
	})
	if n := len(newTasks()); n != replicas {
		t.Fatalf("%d tasks of the new spec, want exactly %d: %s", n, replicas, brief(newTasks()))
	}
	slots := map[uint64]int{}
	for _, tk := range liveOf(tasksOf(s, "web")) {
		if tk.GetSpecVersion() != 2 {
			t.Fatalf("outdated live task %s", brief([]*shoalv1.Task{tk}))
		}
		slots[tk.GetSlot()]++
	}
	for slot := uint64(1); slot <= replicas; slot++ {
		if slots[slot] != 1 {
			t.Fatalf("slot %d has %d live tasks", slot, slots[slot])
		}
	}
}

// TestDrainUnderParallelism: draining a node moves a service's tasks one
// at a time (parallelism 1): the second task on the node is stopped only
// once the first one's replacement runs.
func TestDrainUnderParallelism(t *testing.T) {
	s := openStore(t)
	create(t, s, mkNode("n1"), mkNode("n2"))
	startOrchestrator(t, s)
	create(t, s, mkService("web", 4, noRestartDelay(), updateCfg(1, 0, 0, "", "", 0), svcConstraints()))
	eventually(t, "assigned", func() error { return allAssigned(tasksOf(s, "web"), 4) })
	report(t, s, func(tk *shoalv1.Task) bool { return isLive(tk) }, tsRunning)
	onN1 := func() int { return perNode(liveOf(tasksOf(s, "web")))["n1"] }
	if onN1() != 2 {
		t.Fatalf("spread %v", perNode(liveOf(tasksOf(s, "web"))))
	}
	changeNode(t, s, "n1", func(n *shoalv1.Node) { n.Spec.Availability = shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN })
	stopping := func() []*shoalv1.Task {
		var out []*shoalv1.Task
		for _, tk := range tasksOf(s, "web") {
			if tk.GetDesiredState() >= tsShutdown && !isTerminal(tk) {
				out = append(out, tk)
			}
		}
		return out
	}
	eventually(t, "one task stopping on n1, its replacement assigned", func() error {
		if n := len(stopping()); n != 1 {
			return fmt.Errorf("%d stopping", n)
		}
		live := liveOf(tasksOf(s, "web"))
		if len(live) != 4 {
			return fmt.Errorf("%d live: %s", len(live), brief(live))
		}
		for _, tk := range live {
			if tk.GetStatus().GetState() == tsAssigned && tk.GetNodeId() == "n2" {
				return nil
			}
		}
		return fmt.Errorf("no replacement assigned to n2: %s", brief(live))
	})
	// The replacement is not running: the second task stays.
	if onN1() != 1 {
		t.Fatalf("live on n1: %d, want 1 (held back by parallelism)", onN1())
	}
	report(t, s, func(tk *shoalv1.Task) bool { return tk.GetDesiredState() >= tsShutdown && !isTerminal(tk) }, tsShutdown)
	report(t, s, func(tk *shoalv1.Task) bool { return isLive(tk) && tk.GetStatus().GetState() == tsAssigned }, tsRunning)
	eventually(t, "the second task moved", func() error {
		if n := onN1(); n != 0 {
			return fmt.Errorf("live on n1: %d", n)
		}
		return nil
	})
}

func TestEndedBadly(t *testing.T) {
	svc := mkService("s", 1)
	job := mkService("j", 1, func(s *shoalv1.Service) { s.Spec.Mode = shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB })
	for _, c := range []struct {
		name string
		svc  *shoalv1.Service
		task *shoalv1.Task
		want bool
	}{
		{"failed", svc, mkTask("a", "s", 1, exited(1, t0)), true},
		{"rejected", svc, mkTask("a", "s", 1, ended(tsRejected, t0)), true},
		{"a service task that exited 0", svc, mkTask("a", "s", 1, ended(tsComplete, t0)), true},
		{"a job's task that completed", job, mkTask("a", "j", 1, ended(tsComplete, t0)), false},
		{"stopped on purpose", svc, mkTask("a", "s", 1, ended(tsShutdown, t0), desired(tsShutdown)), false},
		{"failed while being stopped", svc, mkTask("a", "s", 1, exited(137, t0), desired(tsShutdown)), false},
		{"lost with its node", svc, mkTask("a", "s", 1, ended(tsOrphaned, t0)), false},
	} {
		if got := endedBadly(c.svc, c.task); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// A global service's rollout leaves a paused node's task alone, as swarm
// mode does (a paused node takes no new task: stopping its old one would
// leave it none, and its replacement, pending for ever, held the window so
// that no other node was ever updated). The rollout completes over the
// other nodes; once the node is active again, its outdated task is rolled
// out.
func TestRolloutGlobalSkipsPausedNode(t *testing.T) {
	nodes := []*shoalv1.Node{mkNode("n1", pauseNode()), mkNode("n2"), mkNode("n3")}
	svc := mkService("g", 0, global(), specVersion(2), updState(updUpdating), updateCfg(1, 0, time.Second, "stop-first", "", 0))
	on := func(id, node string, opts ...taskOpt) *shoalv1.Task {
		return mkTask(id, "g", 0, append([]taskOpt{onNode(node)}, opts...)...)
	}
	tasks := []*shoalv1.Task{on("t1", "n1"), on("t2", "n2"), on("t3", "n3")}
	if d := describeRollout(ReconcileGlobal(svc, tasks, nodes, t0)); d != "+n2@2 ~t2:shutdown/running" {
		t.Fatalf("first pass %q, want n2 replaced (n1 is paused)", d)
	}
	tasks = []*shoalv1.Task{on("t1", "n1"), on("t2", "n2", version(2)), on("t3", "n3", version(2))}
	if d := describeRollout(ReconcileGlobal(svc, tasks, nodes, t0)); d != "status=COMPLETED 2/0 [update completed]" {
		t.Fatalf("every active node updated: %q, want completed", d)
	}
	nodes[0] = mkNode("n1")
	svc = mkService("g", 0, global(), specVersion(2), updState(updCompleted), updateCfg(1, 0, time.Second, "stop-first", "", 0))
	if d := describeRollout(ReconcileGlobal(svc, tasks, nodes, t0)); d != "+n1@2 ~t1:shutdown/running status=UPDATING 2/0" {
		t.Fatalf("n1 active again: %q, want its task rolled out", d)
	}
}

// TestFreedByStopping ties freedByStopping to the scheduler's own reasons:
// max replicas per node, memory and CPU can be freed by stopping a task of
// the service; constraints cannot.
func TestFreedByStopping(t *testing.T) {
	nodes := []*shoalv1.Node{
		{Meta: &shoalv1.Meta{Id: "n1"}, Spec: &shoalv1.NodeSpec{Availability: shoalv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE},
			Description: &shoalv1.NodeDescription{Hostname: "h1", Os: "linux", Arch: "amd64", Resources: &shoalv1.Resources{MemoryBytes: 1 << 30, NanoCpus: 1e9}},
			Status:      &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_READY}, Role: shoalv1.NodeRole_NODE_ROLE_WORKER},
	}
	task := func(id string, pl *shoalv1.Placement, res *shoalv1.Resources) *shoalv1.Task {
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: "s", Slot: 1,
			Spec:   &shoalv1.TaskSpec{Placement: pl, Resources: &shoalv1.ResourceRequirements{Reservations: res}},
			Status: &shoalv1.TaskStatus{State: tsPending}, DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING}
	}
	running := task("old", &shoalv1.Placement{MaxReplicasPerNode: 1}, &shoalv1.Resources{MemoryBytes: 768 << 20, NanoCpus: 8e8})
	running.NodeId, running.Status.State = "n1", shoalv1.TaskState_TASK_STATE_RUNNING
	tests := []struct {
		name string
		task *shoalv1.Task
		want bool
	}{
		{"max replicas per node", task("new", &shoalv1.Placement{MaxReplicasPerNode: 1}, nil), true},
		{"memory", task("new", nil, &shoalv1.Resources{MemoryBytes: 512 << 20}), true},
		{"cpu", task("new", nil, &shoalv1.Resources{NanoCpus: 5e8}), true},
		{"constraints", task("new", &shoalv1.Placement{Constraints: []string{"node.hostname==elsewhere"}}, nil), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, failed := scheduler.Schedule(nodes, []*shoalv1.Task{running}, []*shoalv1.Task{tt.task})
			if len(failed) != 1 {
				t.Fatalf("scheduled: %v, want a failure", failed)
			}
			if got := freedByStopping(failed[0].Reason); got != tt.want {
				t.Fatalf("freedByStopping(%q) = %v, want %v", failed[0].Reason, got, tt.want)
			}
		})
	}
}
