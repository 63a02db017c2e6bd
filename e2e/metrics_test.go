package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// metricsPort is where every node of the metrics test serves /metrics
// (--metrics-addr IP, the default port).
const metricsPort = 9323

// newMetricsCluster is newCluster with --metrics-addr on every node.
func newMetricsCluster(t *testing.T, nManagers, nWorkers int) *cluster {
	t.Helper()
	f := harness.NewFabric(t)
	harness.Binary(t)
	c := &cluster{t: t, f: f, nodeIDs: map[*harness.Host]string{}}
	h1 := c.addHost()
	p := h1.Init(t, "--node-name", h1.Name, "--metrics-addr", h1.IP)
	c.adminDir = h1.AdminCertDir()
	c.managers = append(c.managers, h1)
	c.waitNodeID(h1, p)
	harness.Eventually(t, startTimeout, poll, func() error {
		if err := p.CheckRunning(); err != nil {
			return err
		}
		ctx, cancel := attempt()
		defer cancel()
		var err error
		if c.workerToken, err = c.token(ctx, h1.Local(), "worker"); err != nil {
			return err
		}
		c.managerToken, err = c.token(ctx, h1.Local(), "manager")
		return err
	})
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error { return c.nodeReady(nodes, h1, shoalv1.NodeRole_NODE_ROLE_MANAGER) })
	for range nManagers - 1 {
		h := c.addHost()
		c.join(h, c.managerToken, shoalv1.NodeRole_NODE_ROLE_MANAGER, "--metrics-addr", h.IP)
	}
	for range nWorkers {
		h := c.addHost()
		c.join(h, c.workerToken, shoalv1.NodeRole_NODE_ROLE_WORKER, "--metrics-addr", h.IP)
	}
	return c
}

// promConfig is a Prometheus configuration scraping the managers and the
// workers every second with the cluster's admin certificate (a node's
// certificate names its role, manager.shoal or worker.shoal).
func promConfig(c *cluster) string {
	targets := func(hs []*harness.Host) string {
		var q []string
		for _, h := range hs {
			q = append(q, strconv.Quote(fmt.Sprintf("%s:%d", h.IP, metricsPort)))
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	job := func(name string, hs []*harness.Host, serverName string) string {
		return fmt.Sprintf(`  - job_name: %s
    scheme: https
    tls_config:
      ca_file: %s
      cert_file: %s
      key_file: %s
      server_name: %s
    static_configs:
      - targets: %s
`, name, filepath.Join(c.adminDir, "ca.crt"), filepath.Join(c.adminDir, "admin.crt"), filepath.Join(c.adminDir, "admin.key"),
			serverName, targets(hs))
	}
	return "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n" +
		job("managers", c.managers, trust.ManagerServerName) + job("workers", c.workers, trust.WorkerServerName)
}

// promQuery asks the Prometheus server on h for an instant vector and
// returns its samples' values.
func promQuery(ctx context.Context, h *harness.Host, q string) ([]float64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://127.0.0.1:9090/api/v1/query?query="+url.QueryEscape(q), nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.HTTPClient(attemptLimit).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("%s: %s", q, body.Error)
	}
	var out []float64
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: value %v", q, r.Value)
		}
		out = append(out, v)
	}
	return out, nil
}

