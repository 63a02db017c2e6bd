package scheduler

import (
	"fmt"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// benchCluster builds a cluster shaped like a real one: nodes in three
// zones with capacity, a few down or drained, five running tasks per node,
// and pending tasks in services of perService replicas, a third of them
// constrained, half with reservations, some with a per-node maximum (one
// service of all the tasks is unconstrained, reserves and has no maximum).
func benchCluster(nodeCount, pendingCount, perService int) (nodes []*shoalv1.Node, existing, pending []*shoalv1.Task) {
	zones := []string{"a", "b", "c"}
	for i := 0; i < nodeCount; i++ {
		opts := []nodeOpt{capacity(16*cpu1, 64*gib), label("zone", zones[i%3])}
		switch {
		case i%20 == 7:
			opts = append(opts, nodeState(shoalv1.NodeState_NODE_STATE_DOWN))
		case i%25 == 3:
			opts = append(opts, avail(shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN))
		}
		id := fmt.Sprintf("node-%05d", i)
		nodes = append(nodes, mkNode(id, opts...))
		for j := 0; j < 5; j++ {
			existing = append(existing, mkTask(fmt.Sprintf("old-%05d-%d", i, j), fmt.Sprintf("old-svc-%d", j), uint64(i+1),
				on(id), running(), reserve(cpu1/2, gib)))
		}
	}
	for s := 0; s*perService < pendingCount; s++ {
		svc := fmt.Sprintf("svc-%04d", s)
		var opts []taskOpt
		if s%3 == 0 {
			opts = append(opts, constraints("node.labels.zone!=c", "node.platform.os==linux"))
		}
		if s%2 == 0 {
			opts = append(opts, reserve(cpu1/10, 256<<20))
		}
		if s%5 == 0 && perService < pendingCount {
			opts = append(opts, maxPerNode(2))
		}
		n := min(perService, pendingCount-s*perService)
		pending = append(pending, replicas(svc, n, opts...)...)
	}
	return nodes, existing, pending
}

func benchmarkSchedule(b *testing.B, nodeCount, pendingCount, perService int) {
	nodes, existing, pending := benchCluster(nodeCount, pendingCount, perService)
	b.ReportAllocs()
	b.ResetTimer()
	var placed int
	for b.Loop() {
		as, _ := Schedule(nodes, existing, pending)
		placed = len(as)
	}
	if placed == 0 {
		b.Fatal("nothing placed")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(pendingCount), "ns/task")
}

func BenchmarkSchedule(b *testing.B) {
	for _, c := range []struct{ nodes, pending, perService int }{
		{100, 1000, 100},
		{1000, 10000, 100},
		// The figures: 100,000 tasks as 1,000 services of 100 and
		// as one service, on 1,000 and 5,000 nodes.
		{1000, 100000, 100},
		{1000, 100000, 100000},
		{5000, 100000, 100},
		{5000, 100000, 100000},
	} {
		b.Run(fmt.Sprintf("nodes=%d/pending=%d/per_service=%d", c.nodes, c.pending, c.perService), func(b *testing.B) {
			benchmarkSchedule(b, c.nodes, c.pending, c.perService)
		})
	}
}
