package orchestrator

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func parallelism(n int64) svcOpt {
	return func(s *shoalv1.Service) { s.Spec.Update = &shoalv1.UpdateConfig{Parallelism: n} }
}
func strategy(v string) svcOpt {
	return func(s *shoalv1.Service) { s.Spec.Task.Placement.Strategy = v }
}
func maxPer(n int64) svcOpt {
	return func(s *shoalv1.Service) { s.Spec.Task.Placement.MaxReplicasPerNode = n }
}
func pauseNode() nodeOpt {
	return func(n *shoalv1.Node) { n.Spec.Availability = shoalv1.NodeAvailability_NODE_AVAILABILITY_PAUSE }
}
func health(h shoalv1.TaskHealth) taskOpt { return func(t *shoalv1.Task) { t.Status.Health = h } }
func msg(m string) taskOpt                { return func(t *shoalv1.Task) { t.Status.Message = m } }

// onNodes makes running tasks of svc "s", slots from 1, count[i] of them
// on node n<i+1>.
func onNodes(counts ...int) []*shoalv1.Task {
	var out []*shoalv1.Task
	slot := uint64(1)
	for i, c := range counts {
		for range c {
			out = append(out, mkTask(fmt.Sprintf("t%02d", slot), "s", slot, onNode(fmt.Sprintf("n%d", i+1))))
			slot++
		}
	}
	return out
}

func describeRebalance(p RebalancePlan) string {
	var parts []string
	for _, m := range p.Moves {
		parts = append(parts, fmt.Sprintf("%s:%d %s>%s", m.TaskID, m.Slot, m.From, m.To))
	}
	for _, c := range p.Cancel {
		parts = append(parts, "x"+c.GetMeta().GetId())
	}
	for _, c := range p.Stop {
		parts = append(parts, "stop:"+c.GetMeta().GetId())
	}
	parts = append(parts, fmt.Sprintf("inflight=%d even=%v", p.InFlight, p.Even))
	return strings.Join(parts, " ")
}

