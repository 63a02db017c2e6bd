package metrics

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
	"github.com/shoal-dev/shoal/trust/trusttest"
)

// fakeView is a raftstore.Reader over fixed objects.
type fakeView map[raftstore.Kind][]raftstore.Object

func (v fakeView) Get(kind raftstore.Kind, id string) raftstore.Object {
	for _, o := range v[kind] {
		if o.GetMeta().GetId() == id {
			return o
		}
	}
	return nil
}
func (v fakeView) List(kind raftstore.Kind) []raftstore.Object            { return v[kind] }
func (v fakeView) Find(raftstore.Kind, string, string) []raftstore.Object { return nil }
func (v fakeView) Index() uint64                                          { return 7 }

type fakeStore struct {
	leader bool
	view   fakeView
}

func (s *fakeStore) IsLeader() bool         { return s.leader }
func (s *fakeStore) Term() uint64           { return 3 }
func (s *fakeStore) AppliedIndex() uint64   { return 41 }
func (s *fakeStore) View() raftstore.Reader { return s.view }
func (s *fakeStore) RaftStats() map[string]string {
	return map[string]string{"last_log_index": "42", "commit_index": "41", "num_peers": "2"}
}

func task(id, svc, node string, st shoalv1.TaskState, nanoCPUs, mem int64) *shoalv1.Task {
	return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceName: svc, NodeId: node, Slot: 1,
		DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING, Status: &shoalv1.TaskStatus{State: st},
		Spec: &shoalv1.TaskSpec{Resources: &shoalv1.ResourceRequirements{Reservations: &shoalv1.Resources{NanoCpus: nanoCPUs, MemoryBytes: mem}}}}
}

func testView() fakeView {
	return fakeView{
		raftstore.KindCluster: {&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c"}}},
		raftstore.KindNode: {
			&shoalv1.Node{Meta: &shoalv1.Meta{Id: "n1"}, Spec: &shoalv1.NodeSpec{Name: "w1"}, Status: &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_READY},
				Description: &shoalv1.NodeDescription{Resources: &shoalv1.Resources{NanoCpus: 2e9, MemoryBytes: 4 << 30}}},
			&shoalv1.Node{Meta: &shoalv1.Meta{Id: "n2"}, Description: &shoalv1.NodeDescription{Hostname: "h2"},
				Status: &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_DOWN}, Spec: &shoalv1.NodeSpec{Availability: shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN}},
		},
		raftstore.KindTask: {
			task("t1", "web", "n1", shoalv1.TaskState_TASK_STATE_RUNNING, 5e8, 1<<20),
			task("t2", "web", "n1", shoalv1.TaskState_TASK_STATE_RUNNING, 5e8, 1<<20),
			task("t3", "web", "", shoalv1.TaskState_TASK_STATE_PENDING, 5e8, 1<<20),
			task("t4", "db", "n1", shoalv1.TaskState_TASK_STATE_FAILED, 1e9, 1<<20),
		},
	}
}

