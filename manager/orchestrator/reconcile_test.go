package orchestrator

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// history makes n terminal tasks of svc in a slot, ended one minute apart
// (the first most recently), created in the same order.
func history(prefix, svc string, slot uint64, n int, state, desiredState shoalv1.TaskState, extra ...taskOpt) []*shoalv1.Task {
	var out []*shoalv1.Task
	for i := 1; i <= n; i++ {
		opts := append([]taskOpt{
			created(ago(time.Duration(i) * time.Hour)),
			ended(state, ago(time.Duration(i)*time.Minute)),
			desired(desiredState),
		}, extra...)
		out = append(out, mkTask(fmt.Sprintf("%s%d", prefix, i), svc, slot, opts...))
	}
	return out
}

func join(lists ...[]*shoalv1.Task) []*shoalv1.Task {
	var out []*shoalv1.Task
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

func TestReconcileReplicated(t *testing.T) {
	failedAt := func(at time.Time) taskOpt { return ended(tsFailed, at) }
	tests := []struct {
		name  string
		svc   *shoalv1.Service
		tasks []*shoalv1.Task
		want  string
	}{
		{"creates missing slots", mkService("s", 3), nil, "+1@1 +2@1 +3@1"},
		{"converged", mkService("s", 2), []*shoalv1.Task{mkTask("a", "s", 1), mkTask("b", "s", 2)}, ""},
		{"negative replicas means none", mkService("s", -1), []*shoalv1.Task{mkTask("a", "s", 1)}, "~a:shutdown/running"},
		{
			"scale down: assigned tasks wait for their agent, pending ones close",
			mkService("s", 2),
			[]*shoalv1.Task{mkTask("a", "s", 1), mkTask("b", "s", 2), mkTask("c", "s", 3, st(tsAssigned)), mkTask("d", "s", 4, st(tsPending), onNode(""))},
			"~c:shutdown/assigned ~d:shutdown/shutdown",
		},
		{
			"two live tasks in a slot: the further along stays",
			mkService("s", 1),
			[]*shoalv1.Task{mkTask("a", "s", 1), mkTask("b", "s", 1, st(tsAssigned), created(ago(time.Minute)))},
			"~b:shutdown/assigned",
		},
		{
			"two live tasks in a slot, same state: the newer stays",
			mkService("s", 1),
			[]*shoalv1.Task{mkTask("a", "s", 1, created(ago(2*time.Hour))), mkTask("b", "s", 1)},
			"~a:shutdown/running",
		},
		{
			"two live tasks in a slot: an up-to-date one beats a further along outdated one",
			mkService("s", 1, specVersion(2)),
			[]*shoalv1.Task{mkTask("a", "s", 1), mkTask("b", "s", 1, st(tsPending), version(2))},
			"~a:shutdown/running",
		},
		{
			"outdated tasks are replaced in their slot",
			mkService("s", 2, specVersion(2)),
			[]*shoalv1.Task{mkTask("a", "s", 1), mkTask("b", "s", 2, version(2))},
			"+1@2 ~a:shutdown/running",
		},
		{
			"an outdated pending task closes at once",
			mkService("s", 1, specVersion(2)),
			[]*shoalv1.Task{mkTask("a", "s", 1, st(tsPending), onNode(""))},
			"+1@2 ~a:shutdown/shutdown",
		},
		{"restart ANY after completion", mkService("s", 1), []*shoalv1.Task{mkTask("a", "s", 1, ended(tsComplete, ago(time.Minute)))}, "+1@1"},
		{"restart ANY after failure", mkService("s", 1), []*shoalv1.Task{mkTask("a", "s", 1, failedAt(ago(time.Minute)))}, "+1@1"},
		{"ON_FAILURE: no restart after completion", mkService("s", 1, restart(condOnFailure, 0, 0, 0)), []*shoalv1.Task{mkTask("a", "s", 1, ended(tsComplete, ago(time.Minute)))}, ""},
		{"ON_FAILURE: restart after failure", mkService("s", 1, restart(condOnFailure, 0, 0, 0)), []*shoalv1.Task{mkTask("a", "s", 1, failedAt(ago(time.Minute)))}, "+1@1"},
		{"ON_FAILURE: restart after rejection", mkService("s", 1, restart(condOnFailure, 0, 0, 0)), []*shoalv1.Task{mkTask("a", "s", 1, ended(tsRejected, ago(time.Minute)))}, "+1@1"},
		{"ON_FAILURE: restart after orphaning", mkService("s", 1, restart(condOnFailure, 0, 0, 0)), []*shoalv1.Task{mkTask("a", "s", 1, ended(tsOrphaned, ago(time.Minute)))}, "+1@1"},
		{"NONE: no restart after failure", mkService("s", 1, restart(condNone, 0, 0, 0)), []*shoalv1.Task{mkTask("a", "s", 1, failedAt(ago(time.Minute)))}, ""},
		{"NONE: no replacement after orphaning either", mkService("s", 1, restart(condNone, 0, 0, 0)), []*shoalv1.Task{mkTask("a", "s", 1, ended(tsOrphaned, ago(time.Minute)))}, ""},
		{"delay not over: retry later", mkService("s", 1, restart(condAny, 5*time.Second, 0, 0)), []*shoalv1.Task{mkTask("a", "s", 1, failedAt(ago(time.Second)))}, "retry=4s"},
		{"orphaned (node lost): replaced at once, no delay", mkService("s", 1, restart(condAny, 5*time.Second, 0, 0)), []*shoalv1.Task{mkTask("a", "s", 1, ended(tsOrphaned, ago(time.Second)))}, "+1@1"},
		{"orphaned tasks do not count towards max_attempts", mkService("s", 1, restart(condAny, 0, 1, 0)), []*shoalv1.Task{mkTask("a", "s", 1, ended(tsOrphaned, ago(2*time.Second))), mkTask("b", "s", 1, ended(tsOrphaned, ago(time.Second)))}, "+1@1"},
		{"delay over: restart", mkService("s", 1, restart(condAny, 5*time.Second, 0, 0)), []*shoalv1.Task{mkTask("a", "s", 1, failedAt(ago(6*time.Second)))}, "+1@1"},
		{"delay exactly over: restart", mkService("s", 1, restart(condAny, 5*time.Second, 0, 0)), []*shoalv1.Task{mkTask("a", "s", 1, failedAt(ago(5*time.Second)))}, "+1@1"},
		// max_attempts counts restarts after the first run (help:
		// "give up after this many restarts"): N allows N+1 runs.
		{
			"max attempts 2: the first run and one restart ended: restart again",
			mkService("s", 1, restart(condAny, 0, 2, 0)),
			history("f", "s", 1, 2, tsFailed, tsRunning),
			"+1@1",
		},
		{
			"max attempts 2: the first run and two restarts ended: give up",
			mkService("s", 1, restart(condAny, 0, 2, 0)),
			history("f", "s", 1, 3, tsFailed, tsRunning),
			"",
		},
		{
			"max attempts 1: only the first run ended: one restart",
			mkService("s", 1, restart(condAny, 0, 1, 0)),
			history("f", "s", 1, 1, tsFailed, tsRunning),
			"+1@1",
		},
		{
			"max attempts 1: the restart ended too: give up",
			mkService("s", 1, restart(condAny, 0, 1, 0)),
			history("f", "s", 1, 2, tsFailed, tsRunning),
			"",
		},
		{
			"max attempts reached within the window: retry when the oldest counted end leaves it",
			mkService("s", 1, restart(condAny, 0, 2, 4*time.Minute)),
			history("f", "s", 1, 3, tsFailed, tsRunning), // ended 1m, 2m and 3m ago
			"retry=1m0s",
		},
		{
			"max attempts: failures older than the window do not count",
			mkService("s", 1, restart(condAny, 0, 2, 150*time.Second)),
			history("f", "s", 1, 3, tsFailed, tsRunning), // the 3m-old one is out
			"+1@1",
		},
		{
			"max attempts count only the current spec's own endings",
			mkService("s", 1, restart(condAny, 0, 1, 0), specVersion(2)),
			[]*shoalv1.Task{
				mkTask("old", "s", 1, version(1), created(ago(3*time.Hour)), failedAt(ago(3*time.Minute))),
				mkTask("stopped", "s", 1, version(2), created(ago(2*time.Hour)), ended(tsShutdown, ago(2*time.Minute)), desired(tsShutdown)),
				mkTask("latest", "s", 1, version(2), created(ago(time.Hour)), failedAt(ago(time.Minute))),
			},
			"+1@2",
		},
		{
			"stopped on purpose (scaled down, then up): no policy applies",
			mkService("s", 1, restart(condNone, time.Hour, 0, 0)),
			[]*shoalv1.Task{mkTask("a", "s", 1, ended(tsShutdown, ago(time.Second)), desired(tsShutdown))},
			"+1@1",
		},
		{
			"still stopping on a drained node: replaced at once",
			mkService("s", 1, restart(condNone, time.Hour, 0, 0)),
			[]*shoalv1.Task{mkTask("a", "s", 1, desired(tsShutdown))},
			"+1@1",
		},
		{
			"a service update restarts a slot that gave up",
			mkService("s", 1, restart(condNone, 0, 0, 0), specVersion(2)),
			[]*shoalv1.Task{mkTask("a", "s", 1, failedAt(ago(time.Minute)))},
			"+1@2",
		},
		{
			"pending task asked to stop is closed by the manager",
			mkService("s", 1),
			[]*shoalv1.Task{mkTask("a", "s", 1), mkTask("b", "s", 1, st(tsPending), desired(tsShutdown))},
			"~b:shutdown/shutdown",
		},
		{
			"history: 5 newest terminal tasks per slot kept",
			mkService("s", 1),
			join([]*shoalv1.Task{mkTask("live", "s", 1, created(t0))}, history("h", "s", 1, 7, tsShutdown, tsShutdown)),
			"-h6 -h7",
		},
		{
			"history keeps the tasks that count towards max attempts",
			mkService("s", 1, restart(condAny, 0, 8, 0)),
			join([]*shoalv1.Task{mkTask("live", "s", 1, created(t0))}, history("h", "s", 1, 7, tsFailed, tsRunning)),
			"",
		},
		{
			"history keeps the first run and max attempts restarts",
			mkService("s", 1, restart(condAny, 0, 5, 0)),
			join([]*shoalv1.Task{mkTask("live", "s", 1, created(t0))}, history("h", "s", 1, 6, tsFailed, tsRunning)),
			"",
		},
		{
			"history beyond max attempts is trimmed",
			mkService("s", 1, restart(condAny, 0, 6, 0)),
			join([]*shoalv1.Task{mkTask("live", "s", 1, created(t0))}, history("h", "s", 1, 8, tsFailed, tsRunning)),
			"-h8",
		},
		{
			"history of slots beyond the replica count is trimmed too",
			mkService("s", 0),
			history("h", "s", 3, 6, tsShutdown, tsShutdown),
			"-h6",
		},
		{"tasks of other services are ignored", mkService("s", 1), []*shoalv1.Task{mkTask("x", "other", 1)}, "+1@1"},
		{"a replicated task in slot 0 is stopped", mkService("s", 1), []*shoalv1.Task{mkTask("a", "s", 1), mkTask("z", "s", 0)}, "~z:shutdown/running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshot(tt.tasks)
			svcBefore := proto.Clone(tt.svc)
			p := ReconcileReplicated(tt.svc, tt.tasks, t0)
			if got := describe(p); got != tt.want {
				t.Fatalf("plan = %q, want %q", got, tt.want)
			}
			sameMessages(t, "tasks", tt.tasks, before)
			if !proto.Equal(svcBefore, tt.svc) {
				t.Fatal("the service was changed")
			}
			// Writing the plan and reconciling again changes nothing more:
			// the loop must settle, not storm.
			again := ReconcileReplicated(tt.svc, applyPlan(tt.tasks, p, t0), t0)
			if !again.Empty() {
				t.Fatalf("second pass not empty: %q", describe(again))
			}
		})
	}
}

