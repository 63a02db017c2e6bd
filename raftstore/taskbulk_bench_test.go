package raftstore

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// BenchmarkTaskBulkEntry: the two bulk writes of scheduling, one entry of
// 1,000 tasks each, written whole (the forms before store format 4, and
// the ones written while a manager is old) or compact (TASK_CREATE,
// TASK_ASSIGN), applied by the leader (from its proposal) or a follower
// (decoded). Reports the entry's size per task.
func BenchmarkTaskBulkEntry(b *testing.B) {
	const n = 1000
	for _, write := range []string{"create", "assign"} {
		for _, form := range []string{"whole", "compact"} {
			for _, mode := range []string{"decode", "proposal"} {
				b.Run(write+"/"+form+"/"+mode, func(b *testing.B) {
					svc := &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}, Spec: &shoalv1.ServiceSpec{Name: "web", Task: benchTaskSpec()}, SpecVersion: 1}
					b.ReportAllocs()
					var bytes int
					for it := range b.N {
						b.StopTimer()
						f := newTestFSM()
						if err := applyDirect(b, f, 1, t0, opCreate(svc)); err != nil {
							b.Fatal(err)
						}
						stored, _ := Get[*shoalv1.Service](f.view(), "s1")
						pending := func(i int) *shoalv1.Task {
							tk := benchTask(i, "s1")
							tk.NodeId, tk.Networks, tk.Spec = "", nil, stored.Spec.Task
							tk.Status = &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_PENDING, Message: "pending", Timestamp: timestamppb.New(t0)}
							return tk
						}
						index := uint64(2)
						act := &shoalv1.StoreAction{Time: timestamppb.New(t0)}
						if write == "assign" {
							for i := range n {
								act.Ops = append(act.Ops, createOp(pending(i)))
							}
							if err := applyDirect(b, f, 2, t0, act.Ops...); err != nil {
								b.Fatal(err)
							}
							index, act.Ops = 3, nil
						}
						for i := range n {
							st := &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED, Message: "assigned", Timestamp: timestamppb.New(t0)}
							node := fmt.Sprintf("node%04d", i)
							switch {
							case write == "create" && form == "whole":
								act.Ops = append(act.Ops, opCreate(pending(i)))
							case write == "create":
								act.Ops = append(act.Ops, createOp(pending(i)))
							case form == "whole":
								cur, _ := Get[*shoalv1.Task](f.view(), fmt.Sprintf("task%06d", i))
								t := taskWithStatus(cur, proto.Clone(cur.Meta).(*shoalv1.Meta), st)
								t.NodeId = node
								act.Ops = append(act.Ops, opUpdate(t, 2))
							default:
								act.Ops = append(act.Ops, assignOp(fmt.Sprintf("task%06d", i), 2, node, st))
							}
						}
						bytes = benchApply(b, f, act, index, mode)
						_ = it
					}
					b.ReportMetric(float64(bytes)/n, "entry-B/task")
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/task")
				})
			}
		}
	}
}
