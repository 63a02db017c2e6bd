package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// logsGuard bounds `service logs` with a node down: it must come back
// promptly (the broker gives a node 3 s to answer), never hang.
const logsGuard = 10 * time.Second

// talkerLine is what the demo's `alloc 1m` prints once done.
const talkerLine = "done: 1048576 bytes allocated and touched"

// TestLogsNodeDown: `service logs` shows the lines of tasks on two nodes,
// each prefixed with its task and node; `task logs` shows one task's. With
// one node powered off, `service logs` still returns promptly with the
// other node's lines and a warning naming the missing node — right after
// the power cut (the node is unreachable but not yet known DOWN) and once
// it is DOWN — and `service logs -f` streams the reachable node's lines and
// names the missing one.
func TestLogsNodeDown(t *testing.T) {
	c := newCluster(t, 1, 2)
	h1, h2, h3 := c.hosts[0], c.workers[0], c.workers[1]
	cl := h1.Local()
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "talker", 2, append([]string{"--replicas-max-per-node", "1"}, onWorker...),
			"alloc", "1m", "--hold", "inf")
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
	}
	tasks := harness.WaitRunning(t, cl, "talker", 2, runTimeout)
	onHost := map[*harness.Host]*shoalv1.Task{}
	for _, tk := range tasks {
		onHost[c.hostOf(tk.GetNodeId())] = tk
	}
	if onHost[h2] == nil || onHost[h3] == nil {
		t.Fatalf("tasks not one on each worker: %s", describeTasks(tasks))
	}
	// lineRe matches a task's line with its prefix: SERVICE.SLOT.TASK@NODE.
	lineRe := func(h *harness.Host) *regexp.Regexp {
		tk := onHost[h]
		return regexp.MustCompile(fmt.Sprintf(`(?m)^talker\.%d\.%s\w*@%s +\| %s$`, tk.GetSlot(),
			regexp.QuoteMeta(tk.GetMeta().GetId()[:6]), h.Name, regexp.QuoteMeta(talkerLine)))
	}

	// Both nodes' lines, prefixed.
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		out, err := cl.Run(ctx, "service", "logs", "talker")
		if err != nil {
			return err
		}
		for _, h := range []*harness.Host{h2, h3} {
			if !lineRe(h).MatchString(out) {
				return fmt.Errorf("service logs: no line of the task on %s (%s):\n%s", h, lineRe(h), out)
			}
		}
		return nil
	})
	{
		ctx, cancel := attempt()
		out, err := cl.Run(ctx, "task", "logs", onHost[h2].GetMeta().GetId())
		cancel()
		if err != nil {
			t.Fatalf("task logs: %v", err)
		}
		if !lineRe(h2).MatchString(out) || lineRe(h3).MatchString(out) {
			t.Errorf("task logs of the task on %s: want its line only:\n%s", h2, out)
		}
	}
	t.Log("service logs shows both tasks' lines with task and node prefixes")

	names := regexp.MustCompile(`(?m)^warning: .*"` + h3.Name + `"`)
	// logsWithNodeDown runs `service logs` once and checks it came back in
	// time with h2's line and a warning naming h3.
	logsWithNodeDown := func(when string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*logsGuard)
		start := time.Now()
		out, stderr, err := cl.RunOutput(ctx, "service", "logs", "talker")
		took := time.Since(start)
		cancel()
		t.Logf("%s: service logs returned in %v (exit error: %v); stderr: %s", when, took.Round(time.Millisecond), err, strings.TrimSpace(stderr))
		if took > logsGuard {
			t.Errorf("%s: service logs took %v, want well under %v", when, took.Round(time.Millisecond), logsGuard)
		}
		if !lineRe(h2).MatchString(out) {
			t.Errorf("%s: service logs lacks the line of the task on %s:\n%s", when, h2, out)
		}
		if !names.MatchString(stderr) {
			t.Errorf("%s: service logs gave no warning naming %s; stderr:\n%s", when, h3.Name, stderr)
		}
	}

	cut := time.Now()
	if err := h3.PowerOff(); err != nil {
		t.Fatal(err)
	}
	logsWithNodeDown("just after the power-off")

	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		if st := findNode(nodes, c.id(h3)).GetStatus().GetState(); st != shoalv1.NodeState_NODE_STATE_DOWN {
			return fmt.Errorf("%s is %s, want DOWN", h3, st)
		}
		return nil
	})
	t.Logf("%s DOWN %v after the power-off", h3, time.Since(cut).Round(time.Millisecond))
	logsWithNodeDown("node DOWN")

	// Following: the reachable node's lines stream, the missing node is
	// named; the command ends when interrupted.
	follow := h1.Start(t, "--data-dir", h1.DataDir, "service", "logs", "-f", "talker")
	harness.Eventually(t, logsGuard, 100*time.Millisecond, func() error {
		if err := follow.CheckRunning(); err != nil {
			return err
		}
		out := follow.Output()
		if !lineRe(h2).MatchString(out) || !names.MatchString(out) {
			return fmt.Errorf("service logs -f: want %s's line and a warning naming %s so far:\n%s", h2, h3.Name, out)
		}
		return nil
	})
	if err := follow.StopWithin(5 * time.Second); err != nil {
		t.Errorf("service logs -f did not end on SIGTERM: %v", err)
	}
}