func TestNewTaskFields(t *testing.T) {
	svc := mkService("s", 1, specVersion(4))
	p := ReconcileReplicated(svc, nil, t0)
	if len(p.Create) != 1 {
		t.Fatalf("plan %q", describe(p))
	}
	tk := p.Create[0]
	if len(tk.GetMeta().GetId()) != 25 || tk.GetMeta().GetVersion() != 0 {
		t.Errorf("meta = %v, want a new 25-character id and no version", tk.GetMeta())
	}
	if tk.GetServiceId() != "s" || tk.GetServiceName() != "svc-s" || tk.GetSlot() != 1 || tk.GetNodeId() != "" {
		t.Errorf("identity = %q %q %d %q", tk.GetServiceId(), tk.GetServiceName(), tk.GetSlot(), tk.GetNodeId())
	}
	if tk.GetDesiredState() != tsRunning || tk.GetSpecVersion() != 4 {
		t.Errorf("desired %s, spec_version %d", tk.GetDesiredState(), tk.GetSpecVersion())
	}
	if s := tk.GetStatus(); s.GetState() != tsPending || s.GetMessage() != "pending" || !s.GetTimestamp().AsTime().Equal(t0) {
		t.Errorf("status = %v", s)
	}
	// The very spec of the service: no copy per task, and the store
	// writes it as a compact TASK_CREATE.
	if tk.GetSpec() != svc.GetSpec().GetTask() {
		t.Error("the task does not share the service's task spec")
	}
	other := ReconcileReplicated(svc, nil, t0).Create[0]
	if other.GetMeta().GetId() == tk.GetMeta().GetId() {
		t.Error("two creates share an id")
	}
}

