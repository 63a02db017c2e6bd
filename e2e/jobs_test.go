package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/specrules"
)

// serviceNamed reads one service (with its job status) through `service ls`.
func serviceNamed(ctx context.Context, cl *harness.Client, name string) (*shoalv1.Service, error) {
	svcs, err := services(ctx, cl)
	if err != nil {
		return nil, err
	}
	for _, s := range svcs {
		if s.GetSpec().GetName() == name {
			return s, nil
		}
	}
	return nil, fmt.Errorf("no service %q", name)
}

// TestJobCompletions: a replicated job of 3 completions, 2 at a time,
// running the demo image's `true`: `service create` waits until the run
// has its 3 completions; the tasks end COMPLETE (exit code 0) and are not
// restarted — a later orchestrator pass (another service's creation, which
// the same loop handles after) leaves the job alone; `service ls` and
// `service ps` show the completions.
func TestJobCompletions(t *testing.T) {
	c := newCluster(t, 1, 0)
	cl := c.hosts[0].Local()
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	out, err := cl.Run(ctx, "service", "create", "--name", "once", "--mode", "replicated-job", "--completions", "3",
		"--max-concurrent", "2", "--no-resolve-image", testImage, "true")
	cancel()
	if err != nil {
		t.Fatalf("service create of a job: %v", err)
	}
	if !strings.Contains(out, "once: completed (3/3)") {
		t.Fatalf("service create did not wait for the completions:\n%s", out)
	}
	complete := func(tasks []*shoalv1.Task) error {
		n := 0
		for _, tk := range tasks {
			if tk.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_COMPLETE && tk.GetStatus().GetExitCode() == 0 {
				n++
			}
		}
		if n != 3 || len(tasks) != 3 {
			return harness.Permanent(fmt.Errorf("%d COMPLETE tasks of %d, want 3 of 3", n, len(tasks)))
		}
		return nil
	}
	harness.WaitTasks(t, cl, "once", settleTimeout, complete)

	// Another service: once its task runs, the reconciler has had passes
	// after the job's end; the job still has its 3 tasks and no more.
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "later", 1, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	harness.WaitTasks(t, cl, "later", settleTimeout, func(tasks []*shoalv1.Task) error {
		if lv := harness.LiveTasks(tasks); len(lv) != 1 || lv[0].GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
			return errors.New("the other service's task is not running yet")
		}
		return nil
	})
	harness.WaitTasks(t, cl, "once", settleTimeout, complete)

	ctx, cancel = attempt()
	defer cancel()
	ls, err := cl.Run(ctx, "service", "ls")
	if err != nil || !strings.Contains(ls, "3/3 (completed)") {
		t.Errorf("service ls: %v\n%s", err, ls)
	}
	ps, err := cl.Run(ctx, "service", "ps", "once")
	if err != nil || !strings.Contains(ps, "once: 3/3 completed (run 1") {
		t.Errorf("service ps: %v\n%s", err, ps)
	}
	t.Logf("job: 3/3 COMPLETE, not restarted\n%s", ps)
}

// TestCronJob: a cron job `@every 5s` under forbid fires on schedule: the
// iteration in raft goes up, each run has its task COMPLETE, and
// next_execution is always the schedule's next time after the last run.
func TestCronJob(t *testing.T) {
	c := newCluster(t, 1, 0)
	cl := c.hosts[0].Local()
	{
		ctx, cancel := attempt()
		_, err := cl.Run(ctx, "service", "create", "--name", "tick", "--mode", "replicated-job", "--schedule", "@every 5s",
			"--concurrency-policy", "forbid", "--no-resolve-image", testImage, "true")
		cancel()
		if err != nil {
			t.Fatalf("service create of a cron job: %v", err)
		}
	}
	every5s, err := specrules.ParseSchedule("@every 5s")
	if err != nil {
		t.Fatal(err)
	}
	var last *shoalv1.Service
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		svc, err := serviceNamed(ctx, cl, "tick")
		if err != nil {
			return err
		}
		js := svc.GetJobStatus()
		if js.GetIteration() < 2 {
			return fmt.Errorf("iteration %d, want 2 runs", js.GetIteration())
		}
		if next, want := js.GetNextExecution().AsTime(), every5s.Next(js.GetLastExecution().AsTime()); !next.Equal(want) {
			return harness.Permanent(fmt.Errorf("next execution %s, want the schedule's next after the last run, %s", next, want))
		}
		last = svc
		return nil
	})
	// Each of the first two runs completed its one task.
	harness.WaitTasks(t, cl, "tick", settleTimeout, func(tasks []*shoalv1.Task) error {
		done := map[uint64]int{}
		for _, tk := range tasks {
			if tk.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_COMPLETE {
				done[tk.GetJobIteration()]++
			}
		}
		for run := uint64(1); run <= 2; run++ {
			if done[run] != 1 {
				return fmt.Errorf("run %d has %d COMPLETE tasks, want 1", run, done[run])
			}
		}
		return nil
	})
	t.Logf("cron job: run %d at %s, next at %s", last.GetJobStatus().GetIteration(),
		last.GetJobStatus().GetLastExecution().AsTime().Format(time.RFC3339), last.GetJobStatus().GetNextExecution().AsTime().Format(time.RFC3339))
}

// TestGlobalJobNewNode: a global job runs once to COMPLETE on each node,
// and a node that joins after the run gets its own task of that run.
func TestGlobalJobNewNode(t *testing.T) {
	c := newCluster(t, 1, 1)
	cl := c.hosts[0].Local()
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	out, err := cl.Run(ctx, "service", "create", "--name", "everywhere", "--mode", "global-job", "--no-resolve-image", testImage, "true")
	cancel()
	if err != nil {
		t.Fatalf("service create of a global job: %v", err)
	}
	if !strings.Contains(out, "everywhere: completed (2/2)") {
		t.Fatalf("service create did not wait for the completions:\n%s", out)
	}
	completeOn := func(want int) func([]*shoalv1.Task) error {
		return func(tasks []*shoalv1.Task) error {
			nodes := map[string]bool{}
			for _, tk := range tasks {
				if tk.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_COMPLETE || tk.GetJobIteration() != 1 {
					return fmt.Errorf("task %s is %s of run %d", tk.GetMeta().GetId(), tk.GetStatus().GetState(), tk.GetJobIteration())
				}
				if nodes[tk.GetNodeId()] {
					return harness.Permanent(fmt.Errorf("node %s ran the job twice", tk.GetNodeId()))
				}
				nodes[tk.GetNodeId()] = true
			}
			if len(nodes) != want {
				return fmt.Errorf("COMPLETE on %d nodes, want %d", len(nodes), want)
			}
			return nil
		}
	}
	harness.WaitTasks(t, cl, "everywhere", settleTimeout, completeOn(2))
	c.join(c.addHost(), c.workerToken, shoalv1.NodeRole_NODE_ROLE_WORKER)
	harness.WaitTasks(t, cl, "everywhere", settleTimeout, completeOn(3))
	t.Log("global job: COMPLETE once on each of 2 nodes, then on the node that joined")
}
