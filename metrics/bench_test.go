package metrics

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// BenchmarkManagerScrape is one GET /metrics of a leader whose store holds
// 100,000 tasks (1,000 services of 100, on 1,000 nodes): the scrape-time
// cost of the tasks-by-service-and-state and node gauges (README
// Benchmarks).
func BenchmarkManagerScrape(b *testing.B) {
	const nodes, services, perService = 1000, 1000, 100
	_, trans := raft.NewInmemTransport("solo:4242")
	st, err := raftstore.Open(raftstore.Config{NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for deadline := time.After(10 * time.Second); !st.IsLeader(); {
		select {
		case <-st.LeadershipChanged():
		case <-deadline:
			b.Fatal("the store never led")
		}
	}
	update := func(fn func(tx raftstore.WriteTx) error) {
		if _, err := st.Update(context.Background(), fn); err != nil {
			b.Fatal(err)
		}
	}
	update(func(tx raftstore.WriteTx) error {
		for i := range nodes {
			if err := tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: fmt.Sprintf("n%04d", i)}, Spec: &shoalv1.NodeSpec{Name: fmt.Sprintf("w%04d", i)},
				Status:      &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_READY},
				Description: &shoalv1.NodeDescription{Resources: &shoalv1.Resources{NanoCpus: 8e9, MemoryBytes: 32 << 30}}}); err != nil {
				return err
			}
		}
		return nil
	})
	for s := range services {
		update(func(tx raftstore.WriteTx) error {
			for i := range perService {
				state := shoalv1.TaskState_TASK_STATE_RUNNING
				if i%10 == 0 {
					state = shoalv1.TaskState_TASK_STATE_SHUTDOWN
				}
				if err := tx.Create(&shoalv1.Task{Meta: &shoalv1.Meta{Id: fmt.Sprintf("t%03d%03d", s, i)}, ServiceId: fmt.Sprintf("s%03d", s),
					ServiceName: fmt.Sprintf("svc%03d", s), Slot: uint64(i + 1), NodeId: fmt.Sprintf("n%04d", (s*perService+i)%nodes),
					DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING, Status: &shoalv1.TaskStatus{State: state},
					Spec: &shoalv1.TaskSpec{Resources: &shoalv1.ResourceRequirements{Reservations: &shoalv1.Resources{NanoCpus: 1e8, MemoryBytes: 64 << 20}}}}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	r := NewRegistry()
	m := NewManager(r)
	m.SetStore(RaftStore(st), "")
	h := Handler(r)
	b.ReportAllocs()
	b.ResetTimer()
	var size int
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			b.Fatalf("status %d", rec.Code)
		}
		size = rec.Body.Len()
		_, _ = io.Copy(io.Discard, rec.Body)
	}
	b.ReportMetric(float64(size), "bytes/scrape")
}