func TestManagerCollectorOnLeader(t *testing.T) {
	r := prometheus.NewRegistry()
	m := NewManager(r)
	dir := t.TempDir()
	bolt := filepath.Join(dir, "raft.db")
	if err := os.WriteFile(bolt, make([]byte, 12345), 0o600); err != nil {
		t.Fatal(err)
	}
	m.SetStore(&fakeStore{leader: true, view: testView()}, bolt)
	m.ObserveCommit(3 * time.Millisecond)
	m.ObserveApply(time.Millisecond)
	m.ObservePlacement(time.Millisecond, 4)
	m.OrchestratorPass("services")
	m.SessionOpened()
	m.SessionOpened()
	m.SessionClosed()
	m.Heartbeat()
	m.StatusBatch(12)

	want := `
# HELP shoal_raft_leader 1 if this manager is the raft leader (and has applied its predecessors' entries), else 0.
# TYPE shoal_raft_leader gauge
shoal_raft_leader 1
# HELP shoal_raft_last_index Index of the last entry in this manager's raft log.
# TYPE shoal_raft_last_index gauge
shoal_raft_last_index 42
# HELP shoal_store_bolt_bytes Size of raft.db (raft's term and vote; the raft log lives in wal/).
# TYPE shoal_store_bolt_bytes gauge
shoal_store_bolt_bytes 12345
# HELP shoal_store_objects Objects in this manager's store, by kind.
# TYPE shoal_store_objects gauge
shoal_store_objects{kind="cluster"} 1
shoal_store_objects{kind="network"} 0
shoal_store_objects{kind="node"} 2
shoal_store_objects{kind="service"} 0
shoal_store_objects{kind="task"} 4
# HELP shoal_tasks Tasks by service and observed state (leader only: sums over managers count each once).
# TYPE shoal_tasks gauge
shoal_tasks{service="db",state="failed"} 1
shoal_tasks{service="web",state="pending"} 1
shoal_tasks{service="web",state="running"} 2
# HELP shoal_scheduler_pending_tasks Tasks waiting for a node (state pending; leader only).
# TYPE shoal_scheduler_pending_tasks gauge
shoal_scheduler_pending_tasks 1
# HELP shoal_nodes Nodes by state and availability (leader only).
# TYPE shoal_nodes gauge
shoal_nodes{availability="active",state="ready"} 1
shoal_nodes{availability="drain",state="down"} 1
# HELP shoal_node_reserved_cpus CPUs reserved by the tasks assigned to a node (leader only).
# TYPE shoal_node_reserved_cpus gauge
shoal_node_reserved_cpus{node="h2",node_id="n2"} 0
shoal_node_reserved_cpus{node="w1",node_id="n1"} 1
# HELP shoal_node_cpus CPUs a node reports (leader only).
# TYPE shoal_node_cpus gauge
shoal_node_cpus{node="h2",node_id="n2"} 0
shoal_node_cpus{node="w1",node_id="n1"} 2
# HELP shoal_dispatcher_sessions Agent sessions open on this manager's dispatcher.
# TYPE shoal_dispatcher_sessions gauge
shoal_dispatcher_sessions 1
# HELP shoal_orchestrator_passes_total Reconcile passes of the orchestrator's loops.
# TYPE shoal_orchestrator_passes_total counter
shoal_orchestrator_passes_total{loop="services"} 1
# HELP shoal_scheduler_placed_tasks_total Tasks assigned to a node, by the scheduler loop or at their creation.
# TYPE shoal_scheduler_placed_tasks_total counter
shoal_scheduler_placed_tasks_total 4
`
	names := []string{"shoal_raft_leader", "shoal_raft_last_index", "shoal_store_bolt_bytes", "shoal_store_objects", "shoal_tasks",
		"shoal_scheduler_pending_tasks", "shoal_nodes", "shoal_node_reserved_cpus", "shoal_node_cpus", "shoal_dispatcher_sessions",
		"shoal_orchestrator_passes_total", "shoal_scheduler_placed_tasks_total"}
	if err := testutil.GatherAndCompare(r, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(r, "shoal_raft_commit_seconds", "shoal_raft_apply_seconds", "shoal_dispatcher_status_batch_size"); n != 3 {
		t.Fatalf("histograms: %d series, want 3", n)
	}
	promtoolCheck(t, r)
}

// A follower reports its own raft and store state but not the
// cluster-wide gauges (the leader does, once).
func TestManagerCollectorOnFollower(t *testing.T) {
	r := prometheus.NewRegistry()
	m := NewManager(r)
	m.SetStore(&fakeStore{view: testView()}, "")
	if err := testutil.GatherAndCompare(r, strings.NewReader(`
# HELP shoal_raft_leader 1 if this manager is the raft leader (and has applied its predecessors' entries), else 0.
# TYPE shoal_raft_leader gauge
shoal_raft_leader 0
`), "shoal_raft_leader", "shoal_tasks", "shoal_nodes", "shoal_store_bolt_bytes"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(r, "shoal_store_objects"); n != len(raftstore.Kinds) {
		t.Fatalf("shoal_store_objects: %d series, want %d", n, len(raftstore.Kinds))
	}
	// No manager running: nothing from the store at all.
	m.SetStore(nil, "")
	if n := testutil.CollectAndCount(r, "shoal_raft_leader", "shoal_store_objects"); n != 0 {
		t.Fatalf("without a store: %d series", n)
	}
}

func TestNilManagerHooks(t *testing.T) {
	var m *Manager
	m.SetStore(nil, "")
	m.ObserveCommit(time.Second)
	m.ObserveApply(time.Second)
	m.ObservePlacement(time.Second, 1)
	m.OrchestratorPass("x")
	m.SessionOpened()
	m.SessionClosed()
	m.Heartbeat()
	m.StatusBatch(1)
	var a *Agent
	a.ImagePulled(nil)
}

func TestAgentCollector(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "t1.log")
	if err := os.WriteFile(logFile, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tasks := []*shoalv1.Task{
		task("t1", "web", "n1", shoalv1.TaskState_TASK_STATE_RUNNING, 0, 0),
		task("t2", "web", "n1", shoalv1.TaskState_TASK_STATE_RUNNING, 0, 0), // its cgroup is gone: skipped
		task("t3", "web", "n1", shoalv1.TaskState_TASK_STATE_COMPLETE, 0, 0),
	}
	r := prometheus.NewRegistry()
	a := NewAgent(r, AgentConfig{
		Tasks: func() []*shoalv1.Task { return tasks },
		Usage: func(id string) (*shoalv1.TaskStats, error) {
			if id != "t1" {
				return nil, errors.New("no cgroup")
			}
			return &shoalv1.TaskStats{CpuUsageNs: 1_500_000_000, MemoryBytes: 1 << 20, MemoryLimitBytes: 64 << 20, Pids: 3, NetRxBytes: 100, NetTxBytes: 50}, nil
		},
		LogPath: func(id string) string {
			if id == "t1" {
				return logFile
			}
			return ""
		},
	})
	a.ImagePulled(nil)
	a.ImagePulled(fmt.Errorf("unreachable"))
	a.ImagePulled(nil)
	want := `
# HELP shoal_task_cpu_seconds_total CPU time used by a task's processes.
# TYPE shoal_task_cpu_seconds_total counter
shoal_task_cpu_seconds_total{service="web",slot="1",task_id="t1"} 1.5
# HELP shoal_task_memory_bytes Memory used by a task (cgroup usage less inactive file pages).
# TYPE shoal_task_memory_bytes gauge
shoal_task_memory_bytes{service="web",slot="1",task_id="t1"} 1.048576e+06
# HELP shoal_task_memory_limit_bytes A task's memory limit (absent: none).
# TYPE shoal_task_memory_limit_bytes gauge
shoal_task_memory_limit_bytes{service="web",slot="1",task_id="t1"} 6.7108864e+07
# HELP shoal_task_pids Processes and threads in a task's cgroup.
# TYPE shoal_task_pids gauge
shoal_task_pids{service="web",slot="1",task_id="t1"} 3
# HELP shoal_task_network_receive_bytes_total Bytes received on a task's interfaces (loopback excluded).
# TYPE shoal_task_network_receive_bytes_total counter
shoal_task_network_receive_bytes_total{service="web",slot="1",task_id="t1"} 100
# HELP shoal_task_log_bytes Size of a task's current log file (what it wrote since the last rotation).
# TYPE shoal_task_log_bytes gauge
shoal_task_log_bytes{service="web",slot="1",task_id="t1"} 6
# HELP shoal_agent_tasks Tasks this node holds, by observed state.
# TYPE shoal_agent_tasks gauge
shoal_agent_tasks{state="complete"} 1
shoal_agent_tasks{state="running"} 2
# HELP shoal_image_pulls_total Image pulls from a registry by this node, by result (ok, error).
# TYPE shoal_image_pulls_total counter
shoal_image_pulls_total{result="error"} 1
shoal_image_pulls_total{result="ok"} 2
`
	if err := testutil.GatherAndCompare(r, strings.NewReader(want), "shoal_task_cpu_seconds_total", "shoal_task_memory_bytes",
		"shoal_task_memory_limit_bytes", "shoal_task_pids", "shoal_task_network_receive_bytes_total", "shoal_task_log_bytes",
		"shoal_agent_tasks", "shoal_image_pulls_total"); err != nil {
		t.Fatal(err)
	}
	promtoolCheck(t, r)
}

// The whole node registry (Go, process, manager and agent metrics) passes
// `promtool check metrics` (names, units, HELP texts, types).
func TestNodeRegistryPromtool(t *testing.T) {
	r := NewRegistry()
	m := NewManager(r)
	m.SetStore(&fakeStore{leader: true, view: testView()}, "")
	NewAgent(r, AgentConfig{Tasks: func() []*shoalv1.Task { return nil }})
	promtoolCheck(t, r)
}

// promtoolCheck runs `promtool check metrics` (Debian's prometheus
// package, scripts/setup.sh) on what Handler serves from g.
func promtoolCheck(t *testing.T, g prometheus.Gatherer) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (Debian package prometheus; scripts/setup.sh installs it): %v", err)
	}
	rec := httptest.NewRecorder()
	Handler(g).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(rec.Body.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// Serve requires a client certificate of the cluster with the admin or
// manager role.
func TestServeAuthorization(t *testing.T) {
	root, err := trust.NewRootCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	other, err := trust.NewRootCA("c2")
	if err != nil {
		t.Fatal(err)
	}
	certs := trusttest.NodeCerts(t, root, "w1", trust.RoleWorker)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	r := prometheus.NewRegistry()
	NewAgent(r, AgentConfig{})
	go func() { done <- ServeListener(ctx, ln, ServeConfig{Certs: certs, Handler: Handler(r)}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	adminTLS := func(ca *trust.CA) *tls.Config {
		certPEM, keyPEM, err := ca.IssueAdmin("prom", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{RootCAs: root.Pool(), ServerName: trust.WorkerServerName, Certificates: []tls.Certificate{pair}}
	}
	workerTLS := trusttest.NodeCerts(t, root, "w2", trust.RoleWorker).ClientTLSConfig(trust.WorkerServerName, "http/1.1")
	managerTLS := trusttest.NodeCerts(t, root, "m1", trust.RoleManager).ClientTLSConfig(trust.WorkerServerName, "http/1.1")
	noCert := &tls.Config{RootCAs: root.Pool(), ServerName: trust.WorkerServerName}
	for _, tc := range []struct {
		name string
		conf *tls.Config
		code int // 0: the handshake fails
	}{
		{"admin", adminTLS(root), 200},
		{"manager", managerTLS, 200},
		{"worker", workerTLS, 403},
		{"no certificate", noCert, 0},
		{"other cluster", adminTLS(other), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := &http.Client{Transport: &http.Transport{TLSClientConfig: tc.conf}, Timeout: 30 * time.Second}
			defer cl.CloseIdleConnections()
			resp, err := cl.Get("https://" + ln.Addr().String() + "/metrics")
			if tc.code == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("got %s, want a failed handshake", resp.Status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.code)
			}
			if tc.code == 200 && !strings.Contains(string(body), "shoal_image_pulls_total") {
				t.Fatalf("body lacks shoal metrics:\n%s", body)
			}
		})
	}
}
