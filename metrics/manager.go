package metrics

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// Store is what the manager collector reads at scrape time
// (*raftstore.Store).
type Store interface {
	IsLeader() bool
	Term() uint64
	AppliedIndex() uint64
	View() raftstore.Reader
	// RaftStats is raft's own figures (last_log_index, commit_index, ...).
	RaftStats() map[string]string
}

// RaftStore adapts a *raftstore.Store to Store.
func RaftStore(s *raftstore.Store) Store { return raftStore{s} }

type raftStore struct{ *raftstore.Store }

func (s raftStore) RaftStats() map[string]string { return s.Raft().Stats() }

// Manager is the manager side of a node's metrics. It is made once per
// node (a manager may stop and start again on promotion and demotion);
// SetStore points the scrape-time collector at the running manager's
// store. The Observe* and dispatcher methods are the hooks the manager's
// parts call; they are safe for concurrent use and on a nil *Manager (no
// metrics wired, as in most tests).
type Manager struct {
	mu       sync.Mutex
	store    Store
	boltPath string

	commit     prometheus.Histogram
	apply      prometheus.Histogram
	applied    prometheus.Counter
	placement  prometheus.Histogram
	placed     prometheus.Counter
	passes     *prometheus.CounterVec
	sessions   prometheus.Gauge
	heartbeats prometheus.Counter
	batch      prometheus.Histogram
}

// NewManager registers the manager metrics in r.
func NewManager(r prometheus.Registerer) *Manager {
	lat := prometheus.ExponentialBuckets(0.0005, 2, 16) // 0.5 ms .. 16 s
	m := &Manager{
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shoal_raft_commit_seconds",
			Help: "Time from proposing a store change to its commit and apply on this leader."}),
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shoal_raft_apply_seconds",
			Help: "Time the state machine takes to apply one raft entry.", Buckets: prometheus.ExponentialBuckets(0.00001, 4, 12)}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_raft_applied_entries_total",
			Help: "Raft entries applied to this manager's store."}),
		placement: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shoal_scheduler_placement_seconds",
			Help: "Time one placement takes, from its start to its entry's commit: a scheduler-loop batch of pending tasks, or the tasks a reconcile pass creates and places at once.", Buckets: lat}),
		placed: prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_scheduler_placed_tasks_total",
			Help: "Tasks assigned to a node, by the scheduler loop or at their creation."}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_orchestrator_passes_total",
			Help: "Reconcile passes of the orchestrator's loops."}, []string{"loop"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_dispatcher_sessions",
			Help: "Agent sessions open on this manager's dispatcher."}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_dispatcher_heartbeats_total",
			Help: "Heartbeats received by this manager's dispatcher."}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shoal_dispatcher_status_batch_size",
			Help: "Task status updates written per store change by the dispatcher.", Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
	}
	r.MustRegister(m.commit, m.apply, m.applied, m.placement, m.placed, m.passes, m.sessions, m.heartbeats, m.batch,
		&managerCollector{m: m})
	return m
}

// SetStore points the scrape-time metrics at a running manager's store
// and its bolt file (boltPath; "" for none); nil while no manager runs.
func (m *Manager) SetStore(s Store, boltPath string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.store, m.boltPath = s, boltPath
	m.mu.Unlock()
}

// ObserveCommit records one store change's propose-to-apply time.
func (m *Manager) ObserveCommit(d time.Duration) {
	if m != nil {
		m.commit.Observe(d.Seconds())
	}
}

// ObserveApply records one entry's apply time in the state machine.
func (m *Manager) ObserveApply(d time.Duration) {
	if m != nil {
		m.apply.Observe(d.Seconds())
		m.applied.Inc()
	}
}

// ObservePlacement records one scheduling pass that placed n tasks.
func (m *Manager) ObservePlacement(d time.Duration, n int) {
	if m != nil {
		m.placement.Observe(d.Seconds())
		m.placed.Add(float64(n))
	}
}

// OrchestratorPass counts one reconcile pass of loop.
func (m *Manager) OrchestratorPass(loop string) {
	if m != nil {
		m.passes.WithLabelValues(loop).Inc()
	}
}

// SessionOpened and SessionClosed track the dispatcher's open sessions.
func (m *Manager) SessionOpened() {
	if m != nil {
		m.sessions.Inc()
	}
}

// SessionClosed: see SessionOpened.
func (m *Manager) SessionClosed() {
	if m != nil {
		m.sessions.Dec()
	}
}

