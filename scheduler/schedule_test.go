package scheduler

import (
	"fmt"
	"reflect"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

const (
	gib  = int64(1) << 30
	cpu1 = int64(1e9)
)

// nodeOpt changes a test node.
type nodeOpt func(*shoalv1.Node)

func mkNode(id string, opts ...nodeOpt) *shoalv1.Node {
	n := &shoalv1.Node{
		Meta:        &shoalv1.Meta{Id: id},
		Spec:        &shoalv1.NodeSpec{Availability: shoalv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE},
		Description: &shoalv1.NodeDescription{Hostname: "host-" + id, Os: "linux", Arch: "amd64", Resources: &shoalv1.Resources{}},
		Status:      &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_READY},
		Role:        shoalv1.NodeRole_NODE_ROLE_WORKER,
	}
	for _, o := range opts {
		o(n)
	}
	return n
}

func nodeState(s shoalv1.NodeState) nodeOpt { return func(n *shoalv1.Node) { n.Status.State = s } }
func avail(a shoalv1.NodeAvailability) nodeOpt {
	return func(n *shoalv1.Node) { n.Spec.Availability = a }
}
func capacity(cpu, mem int64) nodeOpt {
	return func(n *shoalv1.Node) { n.Description.Resources = &shoalv1.Resources{NanoCpus: cpu, MemoryBytes: mem} }
}
func label(k, v string) nodeOpt {
	return func(n *shoalv1.Node) {
		if n.Spec.Labels == nil {
			n.Spec.Labels = map[string]string{}
		}
		n.Spec.Labels[k] = v
	}
}
func manager() nodeOpt { return func(n *shoalv1.Node) { n.Role = shoalv1.NodeRole_NODE_ROLE_MANAGER } }

// taskOpt changes a test task.
type taskOpt func(*shoalv1.Task)

func mkTask(id, svc string, slot uint64, opts ...taskOpt) *shoalv1.Task {
	t := &shoalv1.Task{
		Meta: &shoalv1.Meta{Id: id}, ServiceId: svc, Slot: slot,
		DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING,
		Status:       &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_PENDING},
		Spec:         &shoalv1.TaskSpec{Resources: &shoalv1.ResourceRequirements{}, Placement: &shoalv1.Placement{}},
	}
	for _, o := range opts {
		o(t)
	}
	return t
}

func on(node string) taskOpt { return func(t *shoalv1.Task) { t.NodeId = node } }
func running() taskOpt {
	return func(t *shoalv1.Task) { t.Status.State = shoalv1.TaskState_TASK_STATE_RUNNING }
}
func taskState(s shoalv1.TaskState) taskOpt { return func(t *shoalv1.Task) { t.Status.State = s } }
func reserve(cpu, mem int64) taskOpt {
	return func(t *shoalv1.Task) {
		t.Spec.Resources.Reservations = &shoalv1.Resources{NanoCpus: cpu, MemoryBytes: mem}
	}
}
func constraints(cs ...string) taskOpt {
	return func(t *shoalv1.Task) { t.Spec.Placement.Constraints = cs }
}
func maxPerNode(n int64) taskOpt {
	return func(t *shoalv1.Task) { t.Spec.Placement.MaxReplicasPerNode = n }
}

// replicas makes n pending tasks of svc, slots 1..n, ids svc-1.., with opts.
func replicas(svc string, n int, opts ...taskOpt) []*shoalv1.Task {
	var out []*shoalv1.Task
	for i := 1; i <= n; i++ {
		out = append(out, mkTask(fmt.Sprintf("%s-%02d", svc, i), svc, uint64(i), opts...))
	}
	return out
}

