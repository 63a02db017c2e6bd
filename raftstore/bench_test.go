package raftstore

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// benchParallelism are the b.SetParallelism factors: goroutines =
// factor × GOMAXPROCS, each doing one Update (one task create) at a time.
var benchParallelism = []int{1, 16, 256}

// benchUpdates measures Update throughput against s, reporting entries/s.
func benchUpdates(b *testing.B, leader func() *Store) {
	for _, p := range benchParallelism {
		b.Run(fmt.Sprintf("parallel=%d", p), func(b *testing.B) {
			s := leader()
			b.SetParallelism(p)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					task := &shoalv1.Task{ServiceId: "svc", DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING,
						Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_PENDING}}
					if _, err := s.Update(context.Background(), func(tx WriteTx) error { return tx.Create(task) }); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "updates/s")
		})
	}
}

// BenchmarkUpdate1Disk: one node, raft-wal log with fdatasync, production
// timeouts.
func BenchmarkUpdate1Disk(b *testing.B) {
	_, trans := raft.NewInmemTransport("bench:4242")
	s, err := Open(Config{
		NodeID: "bench", DataDir: filepath.Join(b.TempDir(), "raft"), Transport: trans, Bootstrap: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	eventually(b, "leader", func() error {
		if !s.IsLeader() {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	benchUpdates(b, func() *Store { return s })
}

// BenchmarkUpdate3Inmem: three in-memory nodes, so the cost is replication
// and the FSM, not the disk.
func BenchmarkUpdate3Inmem(b *testing.B) {
	c := newCluster(b, 3, clusterOpts{tweak: func(cfg *Config) {
		// Production-like timeouts keep the leader stable under load.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 0, 0, 0
		cfg.Logger = nil
	}})
	benchUpdates(b, func() *Store { return c.leader().store })
}

// BenchmarkUpdate3Disk: three nodes in one process (in-memory transport),
// each with its log on disk and synced, production timeouts: the store's
// own ceiling, without gRPC, TLS or the control API in front of it. With
// the two cores saturated (parallel=256 on a loaded machine) the leader can
// miss its 200 ms lease and step down, and the run fails with "not the raft
// leader": see docs/performance.md.
func BenchmarkUpdate3Disk(b *testing.B) {
	c := newCluster(b, 3, clusterOpts{disk: true, tweak: func(cfg *Config) {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 0, 0, 0
		cfg.Logger = nil
	}})
	benchUpdates(b, func() *Store { return c.leader().store })
}