func TestPlanRebalance(t *testing.T) {
	nodes3 := []*shoalv1.Node{mkNode("n1"), mkNode("n2"), mkNode("n3")}
	tests := []struct {
		name    string
		svc     *shoalv1.Service
		nodes   []*shoalv1.Node
		tasks   []*shoalv1.Task
		settled []string // nil: every node
		want    string
	}{
		{"even already", mkService("s", 4, parallelism(0)), nodes3, onNodes(2, 1, 1), nil, "inflight=0 even=true"},
		{"a returned node gets tasks, all at once with parallelism 0", mkService("s", 6, parallelism(0)), nodes3, onNodes(3, 3, 0), nil,
			"t03:3 n1>n3 t06:6 n2>n3 inflight=0 even=false"},
		{"parallelism 1: one move at a time", mkService("s", 6, parallelism(1)), nodes3, onNodes(3, 3, 0), nil,
			"t03:3 n1>n3 inflight=0 even=false"},
		{"a move in flight counts on its new node and against the parallelism", mkService("s", 6, parallelism(1)), nodes3,
			append(onNodes(3, 3, 0), mkTask("new3", "s", 3, onNode("n3"), st(tsAssigned), created(t0))), nil,
			"inflight=1 even=false"},
		{"parallelism 2 with one in flight: one more", mkService("s", 6, parallelism(2)), nodes3,
			append(onNodes(3, 3, 0), mkTask("new3", "s", 3, onNode("n3"), st(tsAssigned), created(t0))), nil,
			"t06:6 n2>n3 inflight=1 even=false"},
		{"a move whose new task runs ends: the old one stops, the next starts", mkService("s", 6, parallelism(1)), nodes3,
			append(onNodes(3, 3, 0), mkTask("new3", "s", 3, onNode("n3"), created(t0))), nil,
			"t06:6 n2>n3 stop:t03 inflight=0 even=false"},
		{"a move that failed to start: its node gets no move for the settle period", mkService("s", 6, parallelism(1)), nodes3,
			append(onNodes(3, 3, 0), mkTask("new3", "s", 3, onNode("n3"), created(t0), ended(tsFailed, ago(time.Second)))), nil,
			"inflight=0 even=false"},
		{"... and again after it", mkService("s", 6, parallelism(1)), nodes3,
			append(onNodes(3, 3, 0), mkTask("new3", "s", 3, onNode("n3"), created(ago(time.Hour)), ended(tsFailed, ago(RebalanceSettle)))), nil,
			"t03:3 n1>n3 inflight=0 even=false"},
		{"a move that cannot be placed is cancelled", mkService("s", 6, parallelism(1)), nodes3,
			append(onNodes(3, 3, 0), mkTask("new3", "s", 3, onNode("n3"), st(tsPending), msg(`node "n3" is not suitable: insufficient memory`), created(t0))), nil,
			"xnew3 inflight=0 even=false"},
		{"a fresh move task (still pending) is in flight", mkService("s", 6, parallelism(1)), nodes3,
			append(onNodes(3, 3, 0), mkTask("new3", "s", 3, onNode("n3"), st(tsPending), msg(msgPending), created(t0))), nil,
			"inflight=1 even=false"},
		{"drained, paused and down nodes take nothing and their tasks are not counted", mkService("s", 4, parallelism(0)),
			[]*shoalv1.Node{mkNode("n1"), mkNode("n2", drain()), mkNode("n3", pauseNode()), mkNode("n4", down()), mkNode("n5")},
			onNodes(3, 1, 0, 0, 0), nil, "t03:3 n1>n5 inflight=0 even=false"},
		{"auto: an unsettled node does not count", mkService("s", 6, parallelism(0)), nodes3, onNodes(3, 3, 0), []string{"n1", "n2"},
			"inflight=0 even=true"},
		{"constraints limit the nodes", mkService("s", 4, parallelism(0), svcConstraints("node.labels.zone==a")),
			[]*shoalv1.Node{mkNode("n1", nodeLabel("zone", "a")), mkNode("n2"), mkNode("n3", nodeLabel("zone", "a"))}, onNodes(4, 0, 0), nil,
			"t04:4 n1>n3 t03:3 n1>n3 inflight=0 even=false"},
		{"max replicas per node bounds the target", mkService("s", 6, parallelism(0), maxPer(3)), []*shoalv1.Node{mkNode("n1"), mkNode("n2")},
			onNodes(3, 3), nil, "inflight=0 even=true"},
		{"only running (and healthy) tasks move", mkService("s", 3, parallelism(0)), []*shoalv1.Node{mkNode("n1"), mkNode("n2")},
			[]*shoalv1.Task{
				mkTask("a", "s", 1, onNode("n1"), st(tsAssigned)),
				mkTask("b", "s", 2, onNode("n1"), health(shoalv1.TaskHealth_TASK_HEALTH_STARTING)),
				mkTask("c", "s", 3, onNode("n1"), health(shoalv1.TaskHealth_TASK_HEALTH_HEALTHY)),
			}, nil, "c:3 n1>n2 inflight=0 even=false"},
		{"the most loaded node's tasks are still starting: not even, nothing to move yet", mkService("s", 3, parallelism(0)), []*shoalv1.Node{mkNode("n1"), mkNode("n2")},
			[]*shoalv1.Task{mkTask("a", "s", 1, onNode("n1"), st(tsAssigned)), mkTask("b", "s", 2, onNode("n1"), st(tsAssigned)), mkTask("c", "s", 3, onNode("n1"), st(tsAssigned))},
			nil, "inflight=0 even=false"},
		{"a rollout under way: its outdated tasks are not moved (the rollout replaces them under its parallelism)",
			mkService("s", 6, parallelism(0), specVersion(2)), nodes3, onNodes(3, 3, 0), nil, "inflight=0 even=false"},
		{"a rollout's start-first replacement (not placed yet, no node) is not a move: not cancelled",
			mkService("s", 2, parallelism(1), specVersion(2)), []*shoalv1.Node{mkNode("n1"), mkNode("n2")},
			append(onNodes(1, 1), mkTask("r1", "s", 1, version(2), onNode(""), st(tsPending), msg(msgPending), created(t0))), nil,
			"inflight=0 even=true"},
		{"a rollout's start-first replacement the scheduler cannot place yet is not cancelled either",
			mkService("s", 2, parallelism(1), specVersion(2)), []*shoalv1.Node{mkNode("n1"), mkNode("n2")},
			append(onNodes(1, 1), mkTask("r1", "s", 1, version(2), onNode("n2"), st(tsPending), msg(`no node has 2 GiB free`), created(t0))), nil,
			"inflight=0 even=true"},
		{"binpack is never rebalanced", mkService("s", 6, parallelism(0), strategy("binpack")), nodes3, onNodes(6, 0, 0), nil, "inflight=0 even=true"},
		{"global services are not rebalanced", mkService("s", 0, global()), nodes3, onNodes(2, 0, 0), nil, "inflight=0 even=true"},
		{"a single node is even", mkService("s", 3, parallelism(0)), []*shoalv1.Node{mkNode("n1")}, onNodes(3), nil, "inflight=0 even=true"},
		{"within one is even", mkService("s", 5, parallelism(0)), nodes3, onNodes(2, 2, 1), nil, "inflight=0 even=true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var settled func(string) bool
			if tt.settled != nil {
				settled = func(id string) bool { return slices.Contains(tt.settled, id) }
			}
			before := snapshot(tt.tasks)
			got := describeRebalance(PlanRebalance(tt.svc, tt.nodes, tt.tasks, settled, t0))
			if got != tt.want {
				t.Errorf("plan:\n got %s\nwant %s", got, tt.want)
			}
			sameMessages(t, "tasks", tt.tasks, before)
		})
	}
}

