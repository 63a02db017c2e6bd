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
	fut := blockedApply(leader, "lost")
	followersHold(t, idx, nodes[1:]...)
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

// When both followers stored a batch whose write then failed on the
// leader, the batch is on a majority: it is committed although the
// leader's write failed (its caller was told the outcome is unknown). The
// old leader cannot win the next election (both followers' logs are ahead
// of its own), the new leader carries the entry, and every node, the old
// leader included, applies it once.
func TestFailedStagedWriteHeldByFollowersCommits(t *testing.T) {
	nodes := stagedCluster(t)
	leader := nodes[0]
	idx := leader.raft.LastIndex() + 1

	fut := blockedApply(leader, "held")
	followersHold(t, idx, nodes[1:]...)
	leader.store.release <- errors.New("disk gone")
	if err := fut.Error(); !errors.Is(err, raft.ErrLeadershipLost) {
		t.Fatalf("the failed write's error is %v, want ErrLeadershipLost", err)
	}

	newLeader := leaderOf(t, nodes)
	if newLeader == leader {
		t.Fatal("the old leader, whose log lacks an entry both followers hold, was elected")
	}
	if err := newLeader.raft.Apply([]byte("after"), waitFor).Error(); err != nil {
		t.Fatalf("write after the failure: %v", err)
	}
	if got := sameApplied(t, nodes, newLeader, "after"); fmt.Sprint(got) != "[held after]" {
		t.Fatalf("applied %q, want [held after]", got)
	}
}

// A snapshot asked for while the leader's write waits (its last log is
// then ahead of its store) completes after the write, at an index the
// state had applied, and compaction (no trailing logs kept) leaves every
// entry after it, the staged one included.
func TestSnapshotDuringStagedWrite(t *testing.T) {
	nodes := stagedCluster(t, func(c *raft.Config) { c.TrailingLogs = 0 })
	leader := nodes[0]
	if err := leader.raft.Apply([]byte("a"), waitFor).Error(); err != nil {
		t.Fatal(err)
	}
	idx := leader.raft.LastIndex() + 1

	snapshotted := make(chan struct{}, 1)
	leader.fsm.mu.Lock()
	leader.fsm.snapshotted = snapshotted
	leader.fsm.mu.Unlock()
	fut := blockedApply(leader, "x")
	snap := leader.raft.Snapshot()
	<-snapshotted // the state is captured; the rest waits for the main loop
	leader.store.release <- nil
	if err := fut.Error(); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if err := snap.Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	meta, _, err := snap.Open()
	if err != nil {
		t.Fatal(err)
	}
	if meta.Index >= idx {
		t.Fatalf("snapshot at %d, which includes the entry being written (%d)", meta.Index, idx)
	}
	for i := meta.Index + 1; i <= idx; i++ {
		if err := hasEntry(leader, i); err != nil {
			t.Fatalf("compaction after the snapshot at %d: %v", meta.Index, err)
		}
	}
	if err := leader.raft.Apply([]byte("y"), waitFor).Error(); err != nil {
		t.Fatal(err)
	}
	if got := sameApplied(t, nodes, leader, "y"); fmt.Sprint(got) != "[a x y]" {
		t.Fatalf("applied %q, want [a x y]", got)
	}
}

// A leadership transfer asked for while the leader's write waits (the main
// loop starts it meanwhile; the target's vote request waits for the write,
// TestRivalRPCWaitsForLeaderWrite): the target catches up to the staged
// entry before it is told to campaign, and no entry is lost or doubled.
// The write itself may be answered ErrLeadershipLost (the leader can step
// down before it handles the commit, as upstream), but it is applied
// everywhere.
func TestLeadershipTransferDuringStagedWrite(t *testing.T) {
	nodes := stagedCluster(t)
	leader := nodes[0]

	fut := blockedApply(leader, "x")
	transfer := make(chan error, 1)
	go func() { transfer <- leader.raft.LeadershipTransfer().Error() }()
	leader.store.release <- nil
	if err := fut.Error(); err != nil && !errors.Is(err, raft.ErrLeadershipLost) {
		t.Fatalf("apply: %v", err)
	}
	if err := <-transfer; err != nil {
		t.Fatalf("leadership transfer: %v", err)
	}
	newLeader := leaderOf(t, nodes)
	if err := newLeader.raft.Apply([]byte("y"), waitFor).Error(); err != nil {
		t.Fatal(err)
	}
	if got := sameApplied(t, nodes, newLeader, "y"); fmt.Sprint(got) != "[x y]" {
		t.Fatalf("applied %q, want [x y]", got)
	}
}