func cat(lists ...[]*shoalv1.Task) []*shoalv1.Task {
	var out []*shoalv1.Task
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

func TestSchedule(t *testing.T) {
	ready3 := []*shoalv1.Node{mkNode("n1"), mkNode("n2"), mkNode("n3")}
	tests := []struct {
		name     string
		nodes    []*shoalv1.Node
		existing []*shoalv1.Task
		pending  []*shoalv1.Task
		want     map[string]string // task id -> node id
		failures map[string]string // task id -> reason
	}{
		{
			name:  "spread evenly, ties by node id",
			nodes: ready3, pending: replicas("s", 4),
			want: map[string]string{"s-01": "n1", "s-02": "n2", "s-03": "n3", "s-04": "n1"},
		},
		{
			name:    "not ready, paused and drained nodes are skipped",
			nodes:   []*shoalv1.Node{mkNode("n1", nodeState(shoalv1.NodeState_NODE_STATE_DOWN)), mkNode("n2", nodeState(shoalv1.NodeState_NODE_STATE_UNKNOWN)), mkNode("n3", avail(shoalv1.NodeAvailability_NODE_AVAILABILITY_PAUSE)), mkNode("n4", avail(shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN)), mkNode("n5")},
			pending: replicas("s", 2),
			want:    map[string]string{"s-01": "n5", "s-02": "n5"},
		},
		{
			name:    "nothing ready: the reason counts nodes by cause",
			nodes:   []*shoalv1.Node{mkNode("n1", nodeState(shoalv1.NodeState_NODE_STATE_DOWN)), mkNode("n2", nodeState(shoalv1.NodeState_NODE_STATE_DISCONNECTED)), mkNode("n3", avail(shoalv1.NodeAvailability_NODE_AVAILABILITY_PAUSE)), mkNode("n4", avail(shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN)), mkNode("n5", label("zone", "b"))},
			pending: replicas("s", 1, constraints("node.labels.zone==a")),
			failures: map[string]string{
				"s-01": "no suitable node: 1 is down, 1 is not ready, 1 is paused, 1 is drained, 1 does not satisfy the constraints",
			},
		},
		{
			name:     "no nodes at all",
			pending:  replicas("s", 1),
			failures: map[string]string{"s-01": "no suitable node: the cluster has no nodes"},
		},
		{
			name:     "one node",
			nodes:    []*shoalv1.Node{mkNode("n1", nodeState(shoalv1.NodeState_NODE_STATE_DOWN))},
			pending:  replicas("s", 1),
			failures: map[string]string{"s-01": "no suitable node: 1 is down"},
		},
		{
			name:    "constraints: role and labels",
			nodes:   []*shoalv1.Node{mkNode("n1", manager(), label("zone", "a")), mkNode("n2", label("zone", "a")), mkNode("n3", label("zone", "b"))},
			pending: cat(replicas("m", 2, constraints("node.role==manager")), replicas("z", 2, constraints("node.labels.zone==a", "node.role!=manager"))),
			want:    map[string]string{"m-01": "n1", "m-02": "n1", "z-01": "n2", "z-02": "n2"},
		},
		{
			name:  "memory reservations fit against capacity minus existing and batch",
			nodes: []*shoalv1.Node{mkNode("n1", capacity(0, 4*gib)), mkNode("n2", capacity(0, 2*gib))},
			existing: []*shoalv1.Task{
				mkTask("old", "other", 1, on("n1"), running(), reserve(0, 2*gib)),
			},
			pending: replicas("s", 6, reserve(0, gib)),
			// Free: n1 2 GiB (1 task), n2 2 GiB (0 tasks). Spread alternates
			// n2, n1, n2 (now full), then n1 until it is full too.
			want: map[string]string{"s-01": "n2", "s-02": "n1", "s-03": "n2", "s-04": "n1"},
			failures: map[string]string{
				"s-05": "no node has 1 GiB free: 2 lack memory",
				"s-06": "no node has 1 GiB free: 2 lack memory",
			},
		},
		{
			name:  "insufficient memory and cpu are counted",
			nodes: []*shoalv1.Node{mkNode("n1", capacity(cpu1, 8*gib)), mkNode("n2", capacity(4*cpu1, gib)), mkNode("n3", capacity(4*cpu1, 8*gib))},
			existing: []*shoalv1.Task{
				mkTask("old", "other", 1, on("n3"), running(), reserve(3*cpu1, 7*gib)),
			},
			pending:  replicas("s", 1, reserve(2*cpu1, 2*gib)),
			failures: map[string]string{"s-01": "no node has 2 GiB and 2 CPUs free: 2 lack memory, 1 lacks CPU"},
		},
		{
			name:    "batch accounting: the second task no longer fits",
			nodes:   []*shoalv1.Node{mkNode("n1", capacity(2*cpu1, 0))},
			pending: replicas("s", 3, reserve(cpu1, gib)),
			want:    map[string]string{"s-01": "n1", "s-02": "n1"},
			failures: map[string]string{
				"s-03": "no node has 1 GiB and 1 CPU free: 1 lacks CPU",
			},
		},
		{
			name:    "zero capacity means unknown: unlimited",
			nodes:   []*shoalv1.Node{mkNode("n1")},
			pending: replicas("s", 3, reserve(64*cpu1, 1024*gib)),
			want:    map[string]string{"s-01": "n1", "s-02": "n1", "s-03": "n1"},
		},
		{
			name:  "terminal and not yet assigned existing tasks do not count",
			nodes: []*shoalv1.Node{mkNode("n1", capacity(0, gib))},
			existing: []*shoalv1.Task{
				mkTask("done", "s", 1, on("n1"), taskState(shoalv1.TaskState_TASK_STATE_COMPLETE), reserve(0, gib)),
				mkTask("pend", "s", 2, on("n1"), reserve(0, gib)),
				mkTask("ghost", "s", 3, on("gone"), running(), reserve(0, gib)),
			},
			pending: replicas("s", 1, reserve(0, gib)),
			want:    map[string]string{"s-01": "n1"},
		},
		{
			name:  "max replicas per node counts existing tasks of the service",
			nodes: []*shoalv1.Node{mkNode("n1"), mkNode("n2")},
			existing: []*shoalv1.Task{
				mkTask("old", "s", 9, on("n1"), running()),
			},
			pending: replicas("s", 3, maxPerNode(1)),
			want:    map[string]string{"s-01": "n2"},
			failures: map[string]string{
				"s-02": "no suitable node: 2 have the maximum of the service's tasks per node",
				"s-03": "no suitable node: 2 have the maximum of the service's tasks per node",
			},
		},
		{
			name:  "spread by service count first, then total tasks",
			nodes: ready3,
			existing: []*shoalv1.Task{
				mkTask("a1", "s", 10, on("n1"), running()),
				mkTask("b1", "other", 1, on("n2"), running()),
				mkTask("b2", "other", 2, on("n2"), running()),
				mkTask("b3", "other", 3, on("n3"), running()),
			},
			pending: replicas("s", 3),
			// counts (svc, total): n1 (1,1) n2 (0,2) n3 (0,1) → n3, then
			// n2 (0,2) vs n1 (1,1) vs n3 (1,2) → n2, then n1 (1,1).
			want: map[string]string{"s-01": "n3", "s-02": "n2", "s-03": "n1"},
		},
		{
			name:  "preset node: only there",
			nodes: []*shoalv1.Node{mkNode("n1"), mkNode("n2"), mkNode("n3", nodeState(shoalv1.NodeState_NODE_STATE_DOWN)), mkNode("n4", capacity(0, gib)), mkNode("n5", label("zone", "b"))},
			pending: []*shoalv1.Task{
				mkTask("g1", "g", 0, on("n2")),
				mkTask("g2", "g", 0, on("n2")),
				mkTask("g3", "g", 0, on("n3")),
				mkTask("g4", "g", 0, on("nx")),
				mkTask("h1", "h", 0, on("n4"), reserve(0, 2*gib)),
				mkTask("h2", "h", 0, on("n5"), constraints("node.labels.zone==a")),
			},
			want: map[string]string{"g1": "n2", "g2": "n2"},
			failures: map[string]string{
				"g3": `node "n3" is not suitable: down`,
				"g4": `node "nx" not found`,
				"h1": `node "n4" is not suitable: insufficient memory`,
				"h2": `node "n5" is not suitable: constraints not satisfied`,
			},
		},
		{
			name:    "preset node respects max per node",
			nodes:   []*shoalv1.Node{mkNode("n1")},
			pending: []*shoalv1.Task{mkTask("g1", "g", 0, on("n1"), maxPerNode(1)), mkTask("g2", "g", 0, on("n1"), maxPerNode(1))},
			want:    map[string]string{"g1": "n1"},
			failures: map[string]string{
				"g2": `node "n1" is not suitable: max replicas per node reached`,
			},
		},
		{
			name:    "invalid constraint fails the group only",
			nodes:   ready3,
			pending: cat(replicas("bad", 1, constraints("node.rol==x")), replicas("good", 1)),
			want:    map[string]string{"good-01": "n1"},
			failures: map[string]string{
				"bad-01": `invalid placement: constraints[0]: constraint "node.rol==x": unknown key "node.rol" (want node.id, node.name, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.<label>)`,
			},
		},
		{
			name:  "two placements in one service share the spread",
			nodes: []*shoalv1.Node{mkNode("n1", label("zone", "a")), mkNode("n2", label("zone", "a")), mkNode("n3")},
			pending: []*shoalv1.Task{
				mkTask("s-1", "s", 1, constraints("node.labels.zone==a")),
				mkTask("s-2", "s", 2),
				mkTask("s-3", "s", 3, constraints("node.labels.zone==a")),
				mkTask("s-4", "s", 4),
			},
			// zone-a group first (first seen): n1, n2; then the free group:
			// n3 (0 of s), then n1 (1 of s, tie broken by total then id).
			want: map[string]string{"s-1": "n1", "s-3": "n2", "s-2": "n3", "s-4": "n1"},
		},
		{
			name:  "services are independent for spread but share resources",
			nodes: []*shoalv1.Node{mkNode("n1", capacity(0, 2*gib)), mkNode("n2", capacity(0, 2*gib))},
			pending: cat(
				replicas("a", 2, reserve(0, gib)),
				replicas("b", 3, reserve(0, gib)),
			),
			want: map[string]string{"a-01": "n1", "a-02": "n2", "b-01": "n1", "b-02": "n2"},
			failures: map[string]string{
				"b-03": "no node has 1 GiB free: 2 lack memory",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as, fs := Schedule(tt.nodes, tt.existing, tt.pending)
			got := map[string]string{}
			for _, a := range as {
				got[a.TaskID] = a.NodeID
			}
			gotF := map[string]string{}
			for _, f := range fs {
				gotF[f.TaskID] = f.Reason
			}
			if len(tt.want) == 0 {
				tt.want = map[string]string{}
			}
			if len(tt.failures) == 0 {
				tt.failures = map[string]string{}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("assignments = %v, want %v", got, tt.want)
			}
			if !reflect.DeepEqual(gotF, tt.failures) {
				t.Errorf("failures:\n got %q\nwant %q", gotF, tt.failures)
			}
		})
	}
}

func TestScheduleOrderAndPurity(t *testing.T) {
	nodes := []*shoalv1.Node{mkNode("n2"), mkNode("n1")}
	pending := []*shoalv1.Task{
		mkTask("z", "b", 1), mkTask("y", "a", 2), mkTask("x", "a", 1), mkTask("w", "a", 1),
		mkTask("f", "c", 1, constraints("node.id==none")),
	}
	before := fmt.Sprint(pending)
	as, fs := Schedule(nodes, nil, pending)
	// b's task goes to n2: no task of b anywhere, and n2 has fewer tasks.
	want := []Assignment{{"w", "n1"}, {"x", "n2"}, {"y", "n1"}, {"z", "n2"}}
	if !reflect.DeepEqual(as, want) {
		t.Fatalf("assignments = %v, want %v (sorted by service, slot, id)", as, want)
	}
	if len(fs) != 1 || fs[0].TaskID != "f" {
		t.Fatalf("failures = %v", fs)
	}
	if fmt.Sprint(pending) != before {
		t.Fatal("Schedule changed its input")
	}
	// Same input, same output.
	as2, fs2 := Schedule(nodes, nil, pending)
	if !reflect.DeepEqual(as, as2) || !reflect.DeepEqual(fs, fs2) {
		t.Fatal("Schedule is not deterministic")
	}
}

func TestScheduleEmpty(t *testing.T) {
	as, fs := Schedule([]*shoalv1.Node{mkNode("n1"), nil}, []*shoalv1.Task{nil}, []*shoalv1.Task{nil})
	if len(as) != 0 || len(fs) != 0 {
		t.Fatalf("Schedule(nothing) = %v, %v", as, fs)
	}
}

func TestFailureReason(t *testing.T) {
	tests := []struct {
		name   string
		p      placement
		total  int
		counts map[cause]int
		want   string
	}{
		{"most first, ties in check order", placement{mem: 2 * gib}, 5,
			map[cause]int{causeDown: 1, causeDrained: 1, causeMemory: 3},
			"no node has 2 GiB free: 3 lack memory, 1 is down, 1 is drained"},
		{"cpu and memory", placement{cpu: cpu1 / 2, mem: 1536 << 20}, 2,
			map[cause]int{causeCPU: 1, causeMemory: 1},
			"no node has 1.5 GiB and 0.5 CPU free: 1 lacks memory, 1 lacks CPU"},
		{"no reservations", placement{}, 3,
			map[cause]int{causeConstraints: 2, causePaused: 1},
			"no suitable node: 2 do not satisfy the constraints, 1 is paused"},
		{"no nodes", placement{mem: 256 << 20}, 0, nil, "no node has 256 MiB free: the cluster has no nodes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c [numCauses]int
			for k, v := range tt.counts {
				c[k] = v
			}
			if got := failureReason(&tt.p, tt.total, c); got != tt.want {
				t.Fatalf("failureReason = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFormatUnits(t *testing.T) {
	for in, want := range map[int64]string{512: "512 B", 2 * gib: "2 GiB", 1536 << 20: "1.5 GiB", 256 << 20: "256 MiB", 100 << 10: "100 KiB"} {
		if got := FormatBytes(in); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[int64]string{cpu1 / 4: "0.25 CPU", cpu1: "1 CPU", 2 * cpu1: "2 CPUs", 3 * cpu1 / 2: "1.5 CPUs"} {
		if got := FormatCPU(in); got != want {
			t.Errorf("FormatCPU(%d) = %q, want %q", in, got, want)
		}
	}
}
