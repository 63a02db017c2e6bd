package scheduler

import (
	"fmt"
	"reflect"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func spread(labels ...string) taskOpt {
	return func(t *shoalv1.Task) { t.Spec.Placement.Spread = labels }
}
func strategy(s string) taskOpt {
	return func(t *shoalv1.Task) { t.Spec.Placement.Strategy = s }
}

// placed runs Schedule and returns task id → node id, and the failures.
func placed(nodes []*shoalv1.Node, existing, pending []*shoalv1.Task) (map[string]string, map[string]string) {
	as, fs := Schedule(nodes, existing, pending)
	got, gotF := map[string]string{}, map[string]string{}
	for _, a := range as {
		got[a.TaskID] = a.NodeID
	}
	for _, f := range fs {
		gotF[f.TaskID] = f.Reason
	}
	return got, gotF
}

// perValue counts the assignments per value of a node label.
func perValue(nodes []*shoalv1.Node, got map[string]string, labels ...string) map[string]int {
	byID := map[string]*shoalv1.Node{}
	for _, n := range nodes {
		byID[n.GetMeta().GetId()] = n
	}
	out := map[string]int{}
	for _, nodeID := range got {
		key := ""
		for _, l := range labels {
			key += l + "=" + byID[nodeID].GetSpec().GetLabels()[l] + ";"
		}
		out[key]++
	}
	return out
}

func TestSchedulePreferencesAndStrategy(t *testing.T) {
	// Zone a has three nodes, zone b one: spread over nodes alone would
	// put three quarters in a; the preference splits evenly by zone.
	zones := []*shoalv1.Node{
		mkNode("a1", label("zone", "a")), mkNode("a2", label("zone", "a")), mkNode("a3", label("zone", "a")),
		mkNode("b1", label("zone", "b")),
	}
	tests := []struct {
		name     string
		nodes    []*shoalv1.Node
		existing []*shoalv1.Task
		pending  []*shoalv1.Task
		want     map[string]string
		failures map[string]string
	}{
		{
			name:  "spread over a label: even by value, not by node",
			nodes: zones, pending: replicas("s", 4, spread("node.labels.zone")),
			// a (0) vs b (0): a by value; then b; then a (1) vs b (1): a; b.
			want: map[string]string{"s-01": "a1", "s-02": "b1", "s-03": "a2", "s-04": "b1"},
		},
		{
			name:  "existing tasks of the service count per value",
			nodes: zones,
			existing: []*shoalv1.Task{
				mkTask("old1", "s", 7, on("a1"), running()), mkTask("old2", "s", 8, on("a2"), running()),
			},
			pending: replicas("s", 3, spread("node.labels.zone")),
			want:    map[string]string{"s-01": "b1", "s-02": "b1", "s-03": "a3"},
		},
		{
			name: "nodes without the label form their own group",
			nodes: []*shoalv1.Node{
				mkNode("a1", label("zone", "a")), mkNode("a2", label("zone", "a")), mkNode("x1"), mkNode("x2"),
			},
			pending: replicas("s", 4, spread("node.labels.zone")),
			// "" (no label) sorts before "a".
			want: map[string]string{"s-01": "x1", "s-02": "a1", "s-03": "x2", "s-04": "a2"},
		},
		{
			name: "a full value falls back to the others",
			nodes: []*shoalv1.Node{
				mkNode("a1", label("zone", "a"), capacity(0, gib)), mkNode("b1", label("zone", "b")),
			},
			pending: replicas("s", 3, spread("node.labels.zone"), reserve(0, gib)),
			want:    map[string]string{"s-01": "a1", "s-02": "b1", "s-03": "b1"},
		},
		{
			name:     "binpack without reservations: the node with most tasks, up to the maximum",
			nodes:    []*shoalv1.Node{mkNode("n1"), mkNode("n2"), mkNode("n3")},
			existing: []*shoalv1.Task{mkTask("o1", "other", 1, on("n2"), running())},
			pending:  replicas("s", 5, strategy("binpack"), maxPerNode(2)),
			// n2 has a task: it fills first (2), then n1 (2, ties by id), then n3.
			want: map[string]string{"s-01": "n2", "s-02": "n2", "s-03": "n1", "s-04": "n1", "s-05": "n3"},
		},
		{
			name: "binpack with reservations: least free memory that still fits",
			nodes: []*shoalv1.Node{
				mkNode("n1", capacity(0, 8*gib)), mkNode("n2", capacity(0, 3*gib)), mkNode("n3", capacity(0, 4*gib)), mkNode("n4"),
			},
			pending: replicas("s", 7, strategy("binpack"), reserve(0, 2*gib)),
			// n2 (3 free) takes one, then 1 free: out; n3 (4) takes two;
			// n1 (8) four... the unknown-capacity node n4 last.
			want: map[string]string{"s-01": "n2", "s-02": "n3", "s-03": "n3", "s-04": "n1", "s-05": "n1", "s-06": "n1", "s-07": "n1"},
		},
		{
			name: "binpack spills to the unknown-capacity node last",
			nodes: []*shoalv1.Node{
				mkNode("n1", capacity(0, 2*gib)), mkNode("n4"),
			},
			pending: replicas("s", 3, strategy("binpack"), reserve(0, gib)),
			want:    map[string]string{"s-01": "n1", "s-02": "n1", "s-03": "n4"},
		},
		{
			name:    "binpack under a spread preference: fill within each value",
			nodes:   []*shoalv1.Node{mkNode("a1", label("zone", "a")), mkNode("a2", label("zone", "a")), mkNode("b1", label("zone", "b")), mkNode("b2", label("zone", "b"))},
			pending: replicas("s", 4, spread("node.labels.zone"), strategy("binpack")),
			want:    map[string]string{"s-01": "a1", "s-02": "b1", "s-03": "a1", "s-04": "b1"},
		},
		{
			name:     "invalid preference fails the group",
			nodes:    zones,
			pending:  replicas("s", 1, spread("node.id")),
			failures: map[string]string{"s-01": `invalid placement: spread[0]: spread preference "node.id": want node.labels.<label>`},
		},
		{
			name:     "invalid strategy fails the group",
			nodes:    zones,
			pending:  replicas("s", 1, strategy("random")),
			failures: map[string]string{"s-01": `invalid placement: strategy "random": want spread or binpack`},
		},
		{
			name:    "paused nodes take no new task",
			nodes:   []*shoalv1.Node{mkNode("n1", avail(shoalv1.NodeAvailability_NODE_AVAILABILITY_PAUSE)), mkNode("n2")},
			pending: replicas("s", 2),
			want:    map[string]string{"s-01": "n2", "s-02": "n2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, gotF := placed(tt.nodes, tt.existing, tt.pending)
			if tt.want == nil {
				tt.want = map[string]string{}
			}
			if tt.failures == nil {
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

// TestNestedSpread: two regions, the first with two zones and the second
// with one; 12 tasks go 6 per region, then 3 per zone in the first region;
// within a zone, by node.
func TestNestedSpread(t *testing.T) {
	var nodes []*shoalv1.Node
	add := func(id, region, zone string) {
		nodes = append(nodes, mkNode(id, label("region", region), label("zone", zone)))
	}
	add("e1", "eu", "eu-a")
	add("e2", "eu", "eu-a")
	add("e3", "eu", "eu-b")
	add("u1", "us", "us-a")
	add("u2", "us", "us-a")
	add("u3", "us", "us-a")
	got, fails := placed(nodes, nil, replicas("s", 12, spread("node.labels.region", "node.labels.zone")))
	if len(fails) != 0 {
		t.Fatalf("failures: %v", fails)
	}
	if want := map[string]int{"region=eu;": 6, "region=us;": 6}; !reflect.DeepEqual(perValue(nodes, got, "region"), want) {
		t.Errorf("per region = %v, want %v", perValue(nodes, got, "region"), want)
	}
	if want := map[string]int{"zone=eu-a;": 3, "zone=eu-b;": 3, "zone=us-a;": 6}; !reflect.DeepEqual(perValue(nodes, got, "zone"), want) {
		t.Errorf("per zone = %v, want %v", perValue(nodes, got, "zone"), want)
	}
	perNode := map[string]int{}
	for _, n := range got {
		perNode[n]++
	}
	if want := map[string]int{"e1": 2, "e2": 1, "e3": 3, "u1": 2, "u2": 2, "u3": 2}; !reflect.DeepEqual(perNode, want) {
		t.Errorf("per node = %v, want %v", perNode, want)
	}
}

// TestSpreadPreferenceAtScale checks the tree's bookkeeping on a bigger
// cluster: every task placed, values even within one, nodes within a value
// even within one.
func TestSpreadPreferenceAtScale(t *testing.T) {
	var nodes []*shoalv1.Node
	for i := 0; i < 97; i++ {
		nodes = append(nodes, mkNode(fmt.Sprintf("n%03d", i), label("rack", fmt.Sprintf("r%d", i%7))))
	}
	got, fails := placed(nodes, nil, replicas("s", 1000, spread("node.labels.rack")))
	if len(fails) != 0 || len(got) != 1000 {
		t.Fatalf("%d placed, failures %v", len(got), fails)
	}
	lo, hi := 1<<30, 0
	for _, c := range perValue(nodes, got, "rack") {
		lo, hi = min(lo, c), max(hi, c)
	}
	if hi-lo > 1 {
		t.Errorf("racks uneven: %d..%d", lo, hi)
	}
}

func TestParseSpreadAndStrategy(t *testing.T) {
	for in, want := range map[string]string{"node.labels.zone": "zone", "spread=node.labels.Zone": "Zone", " node.labels.a.b ": "a.b"} {
		if got, err := ParseSpread(in); err != nil || got != want {
			t.Errorf("ParseSpread(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "node.labels.", "node.hostname", "zone"} {
		if _, err := ParseSpread(in); err == nil {
			t.Errorf("ParseSpread(%q): no error", in)
		}
	}
	for in, want := range map[string]string{"": "spread", "spread": "spread", "binpack": "binpack"} {
		if got, err := ParseStrategy(in); err != nil || got != want {
			t.Errorf("ParseStrategy(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseStrategy("Binpack"); err == nil {
		t.Error("ParseStrategy(Binpack): no error")
	}
}
