package raftstore

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// benchTaskSpec is a task spec of the size a real service carries: an
// image by digest, a command, a few environment variables, resources, a
// restart policy and a network.
func benchTaskSpec() *shoalv1.TaskSpec {
	return &shoalv1.TaskSpec{
		Container: &shoalv1.ContainerSpec{
			Image:   "registry.example/team/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			Command: []string{"/srv/web", "--listen", ":8080"},
			Env:     []string{"MODE=production", "LOG_LEVEL=info", "CACHE_SIZE=256m", "REGION=eu-west"},
		},
		Resources: &shoalv1.ResourceRequirements{Reservations: &shoalv1.Resources{NanoCpus: 1e8, MemoryBytes: 64 << 20}},
		Restart:   &shoalv1.RestartPolicy{Condition: shoalv1.RestartCondition_RESTART_CONDITION_ANY, DelayMs: 5000},
		Networks:  []*shoalv1.NetworkAttachmentConfig{{Target: "net1"}},
	}
}

func benchTask(i int, service string) *shoalv1.Task {
	return &shoalv1.Task{
		Meta: &shoalv1.Meta{Id: fmt.Sprintf("task%06d", i)}, ServiceId: service, ServiceName: "web", Slot: uint64(i + 1),
		NodeId: fmt.Sprintf("node%04d", i%1000), DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING,
		Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED}, Spec: benchTaskSpec(), SpecVersion: 1,
		Networks: []*shoalv1.NetworkAttachment{{NetworkId: "net1", Address: fmt.Sprintf("10.0.%d.%d/16", i/250, i%250+2), Mac: "02:42:0a:00:00:02", Aliases: []string{"web"}}},
	}
}

// BenchmarkTaskStatusEntry: one entry of 1,000 agents' RUNNING reports,
// applied by a follower (decode) or by the leader (proposal), written as
// whole-task UPDATEs (the form before TASK_STATUS, and the one written
// while a manager is old) or as TASK_STATUS ops. Reports the entry's size
// per status.
func BenchmarkTaskStatusEntry(b *testing.B) {
	const n = 1000
	svc := &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}, Spec: &shoalv1.ServiceSpec{Name: "web", Task: benchTaskSpec()}}
	for _, form := range []string{"whole", "compact"} {
		for _, mode := range []string{"decode", "proposal"} {
			b.Run(form+"/"+mode, func(b *testing.B) {
				f := newTestFSM()
				ops := []*shoalv1.StoreOp{opCreate(svc)}
				for i := range n {
					ops = append(ops, opCreate(benchTask(i, "s1")))
				}
				if err := applyDirect(b, f, 1, t0, ops...); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				var bytes int
				for it := range b.N {
					b.StopTimer()
					index := uint64(it + 2)
					act := &shoalv1.StoreAction{Time: timestamppb.New(t0)}
					st := &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING, Message: "started", Pid: int32(it)}
					for i := range n {
						id := fmt.Sprintf("task%06d", i)
						if form == "compact" {
							act.Ops = append(act.Ops, statusOp(id, index-1, st))
							continue
						}
						cur, _ := Get[*shoalv1.Task](f.view(), id)
						t := proto.Clone(cur).(*shoalv1.Task)
						t.Status = st
						act.Ops = append(act.Ops, opUpdate(t, index-1))
					}
					bytes = benchApply(b, f, act, index, mode)
				}
				b.ReportMetric(float64(bytes)/n, "entry-B/status")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/status")
			})
		}
	}
}

// BenchmarkTaskSpecHeap: the live heap of 100,000 tasks of one service
// created through the FSM in entries of 4,000, with the spec shared with
// the service's (interned) or, for tasks whose service is not stored, a
// copy each. Run with -benchtime=1x; the figure is live-MB.
func BenchmarkTaskSpecHeap(b *testing.B) {
	const n, per = 100000, 4000
	for _, mode := range []string{"copies", "shared"} {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				f := newTestFSM()
				service := "s1"
				if mode == "copies" {
					service = "gone"
				}
				svc := &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}, Spec: &shoalv1.ServiceSpec{Name: "web", Task: benchTaskSpec()}}
				if err := applyDirect(b, f, 1, t0, opCreate(svc)); err != nil {
					b.Fatal(err)
				}
				for start := 0; start < n; start += per {
					var ops []*shoalv1.StoreOp
					for i := start; i < start+per; i++ {
						ops = append(ops, opCreate(benchTask(i, service)))
					}
					if err := applyDirect(b, f, uint64(2+start/per), t0, ops...); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "live-MB")
				runtime.KeepAlive(f)
			}
		})
	}
}

// benchApply encodes act, proposes it first when mode is "proposal" (the
// leader's path), and applies it at index with the timer running only
// for the apply; it returns the entry's size.
func benchApply(b *testing.B, f *fsm, act *shoalv1.StoreAction, index uint64, mode string) int {
	b.Helper()
	data, err := proto.Marshal(act)
	if err != nil {
		b.Fatal(err)
	}
	var release func()
	if mode == "proposal" {
		_, release = f.propose(data, act)
	}
	b.StartTimer()
	if res := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}); res != nil {
		b.Fatal(res)
	}
	if release != nil {
		release()
	}
	return len(data)
}
