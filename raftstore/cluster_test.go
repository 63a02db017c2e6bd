package raftstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// writeMix makes a batch of changes of every kind, ending in updates and a
// delete, and returns the last index.
func writeMix(c *testCluster, prefix string) uint64 {
	c.t.Helper()
	svc := mkService(prefix+"svc", prefix+"web")
	c.update(createIfMissing(
		&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: prefix + "cluster"}, Name: "shoal"},
		mkNode(prefix+"node", "", prefix+"host"),
		svc, mkNetwork(prefix+"net", prefix+"backend"),
	))
	for i := 0; i < 5; i++ {
		c.update(createIfMissing(mkTask(fmt.Sprintf("%stask%d", prefix, i), svc.Meta.Id, prefix+"node",
			shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_PENDING)))
	}
	c.update(func(tx WriteTx) error {
		s, _ := Get[*shoalv1.Service](tx, svc.Meta.Id)
		if s.GetSpec().GetReplicas() == 5 {
			return nil
		}
		s = proto.Clone(s).(*shoalv1.Service)
		s.Spec.Replicas = 5
		return tx.Update(s)
	})
	return c.update(func(tx WriteTx) error {
		if tx.Get(KindTask, prefix+"task0") == nil {
			return nil
		}
		return tx.Delete(KindTask, prefix+"task0", 0)
	})
}

func TestReplication(t *testing.T) {
	for _, n := range []int{1, 3, 5} {
		t.Run(fmt.Sprintf("nodes=%d", n), func(t *testing.T) {
			c := newCluster(t, n, clusterOpts{})
			idx := writeMix(c, "a-")
			leader := c.leader()
			want := dump(leader.store.View())
			if got := len(leader.store.View().List(KindTask)); got != 4 {
				t.Fatalf("leader has %d tasks, want 4", got)
			}
			c.converge(want, idx)

			ms, err := leader.store.Members()
			if err != nil {
				t.Fatal(err)
			}
			leaders := 0
			for _, m := range ms {
				if m.Suffrage != "voter" {
					t.Errorf("member %s is %s", m.ID, m.Suffrage)
				}
				if m.Leader {
					leaders++
					if m.ID != leader.id {
						t.Errorf("member %s marked leader, want %s", m.ID, leader.id)
					}
				}
			}
			if leaders != 1 || len(ms) != n {
				t.Errorf("members = %+v", ms)
			}
			// Followers know the leader and refuse writes, naming it.
			for _, nd := range c.live() {
				if nd == leader {
					continue
				}
				id, addr := nd.store.Leader()
				if id != leader.id || addr != string(leader.addr) {
					t.Errorf("%s: Leader() = %q %q", nd.id, id, addr)
				}
				_, err := nd.store.Update(context.Background(), createIfMissing(mkService("x", "x")))
				if !errors.Is(err, ErrNotLeader) || !strings.Contains(err.Error(), fmt.Sprintf("(leader is %q)", leader.addr)) {
					t.Errorf("%s: Update on a follower: %v", nd.id, err)
				}
				if _, err := nd.store.ReadLinearizable(context.Background()); !errors.Is(err, ErrNotLeader) {
					t.Errorf("%s: ReadLinearizable on a follower: %v", nd.id, err)
				}
			}
			r, err := leader.store.ReadLinearizable(context.Background())
			if err != nil || r.Index() < idx {
				t.Fatalf("ReadLinearizable: index %v, err %v", r, err)
			}
		})
	}
}

func TestLeaderLoss(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	acked := writeMix(c, "before-")
	old := c.leader()
	changed := make([]<-chan struct{}, 0, 2)
	for _, nd := range c.nodes {
		if nd != old {
			changed = append(changed, nd.store.LeadershipChanged())
		}
	}
	if err := old.store.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range changed {
		select {
		case <-ch:
		case <-time.After(waitFor):
			t.Fatal("LeadershipChanged not closed after the leader went away")
		}
	}
	leader := c.leader()
	if leader == old {
		t.Fatal("closed node still leads")
	}
	// Everything acknowledged before is still there on the new leader.
	v := leader.store.View()
	if v.Index() < acked || len(v.List(KindTask)) != 4 || v.Get(KindService, "before-svc") == nil {
		t.Fatalf("new leader lost acknowledged writes: index %d < %d or state:\n%s", v.Index(), acked, dump(v))
	}
	idx := writeMix(c, "after-")
	c.converge(dump(c.leader().store.View()), idx)
	if got := len(c.leader().store.View().List(KindTask)); got != 8 {
		t.Fatalf("%d tasks, want 8", got)
	}
}

