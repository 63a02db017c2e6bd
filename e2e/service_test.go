package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestServiceRunning: on 3 managers + 2 workers, 10 replicas of the demo
// image are all RUNNING as real containers, spread 2 per node (the
// scheduler spreads a service's tasks): each task's pid is alive in its
// host's cgroups, its address answers HTTP from that host. Scaling to 3
// stops the other 7 containers. Removing the service leaves no task and,
// on every node, nothing of any container: no process in the node's
// cgroups, no task cgroup, no mount, no log file, rootfs, runtime state or
// network namespace.
func TestServiceRunning(t *testing.T) {
	c := newCluster(t, 3, 2)
	h1 := c.hosts[0]
	cl := h1.Local()
	cl.Timeout = 2 * runTimeout // create waits for the tasks and their monitor period

	// Without --detach: the CLI waits until the tasks run and says so.
	{
		ctx, cancel := context.WithTimeout(context.Background(), 2*runTimeout)
		out, err := cl.Run(ctx, "service", "create", "--name", "web", "--replicas", "10", "--no-resolve-image", testImage)
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
		if !strings.Contains(out, "10/10 tasks running") {
			t.Errorf("service create printed no \"10/10 tasks running\":\n%s", out)
		}
	}
	var svcID string
	{
		ctx, cancel := attempt()
		var svc shoalv1.Service
		err := cl.JSON(ctx, &svc, "service", "inspect", "web")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if svc.GetSpec().GetName() != "web" || svc.GetSpec().GetReplicas() != 10 || svc.GetMeta().GetId() == "" {
			t.Fatalf("service inspect web: %v", &svc)
		}
		svcID = svc.GetMeta().GetId()
	}

	// All ten running, two on each of the five nodes.
	nodeIDs := map[string]bool{}
	for _, h := range c.hosts {
		nodeIDs[c.id(h)] = true
	}
	running := harness.WaitTasks(t, cl, "web", runTimeout, func(all []*shoalv1.Task) error {
		lv := live(all)
		if len(lv) != 10 {
			return fmt.Errorf("%d live tasks, want 10", len(lv))
		}
		for _, tk := range lv {
			if tk.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
				return fmt.Errorf("task %s is %s, want RUNNING", tk.GetMeta().GetId(), tk.GetStatus().GetState())
			}
			if tk.GetServiceId() != svcID {
				return fmt.Errorf("task %s has service_id %q, want %q", tk.GetMeta().GetId(), tk.GetServiceId(), svcID)
			}
		}
		counts := perNode(lv)
		for id := range nodeIDs {
			if counts[id] != 2 {
				return fmt.Errorf("node %s has %d tasks, want 2 on each node: %v", id, counts[id], counts)
			}
		}
		return c.checkContainers(lv)
	})
	for _, tk := range running {
		ctx, cancel := attempt()
		_, err := getWhoami(ctx, c.hostOf(tk.GetNodeId()), harness.TaskIP(tk))
		cancel()
		if err != nil {
			t.Errorf("task %s: %v", tk.GetMeta().GetId(), err)
		}
	}
	t.Log("10 tasks RUNNING, 2 per node, each answering HTTP on its address")

	// Scale down to 3: three running tasks; the other seven containers stop.
	{
		ctx, cancel := attempt()
		_, err := runDetached(ctx, cl, "service", "scale", "web=3")
		cancel()
		if err != nil {
			t.Fatalf("service scale: %v", err)
		}
	}
	kept := harness.WaitRunning(t, cl, "web", 3, settleTimeout)
	keptIDs := map[string]bool{}
	for _, tk := range kept {
		keptIDs[tk.GetMeta().GetId()] = true
	}
	harness.Eventually(t, settleTimeout, poll, func() error {
		for _, tk := range running {
			if !keptIDs[tk.GetMeta().GetId()] && pidAlive(int(tk.GetStatus().GetPid())) {
				return fmt.Errorf("task %s was scaled away but its pid %d is alive", tk.GetMeta().GetId(), tk.GetStatus().GetPid())
			}
		}
		return nil
	})
	t.Log("scaled to 3 running tasks; the other 7 containers are gone")

	// Remove: the service and, once converged, every task of it are gone,
	// and so is everything its containers had on the nodes.
	{
		ctx, cancel := attempt()
		_, err := cl.Run(ctx, "service", "rm", "web")
		cancel()
		if err != nil {
			t.Fatalf("service rm: %v", err)
		}
	}
	removed := time.Now()
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		svcs, err := services(ctx, cl)
		if err != nil {
			return err
		}
		if serviceNames(svcs)["web"] {
			return fmt.Errorf("service web still listed")
		}
		tasks, err := allTasks(ctx, cl)
		if err != nil {
			return err
		}
		var left []*shoalv1.Task
		for _, tk := range tasks {
			if tk.GetServiceId() == svcID || tk.GetServiceName() == "web" {
				left = append(left, tk)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("%d tasks of the removed service left: %s", len(left), describeTasks(left))
		}
		return nil
	})
	ids := taskIDs(running)
	harness.Eventually(t, settleTimeout, poll, func() error {
		var all []string
		for _, h := range c.hosts {
			left, err := hostLeftovers(h)
			if err != nil {
				return err
			}
			more, err := taskLeftovers(h, ids)
			if err != nil {
				return err
			}
			for _, l := range append(left, more...) {
				all = append(all, h.Name+": "+l)
			}
		}
		if len(all) > 0 {
			return fmt.Errorf("left after service rm: %s", strings.Join(all, "; "))
		}
		return nil
	})
	t.Logf("service removed: no task left, and no process, cgroup, mount, log, rootfs or netns on any node %v after the rm",
		time.Since(removed).Round(time.Millisecond))
}

