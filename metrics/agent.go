package metrics

import (
	"os"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// AgentConfig is what the agent collector reads at scrape time.
type AgentConfig struct {
	// Tasks returns the tasks the node holds.
	Tasks func() []*shoalv1.Task
	// Usage reads a task's cgroup and network counters (cpu_usage_ns,
	// memory, pids, net bytes; cpu_percent is not used); an error skips
	// the task (it has no cgroup: not running).
	Usage func(taskID string) (*shoalv1.TaskStats, error)
	// LogPath returns the task's log file ("" if none).
	LogPath func(taskID string) string
}

// Agent is the agent side of a node's metrics.
type Agent struct {
	cfg   AgentConfig
	pulls *prometheus.CounterVec
}

// NewAgent registers the agent metrics in r.
func NewAgent(r prometheus.Registerer, cfg AgentConfig) *Agent {
	a := &Agent{cfg: cfg, pulls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_image_pulls_total",
		Help: "Image pulls from a registry by this node, by result (ok, error)."}, []string{"result"})}
	// Both results exist from the start, so that rate() sees the first
	// failure.
	a.pulls.WithLabelValues("ok")
	a.pulls.WithLabelValues("error")
	r.MustRegister(a.pulls, &agentCollector{a: a})
	return a
}

// ImagePulled counts one pull; err is its outcome. Safe on a nil *Agent.
func (a *Agent) ImagePulled(err error) {
	if a == nil {
		return
	}
	if err != nil {
		a.pulls.WithLabelValues("error").Inc()
	} else {
		a.pulls.WithLabelValues("ok").Inc()
	}
}

var (
	taskLabels     = []string{"task_id", "service", "slot"}
	descTaskCPU    = prometheus.NewDesc("shoal_task_cpu_seconds_total", "CPU time used by a task's processes.", taskLabels, nil)
	descTaskMem    = prometheus.NewDesc("shoal_task_memory_bytes", "Memory used by a task (cgroup usage less inactive file pages).", taskLabels, nil)
	descTaskMemLim = prometheus.NewDesc("shoal_task_memory_limit_bytes", "A task's memory limit (absent: none).", taskLabels, nil)
	descTaskPids   = prometheus.NewDesc("shoal_task_pids", "Processes and threads in a task's cgroup.", taskLabels, nil)
	descTaskRx     = prometheus.NewDesc("shoal_task_network_receive_bytes_total", "Bytes received on a task's interfaces (loopback excluded).", taskLabels, nil)
	descTaskTx     = prometheus.NewDesc("shoal_task_network_transmit_bytes_total", "Bytes sent on a task's interfaces (loopback excluded).", taskLabels, nil)
	descTaskLog    = prometheus.NewDesc("shoal_task_log_bytes", "Size of a task's current log file (what it wrote since the last rotation).", taskLabels, nil)
	descNodeTasksR = prometheus.NewDesc("shoal_agent_tasks", "Tasks this node holds, by observed state.", []string{"state"}, nil)
)

type agentCollector struct{ a *Agent }

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTaskCPU, descTaskMem, descTaskMemLim, descTaskPids, descTaskRx, descTaskTx, descTaskLog, descNodeTasksR} {
		ch <- d
	}
}

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	cfg := c.a.cfg
	if cfg.Tasks == nil {
		return
	}
	states := map[shoalv1.TaskState]int{}
	for _, t := range cfg.Tasks() {
		states[t.GetStatus().GetState()]++
		id := t.GetMeta().GetId()
		labels := []string{id, t.GetServiceName(), strconv.FormatUint(t.GetSlot(), 10)}
		if cfg.LogPath != nil {
			if p := cfg.LogPath(id); p != "" {
				if fi, err := os.Stat(p); err == nil {
					ch <- prometheus.MustNewConstMetric(descTaskLog, prometheus.GaugeValue, float64(fi.Size()), labels...)
				}
			}
		}
		if cfg.Usage == nil || t.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
			continue
		}
		u, err := cfg.Usage(id)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descTaskCPU, prometheus.CounterValue, float64(u.GetCpuUsageNs())/1e9, labels...)
		ch <- prometheus.MustNewConstMetric(descTaskMem, prometheus.GaugeValue, float64(u.GetMemoryBytes()), labels...)
		if u.GetMemoryLimitBytes() > 0 {
			ch <- prometheus.MustNewConstMetric(descTaskMemLim, prometheus.GaugeValue, float64(u.GetMemoryLimitBytes()), labels...)
		}
		ch <- prometheus.MustNewConstMetric(descTaskPids, prometheus.GaugeValue, float64(u.GetPids()), labels...)
		ch <- prometheus.MustNewConstMetric(descTaskRx, prometheus.CounterValue, float64(u.GetNetRxBytes()), labels...)
		ch <- prometheus.MustNewConstMetric(descTaskTx, prometheus.CounterValue, float64(u.GetNetTxBytes()), labels...)
	}
	for s, n := range states {
		ch <- prometheus.MustNewConstMetric(descNodeTasksR, prometheus.GaugeValue, float64(n), taskStateLabels[int32(s)])
	}
}
