package raftstore

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	gometrics "github.com/armon/go-metrics"
	"github.com/hashicorp/raft"
)

// stagedNetCluster is stagedCluster over raft's TCP transport on
// loopback: unlike the in-memory one it has the heartbeat fast path, where
// a newer leader's heartbeat makes a node a follower outside its main
// loop (processHeartbeat), even while that loop waits for a log write.
func stagedNetCluster(t *testing.T, tune ...func(*raft.Config)) []*stagedNode {
	t.Helper()
	var nodes []*stagedNode
	for i := 0; i < 3; i++ {
		trans := tcpTransport(t)
		nodes = append(nodes, &stagedNode{id: raft.ServerID(fmt.Sprintf("n%d", i)), store: newGatedStore(),
			fsm: &countFSM{}, transport: trans})
	}
	return startStaged(t, nodes, tune)
}

// tcpTransport is a TCP transport on a free loopback port, closed when the
// test ends (after the rafts using it shut down: cleanups run in reverse).
func tcpTransport(t *testing.T) *raft.NetworkTransport {
	t.Helper()
	trans, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trans.Close() })
	return trans
}

// depose makes nd campaign at once (a TimeoutNow, as a leadership transfer
// sends it) and waits until it leads.
func depose(t *testing.T, old, nd *stagedNode) {
	t.Helper()
	trans := tcpTransport(t)
	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(old.id), Addr: []byte(old.transport.LocalAddr())}}
	if err := trans.TimeoutNow(nd.id, nd.transport.LocalAddr(), req, &raft.TimeoutNowResponse{}); err != nil {
		t.Fatalf("TimeoutNow to %s: %v", nd.id, err)
	}
	eventually(t, string(nd.id)+" leads", func() error {
		if s := nd.raft.State(); s != raft.Leader {
			return fmt.Errorf("%s is %v", nd.id, s)
		}
		return nil
	})
}

// A configuration entry the leader stored is in force on it even when a
// newer leader's heartbeat made it a follower while it wrote the entry
// (the heartbeat fast path runs beside the main loop): raft uses the
// latest configuration in its log, and a follower never looks again at an
// entry its log already holds. On the lead's form of the patch the stored
// entry was not put in force (the write "failed" when the node no longer
// led): the old leader kept the membership before the change, which it
// would commit, snapshot, and campaign and lead with.
func TestConfigurationStoredWhileDeposedInForce(t *testing.T) {
	nodes := stagedNetCluster(t)
	old, f1, f2 := nodes[0], nodes[1], nodes[2]
	idx := old.raft.LastIndex() + 1

	// A non-voter the cluster cannot reach: f1 needs only f2's vote.
	old.store.arm()
	change := errOf(old.raft.AddNonvoter("n9", "127.0.0.1:1", 0, 0))
	<-old.store.entered
	followersHold(t, idx, f1, f2)

	depose(t, old, f1)
	eventually(t, "the old leader follows (heartbeat fast path) while its write waits", func() error {
		if s := old.raft.State(); s != raft.Follower {
			return fmt.Errorf("%s is %v", old.id, s)
		}
		return nil
	})
	old.store.release <- nil
	if err := <-change; err != nil && !errors.Is(err, raft.ErrLeadershipLost) {
		t.Fatalf("AddNonvoter: %v", err)
	}
	if err := hasEntry(old, idx); err != nil {
		t.Fatal(err)
	}

	// The new leader's next entry reaches the old one (so its main loop
	// is past the configuration change).
	if err := f1.raft.Apply([]byte("after"), waitFor).Error(); err != nil {
		t.Fatalf("apply on the new leader: %v", err)
	}
	sameApplied(t, nodes, f1, "after")
	for _, nd := range nodes {
		cf := nd.raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, s := range cf.Configuration().Servers {
			found = found || s.ID == "n9"
		}
		if !found {
			t.Errorf("%s holds the configuration entry %d but its configuration %+v lacks n9", nd.id, idx, cf.Configuration().Servers)
		}
	}
}

