package allocator

import (
	"fmt"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// BenchmarkPlan1000: one pass allocating 1,000 pending tasks on a /16.
func BenchmarkPlan1000(b *testing.B) {
	os := []raftstore.Object{net("n1", "10.1.0.0/16"), svc("s1", "", "n1")}
	for i := 0; i < 1000; i++ {
		os = append(os, task(fmt.Sprintf("t%04d", i), statePending, "n1"))
	}
	r := reader(os...)
	for b.Loop() {
		st, _ := Rebuild(raftstore.List[*shoalv1.Network](r), nil, nil)
		var undo Undo
		res := Plan(st, r, Work{All: true}, 2000, 1<<30, &undo)
		if len(res.Tasks) != 1000 {
			b.Fatal(len(res.Tasks))
		}
	}
}
