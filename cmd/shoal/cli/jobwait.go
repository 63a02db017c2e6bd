package cli

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/errdefs"

	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/restartpolicy"
)

// jobProgress says how far a one-off job's run is: completed tasks of the
// run, those wanted, and a task whose slot the restart policy gave up on
// (with the reason), which ends the wait. A global job waits for the
// nodes it still runs on (a node drained mid-run, its task stopped, is
// not waited for; the orchestrator does not count it either).
func jobProgress(svc *shoalv1.Service, iter uint64, tasks map[string]*shoalv1.Task, now time.Time) (done, want int, stuckTask *shoalv1.Task, why string) {
	global := svc.GetSpec().GetMode() == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL_JOB
	groups := map[string][]*shoalv1.Task{}
	for _, t := range tasks {
		if t.GetJobIteration() != iter {
			continue
		}
		k := t.GetNodeId()
		if !global {
			k = strconv.FormatUint(t.GetSlot(), 10)
		}
		groups[k] = append(groups[k], t)
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range groups {
			if !yield(k) {
				return
			}
		}
	}) {
		g := groups[k]
		if slices.ContainsFunc(g, func(t *shoalv1.Task) bool { return t.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_COMPLETE }) {
			done++
			continue
		}
		if global && !slices.ContainsFunc(g, func(t *shoalv1.Task) bool { return t.GetDesiredState() <= shoalv1.TaskState_TASK_STATE_RUNNING }) {
			// The orchestrator withdrew the job from this node (drained,
			// or no longer eligible) before it completed: not waited for.
			delete(groups, k)
			continue
		}
		if _, _, never := restartpolicy.Decide(svc, g, now); never != "" && stuckTask == nil {
			stuckTask, why = slices.MaxFunc(g, restartpolicy.CompareAge), never
		}
	}
	if global {
		want = len(groups)
	} else {
		want = int(max(svc.GetSpec().GetJob().GetCompletions(), 1))
	}
	return done, want, stuckTask, why
}

// waitJob follows a job after create/update: a one-off job until its run
// has all its completions (or a slot will never complete); a cron job is
// not waited for — its runs come on schedule.
func (w *waiter) waitJob(ctx context.Context, svc *shoalv1.Service) error {
	defer w.cancel()
	id, name := svc.GetMeta().GetId(), svc.GetSpec().GetName()
	if s := svc.GetSpec().GetJob().GetSchedule(); s != "" {
		fmt.Fprintf(w.a.out, "%s: runs on its schedule (%s, UTC); see `shoal service ps %s`\n", name, s, name)
		return nil
	}
	// The run this write started: the API bumped the iteration of an
	// updated job; a new job's first run is 1.
	iter := max(svc.GetJobStatus().GetIteration(), 1)
	w.setFloor(svc.GetMeta().GetVersion())
	tasks := map[string]*shoalv1.Task{}
	lctx, cancel := w.a.call(ctx)
	resp, err := client.ListTasks(lctx, w.ctl, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": id}})
	cancel()
	if err != nil {
		return err
	}
	for _, t := range resp.GetTasks() {
		tasks[t.GetMeta().GetId()] = t
	}
	last := -1
	for {
		done, want, t, why := jobProgress(svc, iter, tasks, time.Now())
		if done != last {
			fmt.Fprintf(w.a.out, "%s: %d/%d completed\n", name, done, want)
			last = done
		}
		if t != nil {
			return fmt.Errorf("%s cannot complete: task %s %s; %s; see `shoal service ps %s`", name, taskName(t), endText(t), why, name)
		}
		if want > 0 && done >= want {
			fmt.Fprintf(w.a.out, "%s: completed (%d/%d)\n", name, done, want)
			return nil
		}
		select {
		case ev := <-w.events:
			w.foldQueued(ev, func(ev *shoalv1.WatchEvent) { applyEvent(tasks, id, ev) })
		case err := <-w.errc:
			if ctx.Err() != nil {
				return err
			}
			if errdefs.IsDeadlineExceeded(err) {
				return fmt.Errorf("%s did not complete within %s: %d/%d completed; see `shoal service ps %s`", name, w.wf.wait, done, want, name)
			}
			return fmt.Errorf("%s: lost the task stream, %d/%d completed (%s); the service was written: see `shoal service ps %s`", name, done, want, status.Convert(err).Message(), name)
		}
	}
}