func TestPartition(t *testing.T) {
	c := newCluster(t, 5, clusterOpts{})
	writeMix(c, "a-")
	old := c.leader()
	c.isolate(old)

	// The isolated leader cannot commit: it fails (it steps down when its
	// lease runs out) or times out.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err := old.store.Update(ctx, createIfMissing(mkService("lost", "lost")))
	cancel()
	if err == nil {
		t.Fatal("an isolated leader committed a write")
	}
	if !errors.Is(err, ErrNotLeader) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("isolated update: %v", err)
	}
	t.Logf("isolated leader's update: %v", err)

	// The majority elects a new leader and commits.
	var leader *testNode
	c.eventually("majority leader", func() error {
		for _, nd := range c.nodes {
			if nd != old && nd.store.IsLeader() {
				leader = nd
				return nil
			}
		}
		return errors.New("none yet")
	})
	idx, err := leader.store.Update(context.Background(), createIfMissing(mkService("majority", "majority")))
	if err != nil {
		t.Fatal(err)
	}

	c.heal()
	want := dump(c.leader().store.View())
	c.converge(want, idx)
	for _, nd := range c.nodes {
		v := nd.store.View()
		if v.Get(KindService, "lost") != nil {
			t.Errorf("%s has the write the isolated leader could not commit", nd.id)
		}
		if v.Get(KindService, "majority") == nil {
			t.Errorf("%s lacks the majority's write", nd.id)
		}
	}
}

func TestSnapshotInstall(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{tweak: func(cfg *Config) {
		cfg.TrailingLogs = 4
		cfg.SnapshotThreshold = 16
	}})
	writeMix(c, "a-")
	leader := c.leader()
	var lagger *testNode
	for _, nd := range c.nodes {
		if nd != leader {
			lagger = nd
			break
		}
	}
	sub, err := lagger.store.Watch(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	c.isolate(lagger)
	// The remaining two are a majority; the leader keeps leading.
	var last uint64
	for i := 0; i < 40; i++ {
		last = c.update(createIfMissing(mkTask(fmt.Sprintf("t%02d", i), "a-svc", "", 0, 0)))
	}
	if err := c.leader().store.Snapshot(); err != nil {
		t.Fatal(err)
	}
	leader = c.leader()
	if leader.store.raft.Stats()["last_snapshot_index"] == "0" {
		t.Fatalf("no snapshot taken: %v", leader.store.raft.Stats())
	}
	c.heal()
	c.converge(dump(leader.store.View()), last)
	if err := ended(t, sub); !errors.Is(err, ErrRestored) {
		t.Fatalf("lagger's subscription ended with %v, want ErrRestored", err)
	}
	// Watching works again on the restored follower.
	sub2, err := lagger.store.Watch(context.Background(), lagger.store.AppliedIndex()+1, KindService)
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	idx := c.update(createIfMissing(mkService("late", "late")))
	ev := collect(t, sub2, 1)[0]
	if ev.GetIndex() != idx || ev.GetObject().GetService().GetMeta().GetId() != "late" {
		t.Fatalf("event after restore: %v", ev)
	}
}

func TestRestartFromDisk(t *testing.T) {
	tests := []struct {
		name     string
		nodes    int
		snapshot bool
	}{
		{"1 node", 1, false},
		{"1 node after snapshot", 1, true},
		{"3 nodes", 3, false},
		{"3 nodes after snapshot", 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, tt.nodes, clusterOpts{disk: true, tweak: func(cfg *Config) {
				cfg.TrailingLogs = 2
			}})
			idx := writeMix(c, "a-")
			if tt.snapshot {
				c.converge(dump(c.leader().store.View()), idx)
				for _, nd := range c.nodes {
					if err := nd.store.Snapshot(); err != nil {
						t.Fatalf("%s: %v", nd.id, err)
					}
				}
				idx = writeMix(c, "b-") // some entries after the snapshot too
			}
			want := dump(c.leader().store.View())
			c.converge(want, idx)
			c.closeAll()

			c.startAll()
			if tt.snapshot {
				for _, nd := range c.nodes {
					if s := nd.store.raft.Stats()["last_snapshot_index"]; s == "0" {
						t.Errorf("%s restarted without its snapshot", nd.id)
					}
				}
			}
			c.converge(want, idx)
			next := c.update(createIfMissing(mkService("new", "new")))
			if next <= idx {
				t.Fatalf("new entry %d after %d", next, idx)
			}
			c.converge(dump(c.leader().store.View()), next)
		})
	}
}
