package orchestrator

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// The reaping rule: ends reported by an agent (or never held by one) may
// go; an ORPHANED task only once its node is removed or READY again.
func TestReapable(t *testing.T) {
	nodes := nodeStates([]*shoalv1.Node{mkNode("up"), mkNode("gone-down", down())})
	for _, tc := range []struct {
		name  string
		task  *shoalv1.Task
		nodes map[string]*shoalv1.Node
		want  bool
	}{
		{"live task: never", mkTask("a", "s", 1, onNode("up")), nodes, false},
		{"complete (agent reported)", mkTask("a", "s", 1, onNode("up"), ended(tsComplete, t0)), nodes, true},
		{"failed (agent reported)", mkTask("a", "s", 1, onNode("gone-down"), ended(tsFailed, t0)), nodes, true},
		{"shut down by its agent", mkTask("a", "s", 1, onNode("up"), ended(tsShutdown, t0)), nodes, true},
		{"closed before any agent held it", mkTask("a", "s", 1, onNode(""), ended(tsShutdown, t0)), nodes, true},
		{"orphaned, node still down: its container may run", mkTask("a", "s", 1, onNode("gone-down"), ended(tsOrphaned, t0)), nodes, false},
		{"orphaned, node ready again", mkTask("a", "s", 1, onNode("up"), ended(tsOrphaned, t0)), nodes, true},
		{"orphaned, node removed", mkTask("a", "s", 1, onNode("removed"), ended(tsOrphaned, t0)), nodes, true},
		{"orphaned, nodes unknown", mkTask("a", "s", 1, onNode("removed"), ended(tsOrphaned, t0)), nil, false},
	} {
		if got := Reapable(tc.task, tc.nodes); got != tc.want {
			t.Errorf("%s: Reapable = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// The history limit comes from the cluster setting; the newest are kept,
// and an ORPHANED task on a down node is kept beyond it.
func TestHistoryLimitSetting(t *testing.T) {
	svc := mkService("s", 1)
	var tasks []*shoalv1.Task
	for i := range 6 {
		tasks = append(tasks, mkTask(fmt.Sprintf("f%d", i), "s", 1, ended(tsFailed, ago(time.Duration(10-i)*time.Minute))))
	}
	tasks = append(tasks, mkTask("orph", "s", 1, onNode("n2"), ended(tsOrphaned, ago(time.Hour))))
	tasks = append(tasks, mkTask("live", "s", 1))
	nodes := []*shoalv1.Node{mkNode("n1"), mkNode("n2", down())}
	for _, tc := range []struct {
		limit int64
		want  string
	}{
		{0, "-f0"},                 // default 5 kept: f1..f5; orph is older but its node is down
		{2, "-f0 -f1 -f2 -f3"},     // f4, f5 kept
		{10, ""},                   // all kept
		{1, "-f0 -f1 -f2 -f3 -f4"}, // f5 kept
	} {
		cluster := &shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c"}, Settings: &shoalv1.ClusterSettings{TaskHistoryLimit: tc.limit}}
		h := &histRule{limit: int(cluster.GetSettings().GetTaskHistoryLimit()), nodes: nodeStates(nodes)}
		b := newBudget(1000, 1<<20)
		b.hist = h
		p := reconcileReplicated(svc, tasks, t0, b)
		if got := describe(p); got != tc.want {
			t.Errorf("limit %d: plan %q, want %q", tc.limit, got, tc.want)
		}
	}
	// The node returns: the orphaned task is reaped too.
	b := newBudget(1000, 1<<20)
	b.hist = &histRule{limit: 5, nodes: nodeStates([]*shoalv1.Node{mkNode("n1"), mkNode("n2")})}
	if got := describe(reconcileReplicated(svc, tasks, t0, b)); got != "-f0 -orph" {
		t.Errorf("node back: plan %q, want %q", got, "-f0 -orph")
	}
}

// The loop reads task_history_limit from the cluster object.
func TestHistoryLimitFromCluster(t *testing.T) {
	s := openStore(t)
	create(t, s, &shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c"}, Settings: &shoalv1.ClusterSettings{TaskHistoryLimit: 2}}, mkNode("n1"))
	startOrchestrator(t, s)
	create(t, s, mkService("web", 1, noRestartDelay()))
	for range 4 {
		eventually(t, "slot 1 has a live assigned task", func() error {
			return allAssigned(liveOf(tasksOf(s, "web")), 1)
		})
		report(t, s, isLive, tsFailed)
	}
	eventually(t, "history trimmed to the cluster's 2", func() error {
		n := 0
		for _, tk := range tasksOf(s, "web") {
			if isTerminal(tk) {
				n++
			}
		}
		if n != 2 {
			return fmt.Errorf("%d ended tasks, want 2: %s", n, brief(tasksOf(s, "web")))
		}
		return nil
	})
}

// An ORPHANED task beyond the limit stays while its node is down, and is
// reaped by the pass a node change makes once the node is READY again —
// nothing else happening to the service.
func TestOrphanReapedWhenItsNodeReturns(t *testing.T) {
	s := openStore(t)
	tasks := []*shoalv1.Task{
		mkTask("a", "web", 1, onNode("n2"), ended(tsOrphaned, ago(3*time.Minute))),
		mkTask("b", "web", 1, ended(tsFailed, ago(2*time.Minute))),
		mkTask("c", "web", 1, ended(tsFailed, ago(time.Minute))),
		mkTask("d", "web", 1),
	}
	objs := []raftstore.Object{&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c"}, Settings: &shoalv1.ClusterSettings{TaskHistoryLimit: 1}},
		mkNode("n1"), mkNode("n2", down()), mkService("web", 1, noRestartDelay())}
	for _, tk := range tasks {
		objs = append(objs, tk)
	}
	create(t, s, objs...)
	r := newReconciler(newOrchestrator(s, testLogger()))
	has := func(id string) bool {
		_, ok := raftstore.Get[*shoalv1.Task](s.View(), id)
		return ok
	}
	// A pass over the service: b goes (beyond the limit), a stays (its
	// node is down).
	r.services["web"] = true
	if _, err := r.pass(context.Background(), t0); err != nil {
		t.Fatal(err)
	}
	if has("b") || !has("a") || !has("c") {
		t.Fatalf("after the service's pass: a %v b %v c %v; want a and c kept, b reaped", has("a"), has("b"), has("c"))
	}
	// n2 is back: the pass its change makes (only the node marked) reaps a.
	changeNode(t, s, "n2", func(n *shoalv1.Node) { n.Status.State = shoalv1.NodeState_NODE_STATE_READY })
	r.nodes["n2"] = true
	if _, err := r.pass(context.Background(), t0); err != nil {
		t.Fatal(err)
	}
	if has("a") || !has("c") {
		t.Fatalf("after n2's return: a %v c %v; want a reaped, c kept", has("a"), has("c"))
	}
}

// Lowering task_history_limit reaps at once: the reconciler watches the
// cluster object and, when the limit changes, passes over every service
// (before, the new limit applied only to services that changed later).
// Other cluster writes (a gossip key rotation) cost no pass.
func TestHistoryLimitLoweredReapsAtOnce(t *testing.T) {
	s := openStore(t)
	objs := []raftstore.Object{&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c"}, Settings: &shoalv1.ClusterSettings{TaskHistoryLimit: 5}},
		mkNode("n1"), mkService("web", 1, noRestartDelay()), mkTask("live", "web", 1)}
	for i := range 4 {
		objs = append(objs, mkTask(fmt.Sprintf("e%d", i), "web", 1, ended(tsFailed, ago(time.Duration(i+2)*time.Minute))))
	}
	create(t, s, objs...)
	r := newReconciler(newOrchestrator(s, testLogger()))
	if !slices.Contains(r.kinds(), raftstore.KindCluster) {
		t.Fatal("the reconciler does not watch the cluster object")
	}
	ctx := context.Background()
	r.resync()
	if _, err := r.pass(ctx, t0); err != nil {
		t.Fatal(err)
	}
	ended := func() int {
		n := 0
		for _, tk := range tasksOf(s, "web") {
			if isTerminal(tk) {
				n++
			}
		}
		return n
	}
	if n := ended(); n != 4 {
		t.Fatalf("%d ended tasks within the limit 5, want 4", n)
	}
	setCluster := func(fn func(*shoalv1.ClusterSettings)) bool {
		t.Helper()
		var c *shoalv1.Cluster
		write(t, s, func(tx raftstore.WriteTx) error {
			cur, _ := raftstore.ClusterOf(tx)
			c = proto.Clone(cur).(*shoalv1.Cluster)
			fn(c.Settings)
			return tx.Update(c)
		})
		return r.observe(&shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_UPDATE, Object: raftstore.Wrap(c)})
	}
	if setCluster(func(cs *shoalv1.ClusterSettings) { cs.MaxReplicas = 7 }) {
		t.Error("a cluster write that leaves the history limit asks for a pass")
	}
	if !setCluster(func(cs *shoalv1.ClusterSettings) { cs.TaskHistoryLimit = 1 }) {
		t.Fatal("lowering the history limit asks for no pass")
	}
	if _, err := r.pass(ctx, t0); err != nil {
		t.Fatal(err)
	}
	if n := ended(); n != 1 {
		t.Fatalf("after lowering the limit to 1: %d ended tasks, want 1: %s", n, brief(tasksOf(s, "web")))
	}
}
