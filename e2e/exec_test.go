package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
)

// execGuard bounds an exec into a task on a node that is gone: the
// manager gives the node 3 s to answer, so it must come back well within
// this, never hang.
const execGuard = 15 * time.Second

// TestExec: `shoal task exec` on the manager runs a command in a task on
// the worker (another host): its output, its exit code as the CLI's, stdin
// through -i, a terminal with -t (terminal line endings), input through
// the terminal with -it (echoed, ended by ^D); each exec is a
// line of the manager's audit.log with caller, task, argv, tty and exit
// code, and none holds the input; a worker's certificate is refused; with
// the worker powered off the exec fails promptly naming the node.
func TestExec(t *testing.T) {
	c := newCluster(t, 1, 1)
	h1, w := c.hosts[0], c.workers[0]
	cl := h1.Local()
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "box", 1, onWorker, "sleep", "inf")
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
	}
	tasks := harness.WaitRunning(t, cl, "box", 1, runTimeout)
	task := tasks[0].GetMeta().GetId()
	if c.hostOf(tasks[0].GetNodeId()) != w {
		t.Fatalf("the task is not on the worker: %s", describeTasks(tasks))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Output and exit code 0, by a unique prefix of the task id.
	out, err := cl.Run(ctx, "task", "exec", task[:8], "--", "/shoal-demo", "echo", "hello", "from", "the", "task")
	if err != nil || out != "hello from the task\n" {
		t.Fatalf("exec echo: %q, %v", out, err)
	}
	// The command's exit code is the CLI's.
	_, _, err = cl.RunOutput(ctx, "task", "exec", task, "--", "/shoal-demo", "exit", "3")
	var ee *harness.ExecError
	if !errors.As(err, &ee) || ee.ExitCode != 3 {
		t.Fatalf("exec exit 3: %v, want exit code 3", err)
	}
	if strings.Contains(ee.Stderr, "Error:") {
		t.Errorf("exit 3 printed an error of the CLI's own: %q", ee.Stderr)
	}
	// Stdin round trip.
	const input = "line one\nline two\n"
	out, _, err = cl.RunInput(ctx, input, "task", "exec", "-i", task, "--", "/shoal-demo", "cat", "/dev/stdin")
	if err != nil || out != input {
		t.Fatalf("exec -i cat: %q, %v", out, err)
	}
	// A terminal: its line discipline turns \n into \r\n.
	out, err = cl.Run(ctx, "task", "exec", "-t", "-e", "GREETING=hi", task, "--", "/shoal-demo", "env")
	if err != nil || !strings.Contains(out, "GREETING=hi\r\n") || !strings.Contains(out, "TERM=xterm\r\n") {
		t.Fatalf("exec -t env: %q, %v", out, err)
	}

	// -it: input typed on the terminal (echoed by it), then ^D for its end.
	out, _, err = cl.RunInput(ctx, "typed\n", "task", "exec", "-it", task, "--", "/shoal-demo", "cat", "/dev/stdin")
	if err != nil || out != "typed\r\ntyped\r\n" {
		t.Fatalf("exec -it cat: %q, %v", out, err)
	}

	// The audit log on the manager: one line per exec, no input.
	raw, err := os.ReadFile(filepath.Join(h1.DataDir, "audit.log"))
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	if strings.Contains(string(raw), "line one") || strings.Contains(string(raw), "typed") {
		t.Error("the audit log holds an exec's stdin")
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		recs = append(recs, m)
	}
	if len(recs) != 5 {
		t.Fatalf("%d audit records, want 5:\n%s", len(recs), raw)
	}
	r := recs[1]
	if r["task"] != task || r["caller_role"] != "admin" || r["caller"] == "" || r["exit_code"] != float64(3) ||
		r["node"] != c.id(w) || r["tty"] != false || r["time"] == nil || r["duration"] == nil {
		t.Errorf("audit record of exit 3: %v", r)
	}
	if argv, _ := r["argv"].([]any); len(argv) != 3 || argv[0] != "/shoal-demo" || argv[2] != "3" {
		t.Errorf("audit argv %v", r["argv"])
	}
	if recs[3]["tty"] != true || recs[4]["tty"] != true || recs[4]["stdin"] != true {
		t.Errorf("audit records of the -t and -it execs: %v, %v", recs[3], recs[4])
	}

	// A worker's certificate may not exec.
	workerDir := filepath.Join(w.Dir, "exec-worker-certs")
	copyNodeCreds(t, w, workerDir)
	_, _, err = w.Remote(workerDir, h1.Addr()).RunOutput(ctx, "task", "exec", task, "--", "/shoal-demo", "true")
	if !errors.As(err, &ee) || !strings.Contains(strings.ToLower(ee.Stderr), "permission denied") {
		t.Fatalf("exec with a worker certificate: %v, want permission denied", err)
	}

	// The node powered off: the exec fails fast, naming the node.
	if err := w.PowerOff(); err != nil {
		t.Fatal(err)
	}
	gctx, gcancel := context.WithTimeout(ctx, execGuard)
	defer gcancel()
	began := time.Now()
	_, _, err = cl.RunOutput(gctx, "task", "exec", task, "--", "/shoal-demo", "true")
	if !errors.As(err, &ee) || ee.ExitCode != 1 || !strings.Contains(ee.Stderr, `node "`+w.Name+`"`) {
		t.Fatalf("exec on a powered-off node: %v, want a failure naming node %q", err, w.Name)
	}
	t.Logf("exec on a powered-off node failed after %v: %s", time.Since(began).Round(time.Millisecond), strings.TrimSpace(ee.Stderr))
}
