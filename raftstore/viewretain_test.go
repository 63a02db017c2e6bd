package raftstore

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"weak"

	"github.com/hashicorp/raft"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A view held while the store goes on writing pins its own state and
// nothing after it: the versions of an object written (and replaced)
// since are collected, whatever the number of writes, except the ones the
// watch ring still holds. A regression that chained states (a view
// holding its successors, a commit keeping the txn it replaced, undo
// state kept past its batch) would keep all of them.
func TestHeldViewPinsOnlyItsState(t *testing.T) {
	const ring, writes = 16, 400
	f := newFSM(slog.New(slog.DiscardHandler), newHub(ring))
	index := uint64(0)
	// 3,000 tasks: trees three levels deep.
	for b := range 30 {
		var ops []*shoalv1.StoreOp
		for i := range 100 {
			ops = append(ops, opCreate(mkTask(fmt.Sprintf("t%05d", b*100+i), "s", "n", shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_RUNNING)))
		}
		index++
		f.ApplyBatch([]*raft.Log{entry(t, index, ops...)})
	}
	held := f.view()
	first := held.Get(KindTask, "t00042")

	var versions []weak.Pointer[shoalv1.Task]
	for i := range writes {
		var logs []*raft.Log
		for range 1 + i%3 {
			index++
			tk := mkTask("t00042", "s", fmt.Sprintf("n%d", index%7), shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_RUNNING)
			other := mkTask(fmt.Sprintf("t%05d", (i*37)%3000), "s", fmt.Sprintf("n%d", index%5), shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_RUNNING)
			logs = append(logs, entry(t, index, opUpdate(tk, 0), opUpdate(other, 0)))
		}
		for _, res := range f.ApplyBatch(logs) {
			if res != nil {
				t.Fatal(res)
			}
		}
		versions = append(versions, weak.Make(f.view().Get(KindTask, "t00042").(*shoalv1.Task)))
	}
	runtime.GC()
	runtime.GC()
	alive := 0
	for _, w := range versions {
		if w.Value() != nil {
			alive++
		}
	}
	// The current version, and those whose events the ring holds.
	if alive > ring+1 {
		t.Fatalf("%d of %d replaced versions are still reachable with a view held; want at most %d", alive, writes, ring+1)
	}
	if got := held.Get(KindTask, "t00042"); got != first || len(held.List(KindTask)) != 3000 || got.GetMeta().GetVersion() != 1 {
		t.Fatalf("the held view lost its state: %v", got)
	}
	runtime.KeepAlive(held)
}