func TestReconcileGlobal(t *testing.T) {
	nodes := []*shoalv1.Node{
		mkNode("n1"), mkNode("n2"), mkNode("n3", down()), mkNode("n4", drain()),
		mkNode("n5", func(n *shoalv1.Node) { n.Status.State = shoalv1.NodeState_NODE_STATE_UNKNOWN }),
		mkNode("n6", nodeLabel("zone", "b")),
		mkNode("n7", func(n *shoalv1.Node) { n.Spec.Availability = shoalv1.NodeAvailability_NODE_AVAILABILITY_PAUSE }),
	}
	g := func(opts ...svcOpt) *shoalv1.Service {
		return mkService("g", 0, append([]svcOpt{global(), svcConstraints("node.labels.zone!=b")}, opts...)...)
	}
	on := func(id, node string, opts ...taskOpt) *shoalv1.Task {
		return mkTask(id, "g", 0, append([]taskOpt{onNode(node)}, opts...)...)
	}
	converged := []*shoalv1.Task{on("t1", "n1"), on("t2", "n2"), on("t5", "n5", st(tsPending)), on("t7", "n7", st(tsPending))}
	tests := []struct {
		name  string
		svc   *shoalv1.Service
		tasks []*shoalv1.Task
		want  string
	}{
		{"a task for every eligible node", g(), nil, "+n1@1 +n2@1 +n5@1 +n7@1"},
		{"converged", g(), converged, ""},
		{
			"live tasks on nodes no longer eligible are stopped",
			g(),
			join(converged, []*shoalv1.Task{on("t3", "n3"), on("t4", "n4"), on("t6", "n6", st(tsAssigned)), on("tx", "gone"), on("t0", "", st(tsPending))}),
			"~t0:shutdown/shutdown ~t3:shutdown/running ~t4:shutdown/running ~t6:shutdown/assigned ~tx:shutdown/running",
		},
		{
			"constraints that do not parse match no node",
			mkService("g", 0, global(), svcConstraints("node.rol==x")),
			[]*shoalv1.Task{on("t1", "n1")},
			"~t1:shutdown/running",
		},
		{
			"restart delay per node",
			g(restart(condAny, 10*time.Second, 0, 0)),
			[]*shoalv1.Task{on("t1", "n1", ended(tsFailed, ago(4*time.Second))), on("t2", "n2"), on("t5", "n5"), on("t7", "n7")},
			"retry=6s",
		},
		{
			"outdated per node",
			g(specVersion(2)),
			[]*shoalv1.Task{on("t1", "n1"), on("t2", "n2", version(2)), on("t5", "n5", version(2)), on("t7", "n7", version(2))},
			"+n1@2 ~t1:shutdown/running",
		},
		{
			"two live tasks on a node",
			g(),
			join(converged, []*shoalv1.Task{on("t1b", "n1", st(tsAssigned))}),
			"~t1b:shutdown/assigned",
		},
		{
			"history per node",
			g(),
			join(converged, history("h", "g", 0, 6, tsShutdown, tsShutdown, onNode("n2"))),
			"-h6",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, nodesBefore := snapshot(tt.tasks), snapshot(nodes)
			p := ReconcileGlobal(tt.svc, tt.tasks, nodes, t0)
			if got := describe(p); got != tt.want {
				t.Fatalf("plan = %q, want %q", got, tt.want)
			}
			sameMessages(t, "tasks", tt.tasks, before)
			sameMessages(t, "nodes", nodes, nodesBefore)
			for _, c := range p.Create {
				if c.GetSlot() != 0 || c.GetNodeId() == "" {
					t.Errorf("global task created with slot %d node %q", c.GetSlot(), c.GetNodeId())
				}
			}
			again := ReconcileGlobal(tt.svc, applyPlan(tt.tasks, p, t0), nodes, t0)
			if !again.Empty() {
				t.Fatalf("second pass not empty: %q", describe(again))
			}
		})
	}
}

