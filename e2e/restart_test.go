package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// onWorker keeps a service's tasks on the workers.
var onWorker = []string{"--constraint", "node.role==worker"}

// shimPid reads the pid of a task's shim from its runtime state
// (DATA/runtime/<task id>/shim.json, written by the shim).
func shimPid(h *harness.Host, taskID string) (int, error) {
	b, err := os.ReadFile(filepath.Join(h.DataDir, "runtime", taskID, "shim.json"))
	if err != nil {
		return 0, err
	}
	var s struct {
		ShimPid int `json:"shim_pid"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return 0, fmt.Errorf("shim.json of %s: %w", taskID, err)
	}
	if s.ShimPid <= 0 {
		return 0, fmt.Errorf("shim.json of %s has no shim_pid: %s", taskID, b)
	}
	return s.ShimPid, nil
}

// findTask returns the task with id among tasks (nil if absent).
func findTask(tasks []*shoalv1.Task, id string) *shoalv1.Task {
	for _, tk := range tasks {
		if tk.GetMeta().GetId() == id {
			return tk
		}
	}
	return nil
}

// pids maps task ids to their container pids.
func pids(tasks []*shoalv1.Task) map[string]int32 {
	m := map[string]int32{}
	for _, tk := range tasks {
		m[tk.GetMeta().GetId()] = tk.GetStatus().GetPid()
	}
	return m
}

// TestAgentRestartKeepsContainers: kill -9 of a worker's shoal process
// leaves its containers (and their shims) running; a container that exits
// while the agent is down (asked to over HTTP, with code 42) is reported,
// once the agent is back (`shoal daemon`), FAILED with exit code 42; the
// others are RUNNING again as the same tasks with the same processes: no
// task was replaced.
func TestAgentRestartKeepsContainers(t *testing.T) {
	c := newCluster(t, 1, 1)
	h1, w := c.hosts[0], c.workers[0]
	cl := h1.Local()
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "keep", 2, onWorker)
		if err == nil {
			// Not restarted when it exits: its exit is what is checked.
			err = createServiceFlags(ctx, cl, "quitter", 1, append([]string{"--restart-condition", "none"}, onWorker...))
		}
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
	}
	keep := harness.WaitRunning(t, cl, "keep", 2, runTimeout)
	quitter := harness.WaitRunning(t, cl, "quitter", 1, runTimeout)[0]
	all := append(slices.Clone(keep), quitter)
	if err := c.checkContainers(all); err != nil {
		t.Fatal(err)
	}
	shims := map[string]int{}
	for _, tk := range all {
		pid, err := shimPid(w, tk.GetMeta().GetId())
		if err != nil {
			t.Fatal(err)
		}
		shims[tk.GetMeta().GetId()] = pid
	}

	// kill -9 the agent.
	down := time.Now()
	if err := w.Crash(); err != nil {
		t.Fatal(err)
	}
	for _, tk := range all {
		if pid := tk.GetStatus().GetPid(); !pidAlive(int(pid)) {
			t.Errorf("task %s: container pid %d died with the agent", tk.GetMeta().GetId(), pid)
		}
		if pid := shims[tk.GetMeta().GetId()]; !pidAlive(pid) {
			t.Errorf("task %s: shim pid %d died with the agent", tk.GetMeta().GetId(), pid)
		}
	}
	// The quitter exits with 42 while nobody watches.
	{
		ctx, cancel := attempt()
		_, err := httpGet(ctx, w, fmt.Sprintf("http://%s:%d/exit?code=42", harness.TaskIP(quitter), demoPort))
		cancel()
		if err != nil {
			t.Fatalf("asking the quitter to exit: %v", err)
		}
	}
	harness.Eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		if pidAlive(int(quitter.GetStatus().GetPid())) {
			return fmt.Errorf("the quitter's pid %d is still alive", quitter.GetStatus().GetPid())
		}
		return nil
	})
	for _, tk := range keep {
		if pid := tk.GetStatus().GetPid(); !pidAlive(int(pid)) {
			t.Errorf("task %s: container pid %d died while the agent was down", tk.GetMeta().GetId(), pid)
		}
	}

	// Back up: the same tasks, the same processes.
	p := w.Daemon(t)
	t.Logf("%s: kill -9 of the agent, then `shoal daemon` %v later", w, time.Since(down).Round(time.Millisecond))
	back := harness.WaitTasks(t, cl, "keep", runTimeout, func(tasks []*shoalv1.Task) error {
		if err := p.CheckRunning(); err != nil {
			return err
		}
		lv := live(tasks)
		if got, want := taskIDs(lv), taskIDs(keep); !slices.Equal(got, want) {
			return harness.Permanent(fmt.Errorf("live tasks %v after the restart, want the same %v (no replacement)", got, want))
		}
		for _, tk := range lv {
			if tk.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
				return fmt.Errorf("task %s is %s, want RUNNING", tk.GetMeta().GetId(), tk.GetStatus().GetState())
			}
		}
		return nil
	})
	if got, want := pids(back), pids(keep); !mapsEqual(got, want) {
		t.Errorf("container pids after the restart %v, want the same %v", got, want)
	}
	if err := c.checkContainers(back); err != nil {
		t.Error(err)
	}
	for _, tk := range back {
		ctx, cancel := attempt()
		_, err := getWhoami(ctx, w, harness.TaskIP(tk))
		cancel()
		if err != nil {
			t.Errorf("task %s after the restart: %v", tk.GetMeta().GetId(), err)
		}
	}
	t.Logf("the kept tasks are RUNNING with the same ids and pids %v after the kill", time.Since(down).Round(time.Millisecond))

	harness.WaitTasks(t, cl, "quitter", settleTimeout, func(tasks []*shoalv1.Task) error {
		tk := findTask(tasks, quitter.GetMeta().GetId())
		if tk == nil {
			return harness.Permanent(errors.New("the quitter's task is gone"))
		}
		st := tk.GetStatus()
		if st.GetState() != shoalv1.TaskState_TASK_STATE_FAILED || st.GetExitCode() != 42 {
			return fmt.Errorf("the quitter's task is %s with exit code %d, want FAILED with 42", st.GetState(), st.GetExitCode())
		}
		if n := len(live(tasks)); n != 0 {
			return fmt.Errorf("%d live quitter tasks, want none (restart condition none)", n)
		}
		return nil
	})
	t.Log("the task that exited while the agent was down is FAILED with its exit code 42")
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

var mentionsShim = regexp.MustCompile(`(?i)shim`)

// TestShimKilled: kill -9 of one task's shim is detected: the task is
// reported FAILED with a message about its shim, its container does not
// keep running, and a replacement task runs; the other task of the service
// is not disturbed.
func TestShimKilled(t *testing.T) {
	c := newCluster(t, 1, 1)
	h1, w := c.hosts[0], c.workers[0]
	cl := h1.Local()
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "victim", 2, append([]string{"--restart-delay", "100ms"}, onWorker...))
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
	}
	before := harness.WaitRunning(t, cl, "victim", 2, runTimeout)
	if err := c.checkContainers(before); err != nil {
		t.Fatal(err)
	}
	target, other := before[0], before[1]
	shim, err := shimPid(w, target.GetMeta().GetId())
	if err != nil {
		t.Fatal(err)
	}
	if !pidAlive(shim) {
		t.Fatalf("shim pid %d of task %s is not alive", shim, target.GetMeta().GetId())
	}
	killed := time.Now()
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 of the shim %d: %v", shim, err)
	}
	t.Logf("kill -9 of task %s's shim (pid %d)", target.GetMeta().GetId(), shim)

	harness.WaitTasks(t, cl, "victim", settleTimeout, func(tasks []*shoalv1.Task) error {
		tk := findTask(tasks, target.GetMeta().GetId())
		if tk == nil {
			return harness.Permanent(errors.New("the task whose shim was killed is gone"))
		}
		st := tk.GetStatus()
		if st.GetState() != shoalv1.TaskState_TASK_STATE_FAILED {
			return fmt.Errorf("task %s is %s, want FAILED", tk.GetMeta().GetId(), st.GetState())
		}
		if !mentionsShim.MatchString(st.GetMessage() + " " + st.GetErr()) {
			return harness.Permanent(fmt.Errorf("task %s FAILED with message %q, err %q: nothing about its shim", tk.GetMeta().GetId(), st.GetMessage(), st.GetErr()))
		}
		return nil
	})
	t.Logf("task FAILED %v after the kill", time.Since(killed).Round(time.Millisecond))

	after := harness.WaitTasks(t, cl, "victim", settleTimeout, func(tasks []*shoalv1.Task) error {
		lv := live(tasks)
		if len(lv) != 2 {
			return fmt.Errorf("%d live tasks, want 2", len(lv))
		}
		if findTask(lv, target.GetMeta().GetId()) != nil {
			return errors.New("the failed task is still live")
		}
		if findTask(lv, other.GetMeta().GetId()) == nil {
			return harness.Permanent(errors.New("the other task was replaced too"))
		}
		for _, tk := range lv {
			if tk.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
				return fmt.Errorf("task %s is %s, want RUNNING", tk.GetMeta().GetId(), tk.GetStatus().GetState())
			}
		}
		return nil
	})
	if err := c.checkContainers(after); err != nil {
		t.Error(err)
	}
	if got := findTask(after, other.GetMeta().GetId()).GetStatus().GetPid(); got != other.GetStatus().GetPid() {
		t.Errorf("the other task's pid changed from %d to %d", other.GetStatus().GetPid(), got)
	}
	t.Logf("a replacement runs %v after the kill", time.Since(killed).Round(time.Millisecond))
	harness.Eventually(t, settleTimeout, poll, func() error {
		if pid := target.GetStatus().GetPid(); pidAlive(int(pid)) {
			return fmt.Errorf("the container (pid %d) of the task whose shim was killed still runs", pid)
		}
		return nil
	})
}

// restartRuns is how many kill -9 + `shoal daemon` rounds
// TestKill9RestartMovesNothing does: SHOAL_E2E_RESTART_RUNS, default 20.
func restartRuns(t *testing.T) int {
	v := os.Getenv("SHOAL_E2E_RESTART_RUNS")
	if v == "" {
		return 20
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("SHOAL_E2E_RESTART_RUNS=%q: want a positive number", v)
	}
	return n
}

// sessionOpenRe is the agent's log line once its session is open.
var sessionOpenRe = regexp.MustCompile(`session open`)

// sameTasks checks that the service's tasks, history included, are exactly
// want (same ids), all RUNNING with the same container pids: nothing was
// replaced, orphaned or restarted. A difference in ids is permanent.
func sameTasks(all, want []*shoalv1.Task) error {
	if got, w := taskIDs(all), taskIDs(want); !slices.Equal(got, w) {
		return harness.Permanent(fmt.Errorf("tasks %v, want exactly %v (a task was replaced): %s", got, w, describeTasks(all)))
	}
	for _, tk := range all {
		if st := tk.GetStatus().GetState(); st != shoalv1.TaskState_TASK_STATE_RUNNING {
			if st > shoalv1.TaskState_TASK_STATE_RUNNING {
				return harness.Permanent(fmt.Errorf("task %s is %s: %s", tk.GetMeta().GetId(), st, describeTasks(all)))
			}
			return fmt.Errorf("task %s is %s, want RUNNING", tk.GetMeta().GetId(), st)
		}
	}
	if got, w := pids(all), pids(want); !mapsEqual(got, w) {
		return harness.Permanent(fmt.Errorf("container pids %v, want the same %v", got, w))
	}
	return nil
}

// TestKill9RestartMovesNothing: kill -9 of a worker's shoal process
// followed at once by `shoal daemon`, 20 times in a row: no task is ever
// replaced (the service's tasks, history included, stay the same ids with
// the same container pids, all RUNNING) and the node is never marked DOWN.
// Each round logs how long the node took from the kill to an open session
// (the figure the down threshold must leave room for; see
// dispatcher.DefaultDownAfterMissed).
func TestKill9RestartMovesNothing(t *testing.T) {
	c := newCluster(t, 1, 1)
	c.kill9Restarts(t, func() *harness.Host { return c.workers[0] }, c.hosts[0], restartRuns(t))
}

// TestKill9LeaderRestartMovesNothing: the same for the leader of 3
// managers, 5 times (the next round's leader may be another node): the
// other managers elect a new leader meanwhile, which must not count the
// restarting node's silence against it.
func TestKill9LeaderRestartMovesNothing(t *testing.T) {
	c := newCluster(t, 3, 0)
	var target *harness.Host
	c.kill9Restarts(t, func() *harness.Host {
		target = c.leader(c.managers[0], nil)
		return target
	}, nil, 5)
}

// kill9Restarts runs rounds of kill -9 + `shoal daemon` of the host pick
// returns (the same or another each round), with a 3-replica service
// pinned to the first target, checking through via (nil: any manager that
// is not the target) that nothing moves.
func (c *cluster) kill9Restarts(t *testing.T, pick func() *harness.Host, via *harness.Host, runs int) {
	t.Helper()
	target := pick()
	tID := target.NodeID(t)
	observer := func(target *harness.Host) *harness.Host {
		if via != nil {
			return via
		}
		for _, m := range c.managers {
			if m != target {
				return m
			}
		}
		t.Fatal("no manager to observe from")
		return nil
	}
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, c.admin(observer(target)), "stay", 3, []string{"--constraint", "node.id==" + tID})
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
	}
	want := harness.WaitRunning(t, c.admin(observer(target)), "stay", 3, runTimeout)

	var samples []time.Duration
	for i := 1; i <= runs; i++ {
		if i > 1 {
			target = pick()
		}
		obs := observer(target)
		killed := time.Now()
		if err := target.Crash(); err != nil {
			t.Fatal(err)
		}
		p := target.Daemon(t)
		harness.Eventually(t, startTimeout, 10*time.Millisecond, func() error {
			_, err := p.Match(sessionOpenRe)
			return err
		})
		took := time.Since(killed)
		samples = append(samples, took)
		t.Logf("round %d/%d: kill -9 of %s, `shoal daemon`, session open after %v", i, runs, target, took.Round(time.Millisecond))
		c.waitNodes(obs, func(nodes []*shoalv1.Node) error {
			if err := p.CheckRunning(); err != nil {
				return err
			}
			for _, n := range nodes {
				if n.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_DOWN {
					return harness.Permanent(fmt.Errorf("round %d: node %s was marked DOWN: %q", i, n.GetMeta().GetId(), n.GetStatus().GetMessage()))
				}
			}
			role := findNode(nodes, target.NodeID(t)).GetRole()
			return c.nodeReady(nodes, target, role)
		})
		harness.WaitTasks(t, c.admin(obs), "stay", settleTimeout, func(all []*shoalv1.Task) error { return sameTasks(all, want) })
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	t.Logf("RESTART runs=%d kill→session open p50=%v max=%v samples=%v", runs,
		sorted[(len(sorted)-1)/2].Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond), samples)
}

// TestPlannedRestartMovesNothing: SIGTERM of a worker's shoal process (a
// planned restart): it says goodbye, so the managers show its node
// DISCONNECTED ("restarting", Restarting in node ls) with a restart
// deadline and keep its tasks — also long after the heartbeats would have
// declared it down: another worker kill -9'd at the same moment goes DOWN
// and loses its task, this one does not. Started again (`shoal daemon`),
// it is READY with the deadline cleared and the same tasks and containers.
func TestPlannedRestartMovesNothing(t *testing.T) {
	c := newCluster(t, 1, 2)
	c.plannedRestart(t, c.workers[0], c.workers[1], c.hosts[0])
}

// TestPlannedLeaderRestartMovesNothing: the same for the leader of 3
// managers, whose own agent says goodbye to its own dispatcher: the
// manager must outlive the agent long enough to commit it, and the next
// leader must honour the deadline.
func TestPlannedLeaderRestartMovesNothing(t *testing.T) {
	c := newCluster(t, 3, 1)
	leader := c.leader(c.hosts[0], nil)
	var via *harness.Host
	for _, m := range c.managers {
		if m != leader {
			via = m
			break
		}
	}
	c.plannedRestart(t, leader, c.workers[0], via)
}

// plannedRestart runs the scenario of TestPlannedRestartMovesNothing:
// SIGTERM of target's shoal process while crashed is kill -9'd, observed
// through via's manager (not target's).
func (c *cluster) plannedRestart(t *testing.T, target, crashed, via *harness.Host) {
	t.Helper()
	cl := c.admin(via)
	wID, crashedID := c.id(target), c.id(crashed)
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "kept", 2, []string{"--constraint", "node.id==" + wID})
		if err == nil {
			err = createServiceFlags(ctx, cl, "moved", 1, []string{"--constraint", "node.id==" + crashedID})
		}
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
	}
	want := harness.WaitRunning(t, cl, "kept", 2, runTimeout)
	moved := harness.WaitRunning(t, cl, "moved", 1, runTimeout)

	var p *harness.Proc
	for _, proc := range target.Running() {
		p = proc
	}
	if p == nil {
		t.Fatalf("no shoal process running on %s", target)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := crashed.Crash(); err != nil {
		t.Fatal(err)
	}
	if code, err := p.WaitExit(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("%s after SIGTERM: exit %d, %v; tail:\n%s", target, code, err, p.Tail(20))
	}
	// The crashed one goes DOWN and its task is orphaned (the heartbeats
	// decide); by then the restarting one has been silent as long.
	c.waitNodes(via, func(nodes []*shoalv1.Node) error {
		if st := findNode(nodes, crashedID).GetStatus().GetState(); st != shoalv1.NodeState_NODE_STATE_DOWN {
			return fmt.Errorf("crashed %s is %s, want DOWN", crashed, st)
		}
		return nil
	})
	harness.WaitTasks(t, cl, "moved", settleTimeout, func(all []*shoalv1.Task) error {
		tk := findTask(all, moved[0].GetMeta().GetId())
		if st := tk.GetStatus().GetState(); st != shoalv1.TaskState_TASK_STATE_ORPHANED {
			return fmt.Errorf("the crashed node's task is %s, want ORPHANED", st)
		}
		return nil
	})
	nodes := c.waitNodes(via, func(nodes []*shoalv1.Node) error { return nil })
	n := findNode(nodes, wID)
	if st := n.GetStatus(); st.GetState() != shoalv1.NodeState_NODE_STATE_DISCONNECTED || st.GetRestartDeadline() == nil ||
		!strings.Contains(st.GetMessage(), "restarting") {
		t.Fatalf("%s after its goodbye: %s %q deadline %v; want DISCONNECTED, restarting, with a restart deadline", target, st.GetState(), st.GetMessage(), st.GetRestartDeadline())
	}
	t.Logf("%s: %s %q", target, n.GetStatus().GetState(), n.GetStatus().GetMessage())
	{
		ctx, cancel := attempt()
		out, err := cl.Run(ctx, "node", "ls")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^` + wID + `\s.*\sRestarting\s`).MatchString(out) {
			t.Errorf("node ls does not show %s (%s) as Restarting:\n%s", target, wID, out)
		}
	}
	{
		ctx, cancel := attempt()
		all, err := serviceTasks(ctx, cl, "kept")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if err := sameTasks(all, want); err != nil {
			t.Fatalf("while %s restarts: %v", target, err)
		}
	}

	p = target.Daemon(t)
	c.waitNodes(via, func(nodes []*shoalv1.Node) error {
		if err := p.CheckRunning(); err != nil {
			return err
		}
		if err := c.nodeReady(nodes, target, findNode(nodes, wID).GetRole()); err != nil {
			return err
		}
		if dl := findNode(nodes, wID).GetStatus().GetRestartDeadline(); dl != nil {
			return fmt.Errorf("%s READY with its restart deadline %v still set", target, dl.AsTime())
		}
		return nil
	})
	harness.WaitTasks(t, cl, "kept", settleTimeout, func(all []*shoalv1.Task) error { return sameTasks(all, want) })
	if err := c.checkContainers(want); err != nil {
		t.Error(err)
	}
}