// TestMetricsPrometheus: every node (managers and workers) serves
// /metrics on --metrics-addr over mutual TLS; a real Prometheus server
// (Debian's) scrapes them all with the admin certificate, and PromQL over
// what it stored answers what the cluster is: one raft leader, the
// service's replicas running, each task's memory from its cgroup, one
// dispatcher session per node, placements made. The served text passes
// `promtool check metrics`; `shoal service stats` and `task stats` show
// the running tasks' use.
func TestMetricsPrometheus(t *testing.T) {
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not found (Debian package prometheus; scripts/setup.sh installs it): %v", err)
	}
	c := newMetricsCluster(t, 2, 1)
	h1 := c.hosts[0]
	cl := h1.Local()
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "hog", 3, nil, "alloc", "4m", "--hold", "inf")
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
	}
	tasks := harness.WaitRunning(t, cl, "hog", 3, runTimeout)

	// A node's /metrics as a client with the admin certificate sees it,
	// and it passes promtool's lint.
	creds, err := trust.LoadCreds(c.adminDir, "admin")
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := trust.ClientTLSConfigFromCreds(creds, trust.WorkerServerName)
	if err != nil {
		t.Fatal(err)
	}
	tlsConf.NextProtos = nil
	worker := c.workers[0]
	tr := &http.Transport{DialContext: h1.DialContext, TLSClientConfig: tlsConf, DisableKeepAlives: true}
	var text []byte
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("https://%s:%d/metrics", worker.IP, metricsPort), nil)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if text, err = io.ReadAll(resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %s", resp.Status, text)
		}
		if !bytes.Contains(text, []byte("shoal_task_memory_bytes{")) {
			return fmt.Errorf("no task memory yet")
		}
		return nil
	})
	lint := exec.Command("promtool", "check", "metrics")
	lint.Stdin = bytes.NewReader(text)
	if out, err := lint.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics on %s's /metrics: %v\n%s", worker, err, out)
	}

	// The Prometheus server runs on h1 (its loopback and the fabric).
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(promConfig(c)), 0o600); err != nil {
		t.Fatal(err)
	}
	h1.StartProgram(t, prom, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:9090", "--log.level=warn")

	want := []struct {
		query string
		check func([]float64) error
	}{
		{`count(up == 1)`, equals(3)},
		{`sum(shoal_raft_leader)`, equals(1)},
		{`count(shoal_raft_leader)`, equals(2)},
		{`sum(shoal_tasks{service="hog",state="running"})`, equals(3)},
		{`count(shoal_task_memory_bytes{service="hog"} > 1048576)`, equals(3)},
		{`count(shoal_task_pids{service="hog"} >= 1)`, equals(3)},
		{`count(shoal_task_cpu_seconds_total{service="hog"} > 0)`, equals(3)},
		{`count(shoal_task_log_bytes{service="hog"} > 0)`, equals(3)},
		{`sum(shoal_agent_tasks{state="running"})`, equals(3)},
		{`sum(shoal_dispatcher_heartbeats_total)`, atLeast(1)},
		{`sum(shoal_orchestrator_passes_total{loop="scheduler"})`, atLeast(1)},
		{`sum(shoal_raft_applied_entries_total)`, atLeast(1)},
		{`sum(shoal_dispatcher_sessions)`, equals(3)},
		{`sum(shoal_scheduler_placed_tasks_total)`, atLeast(3)},
		{`sum(shoal_store_objects{kind="task"}) / count(shoal_store_objects{kind="task"})`, atLeast(3)},
		{`sum(shoal_raft_commit_seconds_count)`, atLeast(1)},
		{`count(shoal_node_cpus > 0)`, equals(3)},
	}
	for _, w := range want {
		harness.Eventually(t, settleTimeout, poll, func() error {
			ctx, cancel := attempt()
			defer cancel()
			vals, err := promQuery(ctx, h1, w.query)
			if err != nil {
				return err
			}
			if err := w.check(vals); err != nil {
				return fmt.Errorf("%s: %w", w.query, err)
			}
			return nil
		})
	}

	// Stats through a manager from the agents: a row per task with
	// memory in use.
	rowRe := regexp.MustCompile(`(?m)^hog\.\d+\.\w+ +\S+ +[\d.]+% +[\d.]+MiB / `)
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		out, err := cl.Run(ctx, "service", "stats", "--no-stream", "hog")
		if err != nil {
			return err
		}
		if n := len(rowRe.FindAllString(out, -1)); n != 3 {
			return fmt.Errorf("%d task rows, want 3:\n%s", n, out)
		}
		return nil
	})
	{
		ctx, cancel := attempt()
		out, err := cl.Run(ctx, "task", "stats", "--no-stream", tasks[0].GetMeta().GetId())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if n := len(rowRe.FindAllString(out, -1)); n != 1 {
			t.Fatalf("task stats: %d rows, want 1:\n%s", n, out)
		}
	}
}

func equals(n float64) func([]float64) error {
	return func(v []float64) error {
		if len(v) != 1 || v[0] != n {
			return fmt.Errorf("got %v, want %v", v, n)
		}
		return nil
	}
}

func atLeast(n float64) func([]float64) error {
	return func(v []float64) error {
		if len(v) != 1 || v[0] < n {
			return fmt.Errorf("got %v, want at least %v", v, n)
		}
		return nil
	}
}