// TestRebalanceConverges plays a rebalance to the end: moves start, the
// reconciler keeps both tasks of a moving slot until the new one runs,
// then stops the old one; at no step does a slot lack a running task.
func TestRebalanceConverges(t *testing.T) {
	svc := mkService("s", 7, parallelism(2))
	nodes := []*shoalv1.Node{mkNode("n1"), mkNode("n2"), mkNode("n3")}
	tasks := onNodes(7, 0, 0)
	now := t0
	for step := 0; step < 20; step++ {
		p := PlanRebalance(svc, nodes, tasks, nil, now)
		if p.Even {
			per := map[string]int{}
			for _, tk := range tasks {
				if isLive(tk) {
					per[tk.GetNodeId()]++
				}
			}
			if want := map[string]int{"n1": 3, "n2": 2, "n3": 2}; fmt.Sprint(per) != fmt.Sprint(want) {
				t.Fatalf("even at step %d with %v, want %v", step, per, want)
			}
			return
		}
		if len(p.Moves)+p.InFlight > 2 {
			t.Fatalf("step %d: %d moves with %d in flight, parallelism 2", step, len(p.Moves), p.InFlight)
		}
		var created []*shoalv1.Task
		for _, m := range p.Moves {
			created = append(created, newTask(svc, m.Slot, m.To, now))
		}
		tasks = applyPlan(tasks, Plan{Create: created}, now)
		// The reconciler must keep both tasks of a moving slot.
		rp := ReconcileReplicated(svc, tasks, now)
		if !rp.Empty() {
			t.Fatalf("step %d: the reconciler touched a move in flight: %s", step, describe(rp))
		}
		// The agents start the new tasks.
		var ups []*shoalv1.Task
		for _, tk := range tasks {
			if isLive(tk) && tk.GetStatus().GetState() < tsRunning {
				u := cloneTask(tk)
				u.Status.State = tsRunning
				ups = append(ups, u)
			}
		}
		now = now.Add(time.Second)
		tasks = applyPlan(tasks, Plan{Update: ups}, now)
		// Now the reconciler stops the old ones, and they end.
		rp = ReconcileReplicated(svc, tasks, now)
		if len(rp.Update) != len(ups) || len(rp.Create) != 0 {
			t.Fatalf("step %d: reconcile after the moves ran: %s", step, describe(rp))
		}
		for _, u := range rp.Update {
			if u.GetDesiredState() != tsShutdown || slices.ContainsFunc(ups, func(n *shoalv1.Task) bool { return n.GetMeta().GetId() == u.GetMeta().GetId() }) {
				t.Fatalf("step %d: reconcile stopped the wrong task: %s", step, describe(rp))
			}
			u.Status.State = tsShutdown
		}
		tasks = applyPlan(tasks, rp, now)
		for slot := uint64(1); slot <= 7; slot++ {
			n := 0
			for _, tk := range tasks {
				if tk.GetSlot() == slot && isLive(tk) && tk.GetStatus().GetState() == tsRunning {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("step %d: slot %d has %d running tasks", step, slot, n)
			}
		}
	}
	t.Fatal("the rebalance did not converge in 20 steps")
}

// TestMoveInFlight: the reconciler keeps a slot's two current tasks only
// while the newer, on another node, is on its way and the older runs.
func TestMoveInFlight(t *testing.T) {
	svc := mkService("s", 1)
	old := mkTask("old", "s", 1, onNode("n1"))
	tests := []struct {
		name  string
		other *shoalv1.Task
		keep  bool
	}{
		{"newer pending on another node", mkTask("new", "s", 1, onNode("n2"), st(tsPending), created(t0)), true},
		{"newer running but its health check still starting", mkTask("new", "s", 1, onNode("n2"), health(shoalv1.TaskHealth_TASK_HEALTH_STARTING), created(t0)), true},
		{"newer running: the old one goes", mkTask("new", "s", 1, onNode("n2"), created(t0)), false},
		{"same node: a duplicate", mkTask("new", "s", 1, onNode("n1"), st(tsPending), created(t0)), false},
		{"not placed yet (no node): a duplicate", mkTask("new", "s", 1, onNode(""), st(tsPending), created(t0)), false},
		{"older spec: an update's business", mkTask("new", "s", 1, onNode("n2"), st(tsPending), version(0), created(t0)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ReconcileReplicated(svc, []*shoalv1.Task{old, tt.other}, t0)
			if got := p.Empty(); got != tt.keep {
				t.Fatalf("plan %q; want both kept: %v", describe(p), tt.keep)
			}
		})
	}
}
