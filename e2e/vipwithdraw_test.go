package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// discoveryDelayEnv is the daemon's test hook that slows every discovery
// refresh down (daemon/agentside.go), as many task namespaces do.
const discoveryDelayEnv = "SHOAL_TEST_DISCOVERY_DELAY"

// TestVIPWithdrawalSlowRefresh: tasks removed while a client on another
// host hammers their service's VIP (a new connection per request), with
// the client's host taking 2 s for every discovery refresh. Not one
// request fails: the removed tasks are signalled only once every node
// with endpoints on their network (the client's host included) has
// acknowledged that its VIPs no longer pick them, and no host deletes a
// backend's neighbour entry before its VIPs dropped it. Before, a task
// was signalled 1 s after its stop whatever the other hosts' VIPs said,
// and the client's VIP kept choosing it ("connection refused", and "no
// route to host" once its neighbour entry was deleted).
func TestVIPWithdrawalSlowRefresh(t *testing.T) {
	c := &cluster{t: t, f: harness.NewFabric(t), nodeIDs: map[*harness.Host]string{}}
	harness.Binary(t)
	h1 := c.addHost()
	delay := "2s"
	if v := os.Getenv("SHOAL_E2E_DISCOVERY_DELAY"); v != "" {
		delay = v // to look at other timings
	}
	h1.Env = []string{discoveryDelayEnv + "=" + delay}
	c.initFirst(h1, "--log-level", "debug")
	c.join(c.addHost(), c.workerToken, shoalv1.NodeRole_NODE_ROLE_WORKER, "--log-level", "debug")
	cl := h1.Local()
	id1 := c.id(h1)
	// A Networks message waits for the refresh it causes, and the agent
	// does not read its session meanwhile (README, Limitations): at the
	// e2e heartbeat of 500 ms a 2 s refresh ends the session ("manager
	// silent for 2s"). A 2 s heartbeat (8 s of silence) keeps it.
	{
		adm := newHTTPClient(t, h1, h1, c.adminDir, "", true)
		var cur shoalv1.GetClusterResponse
		adm.must(200, "GET", "/v1/cluster", "", &cur)
		set := cur.GetCluster().GetSettings()
		if set == nil {
			set = &shoalv1.ClusterSettings{}
		}
		set.HeartbeatPeriodMs = 2000
		body, err := protojson.Marshal(&shoalv1.UpdateClusterRequest{Settings: set, IgnoreVersion: true})
		if err != nil {
			t.Fatal(err)
		}
		adm.must(200, "PATCH", "/v1/cluster", string(body), nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := cl.Run(ctx, "network", "create", "app"); err != nil {
		t.Fatal(err)
	}
	if err := createServiceFlags(ctx, cl, "web", 4, []string{"--network", "app", "--constraint", "node.id!=" + id1,
		"--health-http", "8080/health", "--health-interval", "200ms", "--health-timeout", "2s", "--stop-grace-period", "20s"}); err != nil {
		t.Fatal(err)
	}
	if err := createServiceFlags(ctx, cl, "client", 1, []string{"--network", "app", "--constraint", "node.id==" + id1}); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, cl, "web", 4, settleTimeout)
	ns := taskNS(h1, harness.WaitRunning(t, cl, "client", 1, settleTimeout)[0].GetMeta().GetId())
	var vip string
	harness.Eventually(t, settleTimeout, poll, func() error {
		actx, acancel := attempt()
		defer acancel()
		_, ips, err := nsLookup(actx, ns, "web")
		if err != nil || len(ips) != 1 {
			return fmt.Errorf("web: %v %v, want one VIP", ips, err)
		}
		vip = ips[0]
		if b, err := vipBackends(ns); err != nil || len(b)-1 != 4 { // the client's own VIP has one backend
			return fmt.Errorf("VIP backends %v (%v), want 4 of web", b, err)
		}
		return nil
	})
	load := startVIPLoad(ns, vip, 8080)
	defer load.endIfRunning()
	load.waitWarm(t, "before the scale-down")

	start := time.Now()
	sctx, scancel := attempt()
	defer scancel()
	if _, err := runDetached(sctx, cl, "service", "scale", "web=1"); err != nil {
		t.Fatal(err)
	}
	// The three removed tasks end (their state leaves the network's, and
	// every host deletes their entries), then the load runs on a while.
	tasks := harness.WaitTasks(t, cl, "web", settleTimeout, func(all []*shoalv1.Task) error {
		n := 0
		for _, tk := range all {
			if s := tk.GetStatus().GetState(); s >= shoalv1.TaskState_TASK_STATE_ASSIGNED && s <= shoalv1.TaskState_TASK_STATE_RUNNING {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%d tasks not ended, want 1", n)
		}
		return nil
	})
	harness.Eventually(t, settleTimeout, poll, func() error {
		if b, err := vipBackends(ns); err != nil || len(b)-1 != 1 {
			return fmt.Errorf("VIP backends %v (%v), want 1 of web", b, err)
		}
		return nil
	})
	before, _, _ := load.counts()
	harness.Eventually(t, settleTimeout, poll, func() error {
		if ok, _, _ := load.counts(); ok < before+20 {
			return fmt.Errorf("%d requests answered after the scale-down, want 20 more", ok-before)
		}
		return nil
	})
	ok, failed, _ := load.end()
	t.Logf("scale-down 4→1 under load with a 2 s discovery refresh on the client's host: removed tasks ended within %v, %d requests answered, %d failed",
		time.Since(start).Round(time.Millisecond), ok, failed)
	if failed > 0 {
		load.mu.Lock()
		fs := load.failures[:min(10, len(load.failures))]
		load.mu.Unlock()
		t.Errorf("%d of %d requests failed: %v\ntasks:%s\nclient host's discovery and neighbour log:\n%s",
			failed, ok+failed, fs, taskTimeline(tasks), discoveryLog(t, h1, ns))
	}
}

// discoveryLog returns the lines of h's node logs about the VIP rules of
// the task namespace ns and about neighbour entries: the order of a
// withdrawal on that host.
func discoveryLog(t *testing.T, h *harness.Host, ns string) string {
	files, _ := filepath.Glob(filepath.Join(h.Fabric().LogDir(), h.Name+"-*.log"))
	var b strings.Builder
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			l := sc.Text()
			if strings.Contains(l, "neighbour entry") || strings.Contains(l, "withdrawal") ||
				strings.Contains(l, "VIP rules programmed") && strings.Contains(l, ns) {
				fmt.Fprintln(&b, l)
			}
		}
		f.Close()
	}
	return b.String()
}
