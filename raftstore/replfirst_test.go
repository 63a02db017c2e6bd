package raftstore

import (
	"runtime"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

// The replicators a leader wakes for a batch send it before the leader's
// own write of it starts (third_party/hashicorp/raft, dispatchStaged: the
// write's goroutine yields first). Started after them, that goroutine took
// its P's next slot and ran first, and its sync then held the P while the
// replicators waited (a median of 108 µs at one writer on 2 cores). With
// one P the order is the scheduler's own: a replicator's read of the
// batch (GetLog) must come before the leader's StoreLogs of it in nearly
// every write; without the yield it comes after in every one.
func TestReplicatorsSendBeforeLeaderWrites(t *testing.T) {
	nodes := stagedCluster(t)
	leader := nodes[0]

	var mu sync.Mutex
	sentFirst := map[uint64]bool{} // batch's first index -> a replicator read it before the leader's write
	writing := map[uint64]bool{}
	leader.logs.setGetHook(func(idx uint64) {
		mu.Lock()
		defer mu.Unlock()
		if _, seen := sentFirst[idx]; !seen && !writing[idx] {
			sentFirst[idx] = true
		}
	})
	leader.store.mu.Lock()
	leader.store.onStore = func(logs []*raft.Log) {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range logs {
			writing[l.Index] = true
			if _, seen := sentFirst[l.Index]; !seen {
				sentFirst[l.Index] = false
			}
		}
	}
	leader.store.mu.Unlock()

	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const writes = 40
	var first []uint64
	for i := range writes {
		f := leader.raft.Apply([]byte{byte(i)}, waitFor)
		if err := f.Error(); err != nil {
			t.Fatal(err)
		}
		first = append(first, f.Index())
	}
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for _, idx := range first {
		if sentFirst[idx] {
			n++
		}
	}
	if n < writes*3/4 {
		t.Fatalf("a replicator read the batch before the leader's write of it began in %d of %d writes, want at least %d", n, writes, writes*3/4)
	}
	t.Logf("replicators first in %d of %d writes", n, writes)
}
