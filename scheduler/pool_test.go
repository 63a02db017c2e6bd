package scheduler

import (
	"fmt"
	"math/rand"
	"reflect"
	"slices"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestSpreadIsPerService: a node that got a task of one service in a batch
// does not count as holding the next service's tasks.
func TestSpreadIsPerService(t *testing.T) {
	got, fails := placed([]*shoalv1.Node{mkNode("n1"), mkNode("n2")},
		[]*shoalv1.Task{mkTask("o", "other", 1, on("n2"), running())},
		cat(replicas("a", 1), replicas("b", 2)))
	// a-01 → n1 (fewer tasks); then b sees n1 (1 task) and n2 (1 task),
	// neither with a task of b: n1 by id, then n2.
	if want := map[string]string{"a-01": "n1", "b-01": "n1", "b-02": "n2"}; !reflect.DeepEqual(got, want) || len(fails) != 0 {
		t.Fatalf("got %v %v, want %v", got, fails, want)
	}
}

// TestPoolMatchesReference: the pool (shared heap) places exactly as a
// heap per group over every node would, on random clusters: services with
// existing tasks, constraints, reservations, per-node maxima, presets and
// nodes that cannot take tasks.
func TestPoolMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewSource(42))
	for round := 0; round < 200; round++ {
		nodes, existing, pending := randomCluster(rng)
		as, fs := Schedule(nodes, existing, pending)
		noPool = true
		ras, rfs := Schedule(nodes, existing, pending)
		noPool = false
		if !reflect.DeepEqual(as, ras) {
			t.Fatalf("round %d: assignments differ:\npool %v\n ref %v", round, as, ras)
		}
		ids := func(fs []Failure) []string {
			var out []string
			for _, f := range fs {
				out = append(out, f.TaskID)
			}
			return out
		}
		if !slices.Equal(ids(fs), ids(rfs)) {
			t.Fatalf("round %d: failures differ:\npool %v\n ref %v", round, fs, rfs)
		}
	}
}

func randomCluster(rng *rand.Rand) (nodes []*shoalv1.Node, existing, pending []*shoalv1.Task) {
	nNodes := 1 + rng.Intn(12)
	for i := 0; i < nNodes; i++ {
		opts := []nodeOpt{label("zone", fmt.Sprint("z", rng.Intn(3)))}
		switch rng.Intn(8) {
		case 0:
			opts = append(opts, nodeState(shoalv1.NodeState_NODE_STATE_DOWN))
		case 1:
			opts = append(opts, avail(shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN))
		}
		if rng.Intn(2) == 0 {
			opts = append(opts, capacity(int64(1+rng.Intn(4))*cpu1, int64(1+rng.Intn(4))*gib))
		}
		nodes = append(nodes, mkNode(fmt.Sprintf("n%02d", i), opts...))
	}
	svcs := 1 + rng.Intn(5)
	for s := 0; s < svcs; s++ {
		svc := fmt.Sprint("s", s)
		for k := rng.Intn(4); k > 0; k-- {
			existing = append(existing, mkTask(fmt.Sprintf("old-%s-%d", svc, k), svc, uint64(100+k),
				on(fmt.Sprintf("n%02d", rng.Intn(nNodes))), running(), reserve(cpu1/2, gib/2)))
		}
		var opts []taskOpt
		if rng.Intn(3) == 0 {
			opts = append(opts, constraints(fmt.Sprint("node.labels.zone!=z", rng.Intn(3))))
		}
		if rng.Intn(2) == 0 {
			opts = append(opts, reserve(cpu1/2, gib/2))
		}
		if rng.Intn(3) == 0 {
			opts = append(opts, maxPerNode(int64(1+rng.Intn(2))))
		}
		pending = append(pending, replicas(svc, 1+rng.Intn(15), opts...)...)
		if rng.Intn(4) == 0 {
			pending = append(pending, mkTask("preset-"+svc, svc, 50, on(fmt.Sprintf("n%02d", rng.Intn(nNodes))), reserve(cpu1/2, gib/2)))
		}
	}
	return nodes, existing, pending
}
