package raftstore

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// BenchmarkDecodeCompactEntry: turning an entry of 1,000 compact task ops
// (the scheduler's assignments, the agents' statuses, the reconciler's
// creations) into the action the FSM applies, by decoding it (a follower)
// or copying the proposal (the leader).
func BenchmarkDecodeCompactEntry(b *testing.B) {
	const n = 1000
	st := &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING, Timestamp: timestamppb.New(t0), Message: "started"}
	forms := map[string]func(i int) *shoalv1.StoreOp{
		"assign": func(i int) *shoalv1.StoreOp { return assignOp(fmt.Sprintf("task%06d", i), 7, "node0001", st) },
		"status": func(i int) *shoalv1.StoreOp { return statusOp(fmt.Sprintf("task%06d", i), 7, st) },
		"create": func(i int) *shoalv1.StoreOp {
			t := benchTask(i, "s1")
			t.NodeId, t.Networks = "", nil
			return createOp(t)
		},
	}
	for _, form := range []string{"create", "assign", "status"} {
		act := &shoalv1.StoreAction{Time: timestamppb.New(t0)}
		for i := range n {
			act.Ops = append(act.Ops, forms[form](i))
		}
		data, err := proto.Marshal(act)
		if err != nil {
			b.Fatal(err)
		}
		for _, mode := range []string{"decode", "proposal"} {
			b.Run(form+"/"+mode, func(b *testing.B) {
				f := newTestFSM()
				if mode == "proposal" {
					_, release := f.propose(data, act)
					defer release()
				}
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					if _, err := f.decode(data); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
