package agentapi

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

func TestCPUPercent(t *testing.T) {
	at := time.Unix(100, 0)
	for _, tc := range []struct {
		name      string
		prev, cur sample
		want      float64
	}{
		{"one CPU busy", sample{1e9, at}, sample{2e9, at.Add(time.Second)}, 100},
		{"two CPUs busy", sample{0, at}, sample{1e9, at.Add(500 * time.Millisecond)}, 200},
		{"idle", sample{5, at}, sample{5, at.Add(time.Second)}, 0},
		{"counter went back", sample{9e9, at}, sample{1e9, at.Add(time.Second)}, 0},
		{"no time passed", sample{0, at}, sample{1e9, at}, 0},
	} {
		if got := CPUPercent(tc.prev, tc.cur); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// statsServer serves tasks t1 (running, 10 ms of CPU per reading), t2
// (complete) and t3 (running, cgroup unreadable).
func statsServer(t *testing.T) (shoalv1.AgentAPIClient, shoalv1.AgentAPIClient) {
	ca := newTestCA(t)
	var mu sync.Mutex
	var cpu uint64
	tasks := []*shoalv1.Task{
		{Meta: &shoalv1.Meta{Id: "t1"}, ServiceId: "s1", ServiceName: "web", Slot: 1, Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING}},
		{Meta: &shoalv1.Meta{Id: "t2"}, ServiceName: "web", Slot: 2, Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_COMPLETE}},
		{Meta: &shoalv1.Meta{Id: "t3"}, ServiceName: "web", Slot: 3, Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING}},
	}
	srv := New(Config{NodeID: "w1", Logger: testLogger(t), StatsInterval: 20 * time.Millisecond,
		Tasks: func() []*shoalv1.Task { return tasks },
		Usage: func(id string) (*shoalv1.TaskStats, error) {
			if id != "t1" {
				return nil, errors.New("no cgroup")
			}
			mu.Lock()
			defer mu.Unlock()
			cpu += 10_000_000
			return &shoalv1.TaskStats{CpuUsageNs: cpu, MemoryBytes: 1 << 20, MemoryLimitBytes: 8 << 20, Pids: 2, PidsLimit: 10, NetRxBytes: 5, NetTxBytes: 6}, nil
		}})
	addr := serve(t, ca.node("w1", trust.RoleWorker), srv)
	return client(t, addr, "w1", ca.nodeTLS("m1", trust.RoleManager)), client(t, addr, "w1", ca.nodeTLS("w2", trust.RoleWorker))
}

func TestStatsOnce(t *testing.T) {
	mgr, _ := statsServer(t)
	st, err := mgr.Stats(testCtx(t), &shoalv1.AgentStatsRequest{TaskIds: []string{"t1", "t2", "t3", "tx"}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetStats()) != 1 {
		t.Fatalf("stats: %v", resp.GetStats())
	}
	s := resp.GetStats()[0]
	if s.GetTaskId() != "t1" || s.GetServiceName() != "web" || s.GetNodeId() != "w1" || s.GetSlot() != 1 ||
		s.GetMemoryBytes() != 1<<20 || s.GetMemoryLimitBytes() != 8<<20 || s.GetPids() != 2 || s.GetNetRxBytes() != 5 || s.GetNetTxBytes() != 6 {
		t.Fatalf("stats: %v", s)
	}
	// 10 ms of CPU between the two readings: above zero whatever the
	// interval took on a loaded machine.
	if s.GetCpuPercent() <= 0 {
		t.Fatalf("cpu_percent = %v, want > 0", s.GetCpuPercent())
	}
	w := strings.Join(resp.GetWarnings(), "\n")
	for _, want := range []string{"task t2 is not running", "task t3: no cgroup", "task tx is not on node w1"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	if _, err := st.Recv(); err == nil {
		t.Fatal("a second reply without stream")
	}
}

func TestStatsStream(t *testing.T) {
	mgr, _ := statsServer(t)
	// No ids: every running task the node holds; the complete one is
	// left out silently.
	st, err := mgr.Stats(testCtx(t), &shoalv1.AgentStatsRequest{Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetStats()) != 1 || resp.GetStats()[0].GetTaskId() != "t1" {
			t.Fatalf("reply %d: %v", i, resp)
		}
		if w := strings.Join(resp.GetWarnings(), "\n"); strings.Contains(w, "t2") || !strings.Contains(w, "t3") {
			t.Fatalf("reply %d warnings: %s", i, w)
		}
	}
}

func TestStatsRefusals(t *testing.T) {
	mgr, worker := statsServer(t)
	st, err := worker.Stats(testCtx(t), &shoalv1.AgentStatsRequest{})
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("worker: %v, want PermissionDenied", err)
	}
	st, err = mgr.Stats(testCtx(t), &shoalv1.AgentStatsRequest{TaskIds: []string{"../x"}})
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "task_ids[0]") {
		t.Fatalf("bad id: %v", err)
	}
}
