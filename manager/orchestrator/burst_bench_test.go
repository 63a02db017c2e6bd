package orchestrator

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// BenchmarkBurstToAssigned creates one service of burstTasks replicas over
// burstNodes nodes and times the orchestrator (reconciler creating the
// tasks, scheduler assigning them) until every task is ASSIGNED, on an
// in-memory store: the manager's part of `shoal bench schedule` without
// agents, sessions or fsync. Reports tasks/s, and logs how many entries
// the loops wrote and how long their writes took in all (inside the
// pass functions and in all). BURST_OPS and BURST_BYTES override the
// budget of one pass's entry.
func BenchmarkBurstToAssigned(b *testing.B) {
	for _, size := range []struct{ nodes, tasks int }{{1000, 20000}, {1000, 100000}} {
		b.Run(fmt.Sprintf("%dx%d", size.nodes, size.tasks), func(b *testing.B) {
			for b.Loop() {
				benchBurst(b, size.nodes, size.tasks)
			}
		})
	}
}

func benchBurst(b *testing.B, nodes, tasks int) {
	b.StopTimer()
	_, trans := raft.NewInmemTransport("solo:4242")
	s, err := raftstore.Open(raftstore.Config{
		NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: raftTimeout, ElectionTimeout: raftTimeout, LeaderLeaseTimeout: raftTimeout,
		CommitTimeout: 5 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for deadline := time.Now().Add(waitFor); !s.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the store does not lead")
		}
	}
	for i := 0; i < nodes; i += 500 {
		if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
			for j := i; j < min(i+500, nodes); j++ {
				if err := tx.Create(mkNode(fmt.Sprintf("n%05d", j))); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ts := &timingStore{Store: s}
	benchOrch := newOrchestrator(ts, nil)
	if v := os.Getenv("BURST_OPS"); v != "" {
		benchOrch.maxEntryOps, _ = strconv.Atoi(v)
	}
	if v := os.Getenv("BURST_BYTES"); v != "" {
		benchOrch.maxEntryBytes, _ = strconv.Atoi(v)
	}
	go func() { done <- benchOrch.Run(ctx) }()
	defer func() { b.Logf("updates %d total %s in fn %s", ts.n, ts.total, ts.fnT) }()
	defer func() { cancel(); <-done }()
	b.StartTimer()
	start := time.Now()
	svc := mkService("big", int64(tasks))
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error { return tx.Create(svc) }); err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(250 * time.Millisecond) {
		n := 0
		for _, t := range raftstore.List[*shoalv1.Task](s.View()) {
			if t.GetStatus().GetState() == stateAssigned {
				n++
			}
		}
		if n >= tasks {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d assigned after 10 min", n, tasks)
		}
	}
	b.ReportMetric(float64(tasks)/time.Since(start).Seconds(), "tasks/s")
}

// timingStore times the orchestrator's writes.
type timingStore struct {
	*raftstore.Store
	mu    sync.Mutex
	n     int
	total time.Duration
	fnT   time.Duration
}

func (t *timingStore) Update(ctx context.Context, fn func(raftstore.WriteTx) error) (uint64, error) {
	start := time.Now()
	var fd time.Duration
	i, err := t.Store.Update(ctx, func(tx raftstore.WriteTx) error {
		s := time.Now()
		defer func() { fd += time.Since(s) }()
		return fn(tx)
	})
	t.mu.Lock()
	t.n++
	t.total += time.Since(start)
	t.fnT += fd
	t.mu.Unlock()
	return i, err
}
