package raftstore

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestTaskNodePrevChainsUnderBatchesReview is TestWatchPrevChainsUnderBatches
// for tasks and nodes: entries of 1-4 ops — a task created, updated whole,
// given a status (the compact op), deleted; a node created, updated,
// deleted — several on one object in an entry, about half of the entries
// failing (a stale version) and undone inside a batch; applied one by one
// and in random batches. Every task and node update's prev is the very
// object the store held before it, live, in the ring and in a replay.
func TestTaskNodePrevChainsUnderBatchesReview(t *testing.T) {
	prevChainsUnderBatches(t, 20, 29, taskNodeEntry, "task and node updates", 40, func(ring []ringEntry, _ int) int {
		n := 0
		for _, e := range ring {
			if e.ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_UPDATE {
				n++
			}
		}
		return n
	})
}

// taskNodeEntry is an entry of 1-4 ops on tasks t0..t3 and nodes n0..n3.
func taskNodeEntry(t testing.TB, rng *rand.Rand, r Reader, index uint64) *raft.Log {
	var ops []*shoalv1.StoreOp
	named := map[string]bool{}
	for range 1 + rng.IntN(4) {
		var o Object
		if rng.IntN(3) == 0 {
			o = mkNode(fmt.Sprintf("n%d", rng.IntN(4)), "node", fmt.Sprintf("h%d", rng.IntN(100)))
		} else {
			// On n0: the filter of n0's session is offered them all (routeNode).
			o = mkTask(fmt.Sprintf("t%d", rng.IntN(4)), "s0", "n0", 0, shoalv1.TaskState(rng.IntN(8)))
		}
		kind, id := KindOf(o), o.GetMeta().GetId()
		version, exists := entryOpVersion(rng, r, kind, id, index, named)
		switch k := rng.IntN(10); {
		case k < 3 && !exists || k == 0:
			ops = append(ops, opCreate(o))
		case k < 6:
			ops = append(ops, opUpdate(o, version))
		case k < 9 && kind == KindTask:
			ops = append(ops, statusOp(id, max(version, 1), &shoalv1.TaskStatus{State: shoalv1.TaskState(rng.IntN(8)), Message: fmt.Sprint(index)}))
		case k < 9:
			ops = append(ops, opUpdate(o, version))
		default:
			ops = append(ops, opDelete(kind, id, version))
		}
	}
	return entry(t, index, ops...)
}