// Heartbeat counts one heartbeat.
func (m *Manager) Heartbeat() {
	if m != nil {
		m.heartbeats.Inc()
	}
}

// StatusBatch records how many task statuses one store change carried.
func (m *Manager) StatusBatch(n int) {
	if m != nil {
		m.batch.Observe(float64(n))
	}
}

var (
	descRaftLeader = prometheus.NewDesc("shoal_raft_leader",
		"1 if this manager is the raft leader (and has applied its predecessors' entries), else 0.", nil, nil)
	descRaftTerm      = prometheus.NewDesc("shoal_raft_term", "Current raft term.", nil, nil)
	descRaftLastIndex = prometheus.NewDesc("shoal_raft_last_index", "Index of the last entry in this manager's raft log.", nil, nil)
	descRaftCommit    = prometheus.NewDesc("shoal_raft_commit_index", "Highest raft index known committed.", nil, nil)
	descRaftApplied   = prometheus.NewDesc("shoal_raft_applied_index", "Highest raft index applied to this manager's store.", nil, nil)
	descRaftPeers     = prometheus.NewDesc("shoal_raft_peers", "Other voters in the raft configuration.", nil, nil)
	descObjects       = prometheus.NewDesc("shoal_store_objects", "Objects in this manager's store, by kind.", []string{"kind"}, nil)
	descBolt          = prometheus.NewDesc("shoal_store_bolt_bytes", "Size of raft.db (raft's term and vote; the raft log lives in wal/).", nil, nil)
	// The raft log moved out of raft.db into wal/ beside it (raftstore's
	// write-ahead log): what grows until a snapshot compacts it, and so
	// what fills a manager's disk, is there.
	descRaftLog = prometheus.NewDesc("shoal_store_raft_log_bytes",
		"Size of the raft log's segment files (wal/ beside raft.db; segments are preallocated).", nil, nil)
	descTasks = prometheus.NewDesc("shoal_tasks",
		"Tasks by service and observed state (leader only: sums over managers count each once).", []string{"service", "state"}, nil)
	descPending = prometheus.NewDesc("shoal_scheduler_pending_tasks",
		"Tasks waiting for a node (state pending; leader only).", nil, nil)
	descNodes = prometheus.NewDesc("shoal_nodes", "Nodes by state and availability (leader only).",
		[]string{"state", "availability"}, nil)
	descNodeCPUs     = prometheus.NewDesc("shoal_node_cpus", "CPUs a node reports (leader only).", []string{"node_id", "node"}, nil)
	descNodeMemory   = prometheus.NewDesc("shoal_node_memory_bytes", "Memory a node reports (leader only).", []string{"node_id", "node"}, nil)
	descNodeResCPUs  = prometheus.NewDesc("shoal_node_reserved_cpus", "CPUs reserved by the tasks assigned to a node (leader only).", []string{"node_id", "node"}, nil)
	descNodeResMem   = prometheus.NewDesc("shoal_node_reserved_memory_bytes", "Memory reserved by the tasks assigned to a node (leader only).", []string{"node_id", "node"}, nil)
	descNodeTasks    = prometheus.NewDesc("shoal_node_tasks", "Tasks assigned to a node and not finished (leader only).", []string{"node_id", "node"}, nil)
	managerDescs     = []*prometheus.Desc{descRaftLeader, descRaftTerm, descRaftLastIndex, descRaftCommit, descRaftApplied, descRaftPeers, descObjects, descBolt, descRaftLog, descTasks, descPending, descNodes, descNodeCPUs, descNodeMemory, descNodeResCPUs, descNodeResMem, descNodeTasks}
	taskStateLabels  = enumLabels(shoalv1.TaskState_name, "TASK_STATE_")
	nodeStateLabels  = enumLabels(shoalv1.NodeState_name, "NODE_STATE_")
	availabilityLbls = enumLabels(shoalv1.NodeAvailability_name, "NODE_AVAILABILITY_")
)

// enumLabels maps enum values to lower-case names without their prefix
// ("running"), computed once rather than per task at scrape time.
func enumLabels(names map[int32]string, prefix string) map[int32]string {
	out := make(map[int32]string, len(names))
	for v, n := range names {
		out[v] = strings.ToLower(strings.TrimPrefix(n, prefix))
	}
	return out
}

type managerCollector struct{ m *Manager }