// raft.leader.dispatchLog still covers the leader's own write and sync of
// a staged batch (docs/performance.md reads it as "append + fdatasync"):
// on the lead's form of the patch it ended when the write was started on
// its goroutine, a few microseconds, whatever the write took.
func TestLeaderDispatchMetricCoversItsWrite(t *testing.T) {
	const held = 150 * time.Millisecond
	nodes := stagedCluster(t)
	leader := nodes[0]

	sink := gometrics.NewInmemSink(time.Minute, time.Hour)
	cfg := gometrics.DefaultConfig("t")
	cfg.EnableHostname, cfg.EnableRuntimeMetrics = false, false
	if _, err := gometrics.NewGlobal(cfg, sink); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gometrics.NewGlobal(cfg, &gometrics.BlackholeSink{}) })

	fut := errOf(blockedApply(leader, "x"))
	start := time.Now()
	time.Sleep(held) // the write's length, not a synchronisation
	leader.store.release <- nil
	if err := <-fut; err != nil {
		t.Fatalf("apply: %v", err)
	}
	if d := time.Since(start); d < held {
		t.Fatalf("the write took %v, want at least %v", d, held)
	}
	var longest float64
	for _, iv := range sink.Data() {
		iv.RLock()
		if s, ok := iv.Samples["t.raft.leader.dispatchLog"]; ok && s.AggregateSample != nil && s.Max > longest {
			longest = s.Max
		}
		iv.RUnlock()
	}
	if want := float64(held / time.Millisecond); longest < want {
		t.Fatalf("longest raft.leader.dispatchLog sample %.3f ms, want at least %.0f ms (the write was held that long)", longest, want)
	}
}

// A leader made a follower by a newer leader's heartbeat (the fast path,
// beside its main loop) while its write of "x" waits: whether the write
// then succeeds or fails, nothing overlaps it, "x" (held by both
// followers) is kept by the new leader and applied once everywhere, and
// the old leader follows with the same log.
func TestLeaderDeposedByHeartbeatDuringWrite(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("fail=%v", fail), func(t *testing.T) {
			nodes := stagedNetCluster(t)
			old, f1, f2 := nodes[0], nodes[1], nodes[2]
			idx := old.raft.LastIndex() + 1

			fx := errOf(blockedApply(old, "x"))
			followersHold(t, idx, f1, f2)
			depose(t, old, f1)
			eventually(t, "the old leader follows while its write waits", func() error {
				if s := old.raft.State(); s != raft.Follower {
					return fmt.Errorf("%s is %v", old.id, s)
				}
				return nil
			})
			var res error
			if fail {
				res = errors.New("disk gone")
			}
			old.store.release <- res
			if err := <-fx; err == nil || !errors.Is(err, raft.ErrLeadershipLost) {
				t.Fatalf("x on the deposed leader: %v, want ErrLeadershipLost", err)
			}
			if err := f1.raft.Apply([]byte("z"), waitFor).Error(); err != nil {
				t.Fatalf("apply on the new leader: %v", err)
			}
			if got := sameApplied(t, nodes, f1, "z"); fmt.Sprint(got) != "[x z]" {
				t.Fatalf("applied %q, want [x z]", got)
			}
			if n := old.store.overlaps.Load(); n != 0 {
				t.Fatalf("%d overlapping log writes on the old leader", n)
			}
		})
	}
}

// Shutdown of a leader whose write is in flight returns only once that
// write ended: a store closed after Shutdown (raftstore's Close) never
// has a write of raft's still running.
func TestShutdownWaitsForLeaderWrite(t *testing.T) {
	nodes := stagedCluster(t)
	leader := nodes[0]

	fx := errOf(blockedApply(leader, "x"))
	down := errOf(leader.raft.Shutdown())
	select {
	case err := <-down:
		t.Fatalf("Shutdown returned (%v) while the leader's write was in flight", err)
	case <-time.After(quietWindow):
	}
	leader.store.release <- nil
	if err := <-down; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if n := leader.store.writing.Load(); n != 0 {
		t.Fatalf("%d log writes still running after Shutdown returned", n)
	}
	if err := <-fx; err == nil {
		t.Fatal("x answered nil by a leader that shut down before applying it")
	}
}
