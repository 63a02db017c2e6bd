package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/agent/image"
	"github.com/shoal-dev/shoal/agent/runtime"
	"github.com/shoal-dev/shoal/metrics"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// nodeMetrics is the node's one registry: the manager metrics (fed while
// a manager runs here) and the agent's.
type nodeMetrics struct {
	reg   *prometheus.Registry
	mgr   *metrics.Manager
	agent *metrics.Agent
}

func newNodeMetrics() *nodeMetrics {
	reg := metrics.NewRegistry()
	return &nodeMetrics{reg: reg, mgr: metrics.NewManager(reg)}
}

// addAgent registers the agent side's metrics: per-task cgroup usage read
// at scrape time through the runtime (libcontainer only), log file sizes,
// image pulls.
func (m *nodeMetrics) addAgent(side *agentSide) {
	cfg := metrics.AgentConfig{
		Tasks:   func() []*shoalv1.Task { return side.ex.Tasks() },
		LogPath: func(id string) string { return side.ex.LogPath(id) },
	}
	if side.lc != nil {
		cfg.Usage = taskUsage(side.lc)
	}
	m.agent = metrics.NewAgent(m.reg, cfg)
}

// taskUsage reads a task's counters for the metrics and AgentAPI.Stats.
func taskUsage(lc *runtime.Libcontainer) func(string) (*shoalv1.TaskStats, error) {
	return func(id string) (*shoalv1.TaskStats, error) {
		u, err := lc.Usage(id)
		if err != nil {
			return nil, err
		}
		return &shoalv1.TaskStats{TaskId: id, CpuUsageNs: u.CPUUsageNS, MemoryBytes: u.MemoryBytes, MemoryLimitBytes: u.MemoryLimitBytes,
			Pids: u.Pids, PidsLimit: u.PidsLimit, NetRxBytes: u.NetRxBytes, NetTxBytes: u.NetTxBytes}, nil
	}
}

// countingImages counts the executor's registry pulls.
type countingImages struct {
	agent.Images
	m *nodeMetrics
}

func (c countingImages) Pull(ctx context.Context, ref string, opts image.PullOptions) (image.Image, error) {
	img, err := c.Images.Pull(ctx, ref, opts)
	if errors.Is(err, context.Canceled) {
		return img, err // the task went away, not the registry
	}
	c.m.agent.ImagePulled(err)
	return img, err
}

// metricsAddr checks --metrics-addr: "" (off), IP or IP:PORT (default
// port metrics.DefaultPort).
func metricsAddr(addr string) (string, error) {
	if addr == "" {
		return "", nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, strconv.Itoa(metrics.DefaultPort)
	}
	if net.ParseIP(host) == nil {
		return "", fmt.Errorf("--metrics-addr: %q is not an IP address", host)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return "", fmt.Errorf("--metrics-addr: bad port %q", port)
	}
	return net.JoinHostPort(host, port), nil
}

// serveMetrics serves the node's /metrics on --metrics-addr (mutual TLS,
// admin or manager certificates) until ctx ends; nothing when it is off.
func (n *node) serveMetrics(ctx context.Context) error {
	if n.o.MetricsAddr == "" {
		return nil
	}
	current, _ := n.agentAPICheck()
	err := metrics.Serve(ctx, metrics.ServeConfig{Addr: n.o.MetricsAddr, Certs: n.certs, Handler: metrics.Handler(n.metrics.reg),
		Current: current, Logger: n.log})
	if err != nil {
		return fmt.Errorf("metrics on %s: %w", n.o.MetricsAddr, err)
	}
	return nil
}

// usage is AgentAPI.Stats' reader (nil without libcontainer: a test
// runtime).
func (side *agentSide) usage() func(string) (*shoalv1.TaskStats, error) {
	if side.lc == nil {
		return nil
	}
	return taskUsage(side.lc)
}
