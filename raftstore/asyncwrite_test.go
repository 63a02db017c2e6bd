package raftstore

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The window in which a test checks that something does NOT happen (an
// entry answered or applied too early, a log write overlapping another):
// the in-memory cluster acts within a few milliseconds.
const quietWindow = 300 * time.Millisecond

// The leader's main loop commits and answers earlier entries while its
// own write of a later batch is in flight (third_party/hashicorp/raft,
// dispatchStaged: upstream's loop, and the first form of Shoal's patch,
// sat in that write): "a", which a follower acknowledges only once the
// leader is writing "b", is answered while that write still waits. "b"
// itself, held by both followers (a quorum without the leader), is neither
// answered nor applied on the leader before its own write returned.
func TestLeaderCommitsWhileItWrites(t *testing.T) {
	nodes := stagedCluster(t)
	leader, f1, f2 := nodes[0], nodes[1], nodes[2]
	idx := leader.raft.LastIndex() + 1

	// The followers hold their writes of "a", so it cannot commit yet;
	// the leader's own write of it goes through.
	f1.store.arm()
	f2.store.arm()
	fa := errOf(leader.raft.Apply([]byte("a"), 0))
	<-f1.store.entered
	<-f2.store.entered
	eventually(t, "the leader stores a", func() error { return hasEntry(leader, idx) })

	// The leader's write of "b" is held; then the followers store "a"
	// (and "b" after it) and acknowledge.
	fb := errOf(blockedApply(leader, "b"))
	f1.store.release <- nil
	f2.store.release <- nil
	select {
	case err := <-fa:
		if err != nil {
			t.Fatalf("apply a: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatalf("a, committed by a follower, not answered within %v while the leader's write of b waits", waitFor)
	}

	followersHold(t, idx+1, f1, f2)
	select {
	case err := <-fb:
		t.Fatalf("b answered (%v) before the leader's own write of it returned", err)
	case <-time.After(quietWindow):
	}
	if got := leader.fsm.list(); fmt.Sprint(got) != "[a]" {
		t.Fatalf("the leader applied %q while its write of b waits, want [a]", got)
	}

	leader.store.release <- nil
	if err := <-fb; err != nil {
		t.Fatalf("apply b: %v", err)
	}
	if got := sameApplied(t, nodes, leader, "b"); fmt.Sprint(got) != "[a b]" {
		t.Fatalf("applied %q, want [a b]", got)
	}
}

// An RPC reaching a leader whose own write is in flight is processed only
// once that write ended, as when the write held the whole main loop: a
// newer leader's append may rewrite the very entries being written, and a
// vote is cast on the log. Here a leadership transfer, which the loop now
// starts during the write, makes a follower campaign: the old leader gets
// its vote request while it writes "x", and stays in its term, with no
// two writes of its log at once, until the write returned. Then it
// follows the new leader, and "x", which every node holds, is applied
// everywhere once.
func TestRivalRPCWaitsForLeaderWrite(t *testing.T) {
	nodes := stagedCluster(t)
	old := nodes[0]
	term := old.raft.Stats()["term"]

	fx := errOf(blockedApply(old, "x"))
	transfer := errOf(old.raft.LeadershipTransfer())
	newLeader := leaderOf(t, nodes[1:])
	for end := time.Now().Add(quietWindow); time.Now().Before(end); time.Sleep(pollInterval) {
		if got := old.raft.Stats()["term"]; got != term {
			t.Fatalf("the old leader moved from term %s to %s while its write of x was in flight", term, got)
		}
		if n := old.store.overlaps.Load(); n != 0 {
			t.Fatalf("%d log writes on the old leader started while its own write of x was in flight", n)
		}
	}

	old.store.release <- nil
	if err := <-fx; err != nil && !errors.Is(err, raft.ErrLeadershipLost) {
		t.Fatalf("x: %v", err)
	}
	// The transfer itself may report a timeout: the test held the old
	// leader's step-down past the election timeout it waits for.
	<-transfer
	if err := newLeader.raft.Apply([]byte("z"), waitFor).Error(); err != nil {
		t.Fatalf("apply on the new leader: %v", err)
	}
	if got := sameApplied(t, nodes, newLeader, "z"); fmt.Sprint(got) != "[x z]" {
		t.Fatalf("applied %q, want [x z]", got)
	}
	if n := old.store.overlaps.Load(); n != 0 {
		t.Fatalf("%d overlapping log writes on the old leader", n)
	}
}
