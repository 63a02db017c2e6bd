package raftstore

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// Tests from the review of the staged leader write (third_party/hashicorp/
// raft/SHOAL-PATCH.md, "Review"): the paths where the leader's last log is
// ahead of its store, and the failure path.

// calledFrom reports whether fn (a function name's suffix) is on the
// caller's stack: a replicator in pipeline mode that finds an entry missing
// stops its pipeline and falls back to replicateTo, where a missing entry
// means a snapshot to send; the test waits for that lookup.
func calledFrom(fn string) bool {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, fn) {
			return true
		}
		if !more {
			return false
		}
	}
}

// When the leader's write of a staged batch fails after both followers
// stored it, a replicator still running finds the batch gone (unstaged) at
// an index it had sent. Upstream's replicator takes any missing entry for
// one compacted into a snapshot and ships the latest snapshot; the
// follower, still in the leader's term, installs it: its state rolls back
// to the snapshot (and with a monotonic store such as raft-wal, Shoal's,
// its whole log is deleted while its last index stays, so committed
// entries can be lost). The replicator of a leadership that ended must stop
// instead. The hook holds the old leader's main goroutine right after the
// stage is dropped, until a replicator has looked an entry of it up, so
// the window is not left to chance.
func TestFailedStagedWriteShipsNoSnapshot(t *testing.T) {
	nodes := stagedCluster(t)
	leader := nodes[0]
	if err := leader.raft.Apply([]byte("a"), waitFor).Error(); err != nil {
		t.Fatal(err)
	}
	if err := leader.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if err := leader.raft.Apply([]byte("b"), waitFor).Error(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every node applies a and b", func() error {
		for _, nd := range nodes {
			if got := nd.fsm.list(); fmt.Sprint(got) != "[a b]" {
				return fmt.Errorf("%s applied %q", nd.id, got)
			}
		}
		return nil
	})
	idx := leader.raft.LastIndex() + 1

	missed := make(chan struct{})
	var once sync.Once
	leader.logs.setHooks(func() {
		select {
		case <-missed:
		case <-time.After(waitFor):
			t.Errorf("no replicator looked up the dropped batch within %v", waitFor)
		}
	}, func(i uint64) {
		if i >= idx && calledFrom("(*Raft).replicateTo") {
			once.Do(func() { close(missed) })
		}
	})
	leader.store.arm()
	fut := leader.raft.Apply([]byte("lost"), 0)
	<-leader.store.entered
	eventually(t, "both followers store the entry while the leader's write waits", func() error {
		for _, f := range nodes[1:] {
			if err := hasEntry(f, idx); err != nil {
				return err
			}
		}
		return nil
	})
	leader.store.release <- errors.New("disk gone")
	if err := fut.Error(); err == nil {
		t.Fatal("a write whose leader failed to store it was acknowledged")
	}

	var newLeader *stagedNode
	eventually(t, "a leader after the failure", func() error {
		for _, nd := range nodes {
			if nd.raft.State() == raft.Leader {
				newLeader = nd
				return nil
			}
		}
		return errors.New("no leader")
	})
	if err := newLeader.raft.Apply([]byte("after"), waitFor).Error(); err != nil {
		t.Fatalf("write after the failure: %v", err)
	}
	eventually(t, "every node applies the same commands", func() error {
		want := newLeader.fsm.list()
		if len(want) == 0 || want[len(want)-1] != "after" {
			return fmt.Errorf("leader %s applied %q", newLeader.id, want)
		}
		for _, nd := range nodes {
			if got := nd.fsm.list(); fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("%s applied %q, leader %q", nd.id, got, want)
			}
		}
		return nil
	})
	for _, nd := range nodes {
		if n := nd.fsm.restored(); n != 0 {
			t.Errorf("%s restored %d snapshot(s): no node lagged, so none was due", nd.id, n)
		}
	}
}