func TestReconcileRemoved(t *testing.T) {
	tasks := []*shoalv1.Task{
		mkTask("run", "s", 1),
		mkTask("asg", "s", 2, st(tsAssigned), desired(tsShutdown)),
		mkTask("rm", "s", 3, desired(tsRemove)),
		mkTask("pend", "s", 4, st(tsPending), onNode("")),
		mkTask("done", "s", 5, ended(tsComplete, ago(time.Minute))),
		mkTask("orph", "s", 6, ended(tsOrphaned, ago(time.Minute))),
	}
	before := snapshot(tasks)
	p := ReconcileRemoved(tasks)
	if got, want := describe(p), "-done -orph -pend ~asg:remove/assigned ~run:remove/running"; got != want {
		t.Fatalf("plan = %q, want %q", got, want)
	}
	sameMessages(t, "tasks", tasks, before)
	if again := ReconcileRemoved(applyPlan(tasks, p, t0)); !again.Empty() {
		t.Fatalf("second pass not empty: %q", describe(again))
	}
	// Once the agents report, everything goes.
	var reported []*shoalv1.Task
	for _, tk := range applyPlan(tasks, p, t0) {
		tk = cloneTask(tk)
		tk.Status.State = tsShutdown
		reported = append(reported, tk)
	}
	if got, want := describe(ReconcileRemoved(reported)), "-asg -rm -run"; got != want {
		t.Fatalf("after the agents reported: %q, want %q", got, want)
	}
}