// TestServiceCreateTellsTheTruth: `service create` reports what really
// happens to real containers.
//   - A task that runs for a second and ends, not to be restarted
//     (--restart-condition none): create fails at once — long before
//     --wait-timeout — with the task's end, and never says "converged";
//     `service ps` shows the ended task's DESIRED STATE as Shutdown.
//   - --restart-max-attempts 2 of a task that fails: exactly 3 runs (the
//     first and 2 restarts), all FAILED with the program's exit code, and
//     create fails when the orchestrator gives up.
//   - A task that keeps running: converged after the monitor period, and
//     create says so.
//   - `service update --args` changes the running task's args; --args ""
//     clears them.
//   - `image rm` of the image the services use is refused, naming them;
//     the image stays.
func TestServiceCreateTellsTheTruth(t *testing.T) {
	c := newCluster(t, 1, 0)
	cl := c.hosts[0].Local()
	cl.Timeout = 2 * runTimeout
	create := func(args ...string) (stdout, stderr string, err error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*runTimeout)
		defer cancel()
		// --wait-timeout far beyond the test's deadline: ending at once is
		// what is checked.
		return cl.RunOutput(ctx, slices.Concat([]string{"service", "create", "--no-resolve-image", "--wait-timeout", "1h"}, args)...)
	}
	failure := func(what string, err error, want *regexp.Regexp) {
		t.Helper()
		var ee *harness.ExecError
		if !errors.As(err, &ee) || ee.ExitCode != 1 {
			t.Fatalf("%s: want exit 1, got %v", what, err)
		}
		if !want.MatchString(ee.Stderr) {
			t.Errorf("%s: stderr does not match %q:\n%s", what, want, ee.Stderr)
		}
		if strings.Contains(ee.Stdout, "converged") {
			t.Errorf("%s: says converged:\n%s", what, ee.Stdout)
		}
		t.Logf("%s: %s", what, strings.TrimSpace(ee.Stderr))
	}

	// Runs for a second, completes, is not restarted.
	_, _, err := create("--name", "blip", "--restart-condition", "none", testImage, "sleep", "1")
	failure("create blip (sleep 1, restart none)", err,
		regexp.MustCompile(`blip cannot converge: task blip\.1 complete \(exit code 0\); restart condition none`))
	{
		ctx, cancel := attempt()
		out, err := cl.Run(ctx, "service", "ps", "blip")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		// ID NAME IMAGE NODE DESIRED CURRENT...
		m := regexp.MustCompile(`(?m)^\S+\s+blip\.1\s+\S+\s+\S+\s+(\S+)\s+Complete`).FindStringSubmatch(out)
		if m == nil || m[1] != "Shutdown" {
			t.Errorf("service ps blip: want the complete task with DESIRED STATE Shutdown:\n%s", out)
		}
	}

	// Fails at once, every time: 1 run + 2 restarts.
	_, _, err = create("--name", "twice", "--restart-max-attempts", "2", "--restart-delay", "0s", testImage, "exit", "3")
	failure("create twice (exit 3, 2 restarts)", err,
		regexp.MustCompile(`twice cannot converge: task twice\.1 failed.*; gave up after 2 restarts`))
	{
		ctx, cancel := attempt()
		tasks, err := serviceTasks(ctx, cl, "twice")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if len(tasks) != 3 {
			t.Errorf("twice: %d tasks, want 3 (the first run and 2 restarts): %s", len(tasks), describeTasks(tasks))
		}
		for _, tk := range tasks {
			if st := tk.GetStatus(); st.GetState() != shoalv1.TaskState_TASK_STATE_FAILED || st.GetExitCode() != 3 {
				t.Errorf("twice: task %s is %s (exit %d), want FAILED with exit code 3", tk.GetMeta().GetId(), st.GetState(), st.GetExitCode())
			}
		}
	}

	// Keeps running: converged once it stayed up for the monitor period.
	out, _, err := create("--name", "steady", testImage)
	if err != nil {
		t.Fatalf("create steady: %v", err)
	}
	if !strings.Contains(out, "verifying that the tasks stay running for 5s") || !strings.Contains(out, "steady: converged (1/1): tasks stayed running for 5s") {
		t.Errorf("create steady does not report the monitor period:\n%s", out)
	}

	// --args: the task is replaced by one running the new args.
	argsOf := func(want []string) {
		t.Helper()
		ctx, cancel := attempt()
		_, err := cl.Run(ctx, "service", "update", "--detach", "--args", strings.Join(want, " "), "steady")
		cancel()
		if err != nil {
			t.Fatalf("service update --args %q: %v", want, err)
		}
		harness.WaitTasks(t, cl, "steady", runTimeout, func(all []*shoalv1.Task) error {
			lv := live(all)
			if len(lv) != 1 || lv[0].GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
				return fmt.Errorf("want one RUNNING task: %s", describeTasks(all))
			}
			if got := lv[0].GetSpec().GetContainer().GetArgs(); !slices.Equal(got, want) {
				return fmt.Errorf("running task %s has args %q, want %q", lv[0].GetMeta().GetId(), got, want)
			}
			return nil
		})
	}
	argsOf([]string{"sleep", "inf"})
	argsOf(nil)

	// The image the services use cannot be removed by mistake.
	{
		ctx, cancel := attempt()
		_, err := cl.Run(ctx, "image", "rm", testImage)
		cancel()
		var ee *harness.ExecError
		if !errors.As(err, &ee) || !strings.Contains(ee.Stderr, "is used by service blip, steady, twice") || !strings.Contains(ee.Stderr, "--force") {
			t.Errorf("image rm %s: want refused naming blip, steady and twice: %v", testImage, err)
		}
		ctx, cancel = attempt()
		out, err := cl.Run(ctx, "image", "ls")
		cancel()
		if err != nil || !strings.Contains(out, testImage) {
			t.Errorf("image ls after the refused rm: %v\n%s", err, out)
		}
	}
}

// TestNewcomerPath: the README's commands and the scripts need no sudo
// (these machines have none; everything runs as root), and the set-up
// installs the static busybox `make bench-runtime` builds its rootfs from
// (scripts/test.sh runs the set-up before the tests).
func TestNewcomerPath(t *testing.T) {
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	sudo := regexp.MustCompile(`(^|[\s;&|(])sudo\s`)
	files := []string{"README.md", "Makefile"}
	for _, glob := range []string{"scripts/*", "docs/*.md"} {
		m, err := filepath.Glob(filepath.Join(root, glob))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m {
			rel, _ := filepath.Rel(root, p)
			files = append(files, rel)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if sudo.MatchString(line) {
				t.Errorf("%s:%d uses sudo: %s", f, i+1, line)
			}
		}
	}
	out, err := exec.Command("/bin/busybox", "true").CombinedOutput()
	if err != nil {
		t.Errorf("/bin/busybox (busybox-static, for make bench-runtime) does not run: %v %s", err, out)
	}
}
