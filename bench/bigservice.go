package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// defaultMaxReplicas is the cluster setting max_replicas when unset (see
// manager/controlapi).
const defaultMaxReplicas = 100_000

// bigServiceTimeout bounds each phase of -bigservice.
const bigServiceTimeout = 15 * time.Minute

// logMarks are the log lines that mean a watch subscriber was cut or an
// agent session failed, on any node.
var logMarks = []struct{ what, text string }{
	{"watch subscriber cut (slow consumer)", "fell too far behind"},
	{"orchestrator resynchronised after a cut watch", "resynchronising with a full pass"},
	{"dispatcher session resync", "session resync needed"},
	{"dispatcher session ended", `msg="session ended"`},
	{"agent session ended", "session ended; reconnecting"},
	{"entry refused as too large", "raft entry too large"},
	{"raft elections started", "entering candidate state"},
	{"node marked down", `msg="node down"`},
}

// benchBigService creates one service of n replicas on 3 managers that run
// no tasks (--no-executor; each also runs an agent, so 3 nodes), waits
// until n tasks are ASSIGNED, and reports the time it took, the leader's
// RSS, whether any watch subscriber was cut or any session failed; then
// checks that replicas above the cluster's max_replicas are refused naming
// the setting, and times the removal of the service.
func benchBigService(ctx context.Context, e *env, n int) (*sampleSet, error) {
	res := &sampleSet{Name: "bigservice", What: fmt.Sprintf(
		"CreateService of %d replicas on 3 managers with no executor (3 nodes) → %d tasks ASSIGNED (counted from a Watch of tasks)", n, n)}
	c, err := startShoal(ctx, e, "bigservice", 3, e.o.shoalIPs, "")
	if err != nil {
		return res, err
	}
	defer c.stop()
	leader, _, err := c.leader(ctx)
	if err != nil {
		return res, err
	}
	cl, err := c.dial(ctx, leader.addr)
	if err != nil {
		return res, err
	}
	defer cl.Close()
	offsets := map[string]int64{}
	for _, nd := range c.nodes {
		if fi, err := os.Stat(nd.logPath); err == nil {
			offsets[nd.logPath] = fi.Size()
		}
	}
	pid := leader.proc.cmd.Process.Pid
	rssBefore, _ := procStatusKB(pid, "VmRSS")
	e.logf("bigservice: leader %s (pid %d), RSS %d MiB before", leader.addr, pid, rssBefore>>10)

	// Watch the tasks from the next entry on; count the live ASSIGNED ones.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch, err := cl.Control.Watch(wctx, &shoalv1.WatchRequest{Kinds: []string{"task"}})
	if err != nil {
		return res, fmt.Errorf("watching tasks: %w", err)
	}
	tc := newTaskCounter()
	watchErr := make(chan error, 1)
	go func() { watchErr <- tc.follow(watch) }()

	spec := benchServiceSpec("bench-big", "big")
	spec.Replicas = int64(n)
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	created, err := cl.Control.CreateService(cctx, &shoalv1.CreateServiceRequest{Spec: spec})
	cancel()
	if err != nil {
		return res, fmt.Errorf("creating a service of %d replicas: %w", n, err)
	}
	svc := created.GetService()
	e.logf("bigservice: service %s created; waiting for %d ASSIGNED tasks", svc.GetMeta().GetId(), n)

	var peakRSS int64
	converged := func() (bool, error) {
		if rss, err := procStatusKB(pid, "VmRSS"); err == nil {
			peakRSS = max(peakRSS, rss)
		}
		if err := c.checkAlive(); err != nil {
			return false, err
		}
		select {
		case err := <-watchErr:
			return false, fmt.Errorf("the Watch of tasks ended: %w", err)
		default:
		}
		return tc.assigned() >= n, nil
	}
	lastLog := time.Now()
	for {
		ok, err := converged()
		if err != nil {
			return res, err
		}
		if ok {
			break
		}
		if time.Since(start) > bigServiceTimeout {
			return res, fmt.Errorf("%d of %d tasks ASSIGNED after %v", tc.assigned(), n, bigServiceTimeout)
		}
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			e.logf("bigservice: %d/%d ASSIGNED after %v", tc.assigned(), n, time.Since(start).Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(50 * time.Millisecond): // poll interval of the counter and RSS
		}
	}
	took := time.Since(start)
	res.Samples = append(res.Samples, took)
	rssAt, _ := procStatusKB(pid, "VmRSS")
	hwm, _ := procStatusKB(pid, "VmHWM")
	e.logf("bigservice: %d ASSIGNED after %v; leader RSS %d MiB (peak %d MiB)", n, took.Round(time.Millisecond), rssAt>>10, hwm>>10)

	// The store's own count, in one big ListTasks (~23 MB at 100,000, far
	// beyond gRPC's default 4 MiB) asked of a follower, so that the
	// forwarder's relay of a large reply is exercised too.
	var lr *shoalv1.ListTasksResponse
	err = c.poll(ctx, 2*time.Minute, time.Second, func(pctx context.Context) error {
		ld, _, err := c.leader(pctx)
		if err != nil {
			return err
		}
		via := ld
		for _, m := range c.managers() {
			if m.addr != ld.addr && m.proc != nil && !m.down {
				via = m
				break
			}
		}
		lcl, err := c.dial(pctx, via.addr)
		if err != nil {
			return err
		}
		defer lcl.Close()
		lctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		lr, err = client.ListTasks(lctx, lcl.Control, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": svc.GetMeta().GetId()}},
			grpc.MaxCallRecvMsgSize(1<<30))
		if err != nil {
			return fmt.Errorf("via %s: %w", via.addr, err)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("listing the tasks: %w", err)
	}
	perNode := map[string]int{}
	assigned := 0
	for _, t := range lr.GetTasks() {
		if t.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_ASSIGNED && t.GetDesiredState() == shoalv1.TaskState_TASK_STATE_RUNNING {
			assigned++
			perNode[t.GetNodeId()]++
		}
	}
	var spread []string
	for _, nd := range perNode {
		spread = append(spread, strconv.Itoa(nd))
	}
	res.Notes = append(res.Notes,
		fmt.Sprintf("ListTasks: %d tasks, %d ASSIGNED (per node: %s)", len(lr.GetTasks()), assigned, strings.Join(spread, ", ")),
		fmt.Sprintf("leader RSS: %d MiB before, %d MiB at convergence, %d MiB peak sampled every 50 ms, VmHWM %d MiB",
			rssBefore>>10, rssAt>>10, peakRSS>>10, hwm>>10))
	if assigned != n {
		return res, fmt.Errorf("ListTasks shows %d ASSIGNED tasks, want %d", assigned, n)
	}

	// The cap: replicas above max_replicas are refused, naming the setting.
	limit := int64(defaultMaxReplicas)
	if gc, err := c.getCluster(ctx, leader.addr); err == nil && gc.GetCluster().GetSettings().GetMaxReplicas() > 0 {
		limit = gc.GetCluster().GetSettings().GetMaxReplicas()
	}
	over := benchServiceSpec("bench-big", "big")
	over.Replicas = limit + 1
	uctx, cancel := context.WithTimeout(ctx, time.Minute)
	cur, err := cl.Control.GetService(uctx, &shoalv1.GetServiceRequest{Ref: svc.GetMeta().GetId()})
	if err == nil {
		_, err = cl.Control.UpdateService(uctx, &shoalv1.UpdateServiceRequest{
			ServiceId: svc.GetMeta().GetId(), Version: cur.GetService().GetMeta().GetVersion(), Spec: over})
	}
	cancel()
	want := fmt.Sprintf("max-replicas = %d", limit)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), want) {
		return res, fmt.Errorf("UpdateService to %d replicas: got %v, want InvalidArgument naming %q", limit+1, err, want)
	}
	res.Notes = append(res.Notes, fmt.Sprintf("replicas %d refused: %s", limit+1, status.Convert(err).Message()))

	// Removal: every task told to stop, reported SHUTDOWN by the agents and
	// deleted.
	start = time.Now()
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, err = cl.Control.RemoveService(rctx, &shoalv1.RemoveServiceRequest{Ref: svc.GetMeta().GetId()})
	cancel()
	if err != nil {
		return res, fmt.Errorf("removing the service: %w", err)
	}
	for tc.live() > 0 {
		if err := c.checkAlive(); err != nil {
			return res, err
		}
		select {
		case err := <-watchErr:
			return res, fmt.Errorf("the Watch of tasks ended: %w", err)
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Since(start) > bigServiceTimeout {
			return res, fmt.Errorf("%d tasks left %v after the removal", tc.live(), bigServiceTimeout)
		}
	}
	res.Notes = append(res.Notes, fmt.Sprintf("RemoveService → all %d tasks deleted: %v", n, time.Since(start).Round(time.Millisecond)))
	stopWatch()

	// What the nodes' logs say happened meanwhile.
	counts := map[string]int{}
	var examples []string
	for _, nd := range c.nodes {
		scanLog(nd.logPath, offsets[nd.logPath], func(line string) {
			for _, m := range logMarks {
				if strings.Contains(line, m.text) {
					counts[m.what]++
					if len(examples) < 5 {
						examples = append(examples, nd.name+": "+line)
					}
				}
			}
		})
	}
	var summary []string
	for _, m := range logMarks {
		summary = append(summary, fmt.Sprintf("%s: %d", m.what, counts[m.what]))
	}
	res.Notes = append(res.Notes, "during the run, on every node: "+strings.Join(summary, "; "))
	for _, ex := range examples {
		res.Notes = append(res.Notes, "log: "+ex)
	}
	res.Notes = append(res.Notes, fmt.Sprintf("the benchmark's own Watch of tasks (a subscriber on the leader): %d events, never cut", tc.events()))
	return res, nil
}

// taskCounter follows a Watch of tasks.
type taskCounter struct {
	mu     sync.Mutex      // guards the fields below
	state  map[string]bool // live task id → ASSIGNED with desired RUNNING
	nAssig int
	nEv    int
}

func newTaskCounter() *taskCounter { return &taskCounter{state: map[string]bool{}} }

func (c *taskCounter) follow(w shoalv1.Control_WatchClient) error {
	for {
		ev, err := w.Recv()
		if err != nil {
			return err
		}
		t := ev.GetObject().GetTask()
		if t == nil {
			continue
		}
		id := t.GetMeta().GetId()
		c.mu.Lock()
		c.nEv++
		if c.state[id] {
			c.nAssig--
		}
		if ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE {
			delete(c.state, id)
		} else {
			a := t.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_ASSIGNED && t.GetDesiredState() == shoalv1.TaskState_TASK_STATE_RUNNING
			c.state[id] = a
			if a {
				c.nAssig++
			}
		}
		c.mu.Unlock()
	}
}

func (c *taskCounter) assigned() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nAssig
}

func (c *taskCounter) live() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.state)
}

func (c *taskCounter) events() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nEv
}

// procStatusKB reads a "Key: N kB" line of /proc/PID/status.
func procStatusKB(pid int, key string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
	}
	return 0, errors.New(key + " not in /proc/PID/status")
}

// scanLog calls fn for each line of path after offset.
func scanLog(path string, offset int64, fn func(string)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		fn(sc.Text())
	}
}
