package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestRollingUpdateLeaderFailover: on 3 managers and 2 workers, a
// 6-replica service on the workers is rolled out (parallelism 2, a 3 s
// delay between batches, start-first), and the leader is killed with
// kill -9 (every process of its host) mid-way, at one of two moments:
//   - between batches: the first batch runs, the delay is counting, old
//     tasks remain;
//   - in flight: the service has an HTTP health check (1 s interval), and
//     a new-spec task is live but not yet healthy (its slot in flight, its
//     old task still serving) while old tasks remain.
//
// The new leader picks the rollout up from the store: it ends COMPLETED
// with 6 updated, every slot has exactly one live task, RUNNING, of the
// new spec, and no slot ever had two tasks of the new spec — not live at
// once (polled all along, through a surviving manager), nor one after
// another (the task history holds one new-spec task per slot: the new
// leader re-created nothing the old one had started).
func TestRollingUpdateLeaderFailover(t *testing.T) {
	t.Run("between-batches", func(t *testing.T) { rolloutLeaderFailover(t, false) })
	t.Run("in-flight", func(t *testing.T) { rolloutLeaderFailover(t, true) })
}

// rolloutLeaderFailover is TestRollingUpdateLeaderFailover for one kill
// moment: inFlight kills while a new task is starting (health check),
// else between batches.
func rolloutLeaderFailover(t *testing.T, inFlight bool) {
	const replicas = 6
	c := newCluster(t, 3, 2)
	old := c.leader(c.hosts[0], nil)
	var via *harness.Host // a manager that survives: every call goes through it
	for _, m := range c.managers {
		if m != old {
			via = m
			break
		}
	}
	cl := c.admin(via)
	{
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		flags := onWorker
		var err error
		if inFlight {
			flags = slices.Concat(onWorker, []string{"--network", "app", "--health-http", "8080/health", "--health-interval", "1s", "--health-timeout", "2s"})
			_, err = cl.Run(ctx, "network", "create", "app")
		}
		if err == nil {
			err = createServiceFlags(ctx, cl, "web", replicas, flags)
		}
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	if inFlight {
		waitHealthy(t, cl, "web", replicas, 3*settleTimeout)
	} else {
		harness.WaitRunning(t, cl, "web", replicas, 3*settleTimeout)
	}
	var before shoalv1.Service
	{
		ctx, cancel := attempt()
		err := cl.JSON(ctx, &before, "service", "inspect", "web")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	oldVersion := before.GetSpecVersion()

	// The watcher: polls the service's tasks until told to stop and
	// records every poll that saw a slot with two live new-spec tasks.
	// Calls that fail (the election) are skipped.
	var (
		mu         sync.Mutex
		doubled    []string
		polls      int
		stopWatch  = make(chan struct{})
		watchEnded = make(chan struct{})
	)
	go func() {
		defer close(watchEnded)
		for {
			select {
			case <-stopWatch:
				return
			default:
			}
			ctx, cancel := attempt()
			tasks, err := serviceTasks(ctx, cl, "web")
			cancel()
			if err != nil {
				continue
			}
			perSlot := map[uint64]int{}
			for _, tk := range live(tasks) {
				if tk.GetSpecVersion() > oldVersion {
					perSlot[tk.GetSlot()]++
				}
			}
			mu.Lock()
			polls++
			for slot, n := range perSlot {
				if n > 1 && len(doubled) < 10 {
					doubled = append(doubled, fmt.Sprintf("%s: slot %d has %d live new-spec tasks: %s",
						time.Now().Format("15:04:05.000"), slot, n, describeTasks(live(tasks))))
				}
			}
			mu.Unlock()
		}
	}()
	defer func() {
		select {
		case <-stopWatch:
		default:
			close(stopWatch)
		}
		<-watchEnded
	}()

	{
		ctx, cancel := attempt()
		_, err := cl.Run(ctx, "service", "update", "--detach", "--env-add", "VERSION=2",
			"--update-parallelism", "2", "--update-delay", "3s", "--update-order", "start-first", "--update-monitor", "1s", "web")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Mid-way: the first batch runs (or, in flight, a new task starts),
	// old tasks are left.
	var atKill string
	harness.WaitTasks(t, cl, "web", settleTimeout, func(all []*shoalv1.Task) error {
		var fresh, starting, stale int
		defer func() { atKill = fmt.Sprintf("%d new-spec running, %d starting, %d old", fresh, starting, stale) }()
		for _, tk := range live(all) {
			st := tk.GetStatus()
			switch {
			case tk.GetSpecVersion() <= oldVersion:
				stale++
			case st.GetState() == shoalv1.TaskState_TASK_STATE_RUNNING && st.GetHealth() != shoalv1.TaskHealth_TASK_HEALTH_STARTING:
				fresh++
			default:
				starting++
			}
		}
		if stale < 2 {
			// Too late to call it mid-way: a permanent failure, the test
			// would prove nothing.
			return harness.Permanent(fmt.Errorf("only %d old tasks left: the rollout ran past mid-way unseen", stale))
		}
		if inFlight && starting == 0 {
			return fmt.Errorf("no new-spec task starting (%d running, %d old)", fresh, stale)
		}
		if !inFlight && (fresh < 2 || starting > 0) {
			return fmt.Errorf("%d new-spec tasks running, %d starting: want the first batch (2) running and the next not begun", fresh, starting)
		}
		return nil
	})
	killed := time.Now()
	if err := old.Crash(); err != nil {
		t.Fatal(err)
	}
	newLeader := c.leader(via, old)
	t.Logf("killed leader %s mid-rollout (%s); new leader %s after %v", old, atKill, newLeader, time.Since(killed).Round(time.Millisecond))

	// The new leader completes the rollout.
	var svc shoalv1.Service
	harness.Eventually(t, 3*settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		if err := cl.JSON(ctx, &svc, "service", "inspect", "web"); err != nil {
			return err
		}
		switch st := svc.GetUpdateStatus(); st.GetState() {
		case shoalv1.UpdateState_UPDATE_STATE_COMPLETED:
			return nil
		case shoalv1.UpdateState_UPDATE_STATE_UPDATING:
			return fmt.Errorf("update status %v", st)
		default:
			return harness.Permanent(fmt.Errorf("update status %v, want UPDATING then COMPLETED", st))
		}
	})
	t.Logf("rollout COMPLETED %v after the kill", time.Since(killed).Round(time.Millisecond))
	close(stopWatch)
	<-watchEnded

	if st := svc.GetUpdateStatus(); st.GetUpdated() != replicas || st.GetFailed() != 0 {
		t.Errorf("update status %v, want %d updated, 0 failed", st, replicas)
	}
	ctx, cancel := attempt()
	defer cancel()
	tasks, err := serviceTasks(ctx, cl, "web")
	if err != nil {
		t.Fatal(err)
	}
	lv := live(tasks)
	var slots []uint64
	for _, tk := range lv {
		if tk.GetSpecVersion() != svc.GetSpecVersion() || !slices.Contains(tk.GetSpec().GetContainer().GetEnv(), "VERSION=2") ||
			tk.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
			t.Errorf("live task %s is not a RUNNING task of the new spec: %s", tk.GetMeta().GetId(), describeTasks([]*shoalv1.Task{tk}))
		}
		slots = append(slots, tk.GetSlot())
	}
	slices.Sort(slots)
	if want := []uint64{1, 2, 3, 4, 5, 6}; !slices.Equal(slots, want) {
		t.Errorf("live tasks in slots %v, want one in each of %v: %s", slots, want, describeTasks(lv))
	}
	everNew := map[uint64][]*shoalv1.Task{}
	for _, tk := range tasks {
		if tk.GetSpecVersion() > oldVersion {
			everNew[tk.GetSlot()] = append(everNew[tk.GetSlot()], tk)
		}
	}
	for slot, ts := range everNew {
		if len(ts) != 1 {
			t.Errorf("slot %d had %d tasks of the new spec: %s", slot, len(ts), describeTasks(ts))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(doubled) > 0 {
		t.Errorf("a slot had two live new-spec tasks at once:\n%v", doubled)
	}
	if polls < 5 {
		t.Errorf("only %d polls of the tasks during the rollout: the watch saw nothing to speak of", polls)
	}
	t.Logf("%d polls of the tasks during the rollout, none saw a slot with two new-spec tasks", polls)
}