func (c *managerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range managerDescs {
		ch <- d
	}
}

func (c *managerCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	s, bolt := c.m.store, c.m.boltPath
	c.m.mu.Unlock()
	if s == nil {
		return
	}
	leader := s.IsLeader()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descRaftLeader, b2f(leader))
	gauge(descRaftTerm, float64(s.Term()))
	gauge(descRaftApplied, float64(s.AppliedIndex()))
	st := s.RaftStats()
	for d, key := range map[*prometheus.Desc]string{descRaftLastIndex: "last_log_index", descRaftCommit: "commit_index", descRaftPeers: "num_peers"} {
		if v, err := strconv.ParseUint(st[key], 10, 64); err == nil {
			gauge(d, float64(v))
		}
	}
	if bolt != "" {
		if fi, err := os.Stat(bolt); err == nil {
			gauge(descBolt, float64(fi.Size()))
		}
		if n, ok := dirBytes(filepath.Join(filepath.Dir(bolt), "wal")); ok {
			gauge(descRaftLog, float64(n))
		}
	}
	view := s.View()
	var tasks, nodes []raftstore.Object
	for _, k := range raftstore.Kinds {
		objs := view.List(k)
		gauge(descObjects, float64(len(objs)), string(k))
		switch k {
		case raftstore.KindTask:
			tasks = objs
		case raftstore.KindNode:
			nodes = objs
		}
	}
	if !leader {
		return
	}
	collectCluster(ch, tasks, nodes)
}

// collectCluster emits the cluster-wide gauges computed from the tasks
// and nodes: one pass over each, counting into maps keyed by small
// structs (no per-task allocation).
func collectCluster(ch chan<- prometheus.Metric, tasks, nodes []raftstore.Object) {
	type key struct {
		service string
		state   shoalv1.TaskState
	}
	type use struct {
		nanoCPUs, memory int64
		tasks            int
	}
	counts := map[key]int{}
	used := map[string]*use{}
	pending := 0
	for _, o := range tasks {
		t := o.(*shoalv1.Task)
		st := t.GetStatus().GetState()
		counts[key{t.GetServiceName(), st}]++
		if st == shoalv1.TaskState_TASK_STATE_PENDING {
			pending++
		}
		if t.GetNodeId() == "" || st > shoalv1.TaskState_TASK_STATE_RUNNING || t.GetDesiredState() > shoalv1.TaskState_TASK_STATE_RUNNING {
			continue
		}
		u := used[t.GetNodeId()]
		if u == nil {
			u = &use{}
			used[t.GetNodeId()] = u
		}
		r := t.GetSpec().GetResources().GetReservations()
		u.nanoCPUs += r.GetNanoCpus()
		u.memory += r.GetMemoryBytes()
		u.tasks++
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for k, n := range counts {
		gauge(descTasks, float64(n), k.service, taskStateLabels[int32(k.state)])
	}
	gauge(descPending, float64(pending))
	type nkey struct {
		state shoalv1.NodeState
		avail shoalv1.NodeAvailability
	}
	ncounts := map[nkey]int{}
	for _, o := range nodes {
		n := o.(*shoalv1.Node)
		ncounts[nkey{n.GetStatus().GetState(), n.GetSpec().GetAvailability()}]++
		name := n.GetSpec().GetName()
		if name == "" {
			name = n.GetDescription().GetHostname()
		}
		res := n.GetDescription().GetResources()
		gauge(descNodeCPUs, float64(res.GetNanoCpus())/1e9, n.GetMeta().GetId(), name)
		gauge(descNodeMemory, float64(res.GetMemoryBytes()), n.GetMeta().GetId(), name)
		u := used[n.GetMeta().GetId()]
		if u == nil {
			u = &use{}
		}
		gauge(descNodeResCPUs, float64(u.nanoCPUs)/1e9, n.GetMeta().GetId(), name)
		gauge(descNodeResMem, float64(u.memory), n.GetMeta().GetId(), name)
		gauge(descNodeTasks, float64(u.tasks), n.GetMeta().GetId(), name)
	}
	for k, n := range ncounts {
		gauge(descNodes, float64(n), nodeStateLabels[int32(k.state)], availabilityLbls[int32(k.avail)])
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// dirBytes sums the sizes of the regular files in dir (not below); false
// if dir cannot be read.
func dirBytes(dir string) (int64, bool) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, false
	}
	var n int64
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n, true
}