func TestOrphanOnDownNodes(t *testing.T) {
	nodes := []*shoalv1.Node{mkNode("up"), mkNode("dn", down()), mkNode("dr", drain())}
	tasks := []*shoalv1.Task{
		mkTask("a", "s", 1, onNode("dn")),
		mkTask("b", "s", 2, onNode("dn"), st(tsAssigned), desired(tsShutdown)),
		mkTask("c", "s", 3, onNode("dn"), ended(tsFailed, ago(time.Minute))),
		mkTask("d", "s", 4, onNode("gone")),
		mkTask("e", "s", 5, onNode("up")),
		mkTask("f", "s", 6, onNode(""), st(tsPending)),
		mkTask("g", "g", 0, onNode("dn"), st(tsPending)),
		mkTask("h", "s", 7, onNode("dr")),
	}
	before := snapshot(tasks)
	got := OrphanOnDownNodes(nodes, tasks, t0)
	want := map[string]string{"a": "node down", "b": "node down", "d": "node removed", "g": "node down"}
	if len(got) != len(want) {
		t.Fatalf("orphaned %d tasks, want %d: %v", len(got), len(want), got)
	}
	for _, o := range got {
		msg, ok := want[o.GetMeta().GetId()]
		s := o.GetStatus()
		if !ok || s.GetState() != tsOrphaned || s.GetMessage() != msg || !s.GetTimestamp().AsTime().Equal(t0) {
			t.Errorf("task %s: status %v, want ORPHANED %q at t0", o.GetMeta().GetId(), s, msg)
		}
		if o.GetDesiredState() != before[indexOf(before, o.GetMeta().GetId())].GetDesiredState() || o.GetMeta().GetVersion() != 3 {
			t.Errorf("task %s: desired state or version changed", o.GetMeta().GetId())
		}
	}
	sameMessages(t, "tasks", tasks, before)
}

func TestDrainedNodeTasks(t *testing.T) {
	nodes := []*shoalv1.Node{mkNode("up"), mkNode("dr", drain())}
	tasks := []*shoalv1.Task{
		mkTask("a", "s", 1, onNode("dr")),
		mkTask("b", "s", 2, onNode("dr"), st(tsAssigned)),
		mkTask("c", "s", 3, onNode("dr"), desired(tsShutdown)),
		mkTask("d", "s", 4, onNode("dr"), ended(tsFailed, ago(time.Minute))),
		mkTask("e", "s", 5, onNode("up")),
		mkTask("g", "g", 0, onNode("dr")),
		mkTask("h", "s", 6, onNode("gone")),
	}
	before := snapshot(tasks)
	got := DrainedNodeTasks(nodes, tasks, t0)
	if d := describe(Plan{Update: got}); d != "~a:shutdown/running ~b:shutdown/assigned" {
		t.Fatalf("drained = %q", d)
	}
	sameMessages(t, "tasks", tasks, before)
}

func indexOf(ts []*shoalv1.Task, id string) int {
	for i, t := range ts {
		if t.GetMeta().GetId() == id {
			return i
		}
	}
	return -1
}

func TestMinRetry(t *testing.T) {
	for _, c := range []struct{ a, b, want time.Duration }{
		{0, 0, 0}, {0, 3, 3}, {3, 0, 3}, {2, 3, 2}, {3, 2, 2}, {-1, 2, 2}, {-1, -1, 0},
	} {
		if got := minRetry(c.a, c.b); got != c.want {
			t.Errorf("minRetry(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
