package raftstore

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// BenchmarkFindManyMatches: a lookup by a non-unique index whose value
// 50,000 of 100,000 tasks share (a big service's tasks), as Find (the
// whole range) and as Count (a walk without collecting). Each match costs
// the secondary key and a lookup of its id in the id tree.
func BenchmarkFindManyMatches(b *testing.B) {
	f := newTestFSM()
	index := uint64(0)
	for batch := range 100 {
		var ops []*shoalv1.StoreOp
		for i := range 1000 {
			n := batch*1000 + i
			ops = append(ops, opCreate(mkTask(fmt.Sprintf("%016x", uint64(n)*0x9e3779b97f4a7c15), fmt.Sprintf("s%d", n%2), "n1", shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_RUNNING)))
		}
		index++
		if res := f.ApplyBatch([]*raft.Log{entry(b, index, ops...)}); res[0] != nil {
			b.Fatal(res[0])
		}
	}
	v := f.view()
	b.Run("Find", func(b *testing.B) {
		for b.Loop() {
			if got := len(v.Find(KindTask, IndexServiceID, "s1")); got != 50000 {
				b.Fatal(got)
			}
		}
	})
	b.Run("Count", func(b *testing.B) {
		for b.Loop() {
			if got := Count[*shoalv1.Task](v, IndexServiceID, "s1", nil); got != 50000 {
				b.Fatal(got)
			}
		}
	})
}