// A configuration change is staged like any entry: the followers store it
// while the leader's write waits, it commits after, and every node has the
// new configuration.
func TestStagedConfigurationEntry(t *testing.T) {
	nodes := stagedCluster(t)
	leader := nodes[0]
	idx := leader.raft.LastIndex() + 1

	leader.store.arm()
	fut := leader.raft.AddNonvoter("n9", "n9", 0, 0)
	<-leader.store.entered
	eventually(t, "both followers store the configuration entry while the leader's write waits", func() error {
		for _, f := range nodes[1:] {
			var l raft.Log
			if err := f.store.InmemStore.GetLog(idx, &l); err != nil {
				return fmt.Errorf("%s: entry %d: %v", f.id, idx, err)
			}
			if l.Type != raft.LogConfiguration {
				return fmt.Errorf("%s: entry %d is %v", f.id, idx, l.Type)
			}
		}
		return nil
	})
	leader.store.release <- nil
	if err := fut.Error(); err != nil {
		t.Fatalf("add nonvoter: %v", err)
	}
	eventually(t, "every node has n9 in its configuration", func() error {
		for _, nd := range nodes {
			cf := nd.raft.GetConfiguration()
			if err := cf.Error(); err != nil {
				return err
			}
			if !hasServer(cf.Configuration(), "n9") {
				return fmt.Errorf("%s: %v", nd.id, cf.Configuration().Servers)
			}
		}
		return nil
	})
}

func hasServer(c raft.Configuration, id raft.ServerID) bool {
	for _, s := range c.Servers {
		if s.ID == id {
			return true
		}
	}
	return false
}

// A configuration change whose staged write fails on the leader is not in
// force there: the entry is not in its log (no follower got it either).
// Upstream's appendConfigurationEntry made it the latest configuration
// whether or not dispatchLogs stored it, on either path; the old leader
// then kept a membership no log holds (a later entry at that index does
// not replace it), and as a leader again would commit it as its
// configuration and persist it in its snapshots.
func TestFailedStagedConfigurationEntryNotInForce(t *testing.T) {
	nodes := stagedCluster(t)
	leader := nodes[0]
	for _, f := range nodes[1:] {
		leader.trans.Disconnect(f.trans.LocalAddr())
		f.trans.Disconnect(leader.trans.LocalAddr())
	}

	leader.store.arm()
	fut := leader.raft.AddNonvoter("n9", "n9", 0, 0)
	<-leader.store.entered
	leader.store.release <- errors.New("disk gone")
	if err := fut.Error(); err == nil {
		t.Fatal("a configuration change whose write failed was acknowledged")
	}

	for _, f := range nodes[1:] {
		leader.trans.Connect(f.trans.LocalAddr(), f.trans)
		f.trans.Connect(leader.trans.LocalAddr(), leader.trans)
	}
	newLeader := leaderOf(t, nodes)
	if err := newLeader.raft.Apply([]byte("after"), waitFor).Error(); err != nil {
		t.Fatalf("write after the failure: %v", err)
	}
	sameApplied(t, nodes, newLeader, "after")
	eventually(t, "every node's configuration is the three nodes", func() error {
		for _, nd := range nodes {
			cf := nd.raft.GetConfiguration()
			if err := cf.Error(); err != nil {
				return err
			}
			if hasServer(cf.Configuration(), "n9") || len(cf.Configuration().Servers) != 3 {
				return fmt.Errorf("%s: %v", nd.id, cf.Configuration().Servers)
			}
		}
		return nil
	})
}

// A leader cut off from both followers while its write waits is deposed
// (the followers elect one of them and commit in a newer term); when its
// write then succeeds it counts itself for an entry no one else holds,
// which commits nothing. It steps down, its written entry is overwritten
// by the new leader's, and no node applies it.
func TestLeaderDeposedDuringStagedWrite(t *testing.T) {
	nodes := stagedCluster(t)
	leader := nodes[0]
	partition := func(connect bool) {
		for _, f := range nodes[1:] {
			if connect {
				leader.trans.Connect(f.trans.LocalAddr(), f.trans)
				f.trans.Connect(leader.trans.LocalAddr(), leader.trans)
			} else {
				leader.trans.Disconnect(f.trans.LocalAddr())
				f.trans.Disconnect(leader.trans.LocalAddr())
			}
		}
	}
	partition(false)
	idx := leader.raft.LastIndex() + 1

	done := errOf(blockedApply(leader, "x"))
	newLeader := leaderOf(t, nodes[1:])
	if err := newLeader.raft.Apply([]byte("y"), waitFor).Error(); err != nil {
		t.Fatalf("write on the new leader: %v", err)
	}
	partition(true)
	leader.store.release <- nil
	if err := <-done; !errors.Is(err, raft.ErrLeadershipLost) {
		t.Fatalf("the deposed leader's write: %v, want ErrLeadershipLost", err)
	}
	if err := newLeader.raft.Apply([]byte("z"), waitFor).Error(); err != nil {
		t.Fatalf("write on the new leader: %v", err)
	}
	if got := sameApplied(t, nodes, newLeader, "z"); fmt.Sprint(got) != "[y z]" {
		t.Fatalf("applied %q, want [y z]", got)
	}
	var l raft.Log
	if err := leader.store.InmemStore.GetLog(idx, &l); err != nil {
		t.Fatalf("old leader: entry %d: %v", idx, err)
	}
	if string(l.Data) == "x" {
		t.Fatalf("the deposed leader's entry %d is still its own (term %d)", idx, l.Term)
	}
}

// Readers of a staged batch (the replicators) never miss one of its
// entries while the leader writes it and hands it over to the cache and
// the store, whatever the cache's bounds, nor when a compaction deletes a
// prefix of the log meanwhile. Run with -race for the locking.
func TestLogCacheStagedReadsDuringStore(t *testing.T) {
	st := newGatedStore()
	c, err := newLogCache(st, 4, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StoreLogs(cacheEntries(1, 3, 10)); err != nil {
		t.Fatal(err)
	}
	batch := cacheEntries(4, 12, 10)
	batch[2] = cacheEntries(6, 6, 5000)[0] // larger than the byte bound

	c.StageLogs(batch)
	st.arm()
	stop := make(chan struct{})
	passes := make(chan int)
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for {
				for i := uint64(4); i <= 12; i++ {
					var l raft.Log
					if err := c.GetLog(i, &l); err != nil || l.Index != i {
						errs <- fmt.Errorf("pass %d: GetLog(%d): entry %d, %v", n, i, l.Index, err)
						return
					}
				}
				n++
				select {
				case passes <- n:
				case <-stop:
					return
				}
			}
		}()
	}
	stored := make(chan error, 1)
	defer func() {
		close(stop)
		select {
		case st.release <- nil: // a write still waiting (the test failed)
		default:
		}
		wg.Wait()
	}()
	wait := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			select {
			case <-passes:
			case err := <-errs:
				t.Fatal(err)
			}
		}
	}
	// Some passes before the write, some while it waits, some after.
	wait(8)
	go func() { stored <- c.StoreLogs(batch) }()
	<-st.entered
	if err := c.DeleteRange(1, 2); err != nil {
		t.Fatal(err)
	}
	wait(8)
	st.release <- nil
	if err := <-stored; err != nil {
		t.Fatal(err)
	}
	wait(8)
	if c.staged != nil {
		t.Fatal("stage kept after its StoreLogs")
	}
}
