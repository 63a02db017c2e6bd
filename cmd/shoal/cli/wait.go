package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// convergence says how far a service's tasks are. It is the one place that
// decides what "converged" means: a task counts once its container runs
// (desired RUNNING, state RUNNING) and it is built from the current spec.
func convergence(svc *shoalv1.Service, tasks map[string]*shoalv1.Task) (counted, want int, done bool) {
	live, stopping := 0, 0
	for _, t := range tasks {
		st := t.GetStatus().GetState()
		if t.GetDesiredState() >= shoalv1.TaskState_TASK_STATE_SHUTDOWN {
			if st < shoalv1.TaskState_TASK_STATE_COMPLETE {
				stopping++
			}
			continue
		}
		if st >= shoalv1.TaskState_TASK_STATE_COMPLETE {
			continue
		}
		live++
		if st == shoalv1.TaskState_TASK_STATE_RUNNING && t.GetSpecVersion() == svc.GetSpecVersion() {
			counted++
		}
	}
	if svc.GetSpec().GetMode() == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL {
		// One task per eligible node: until the orchestrator made them
		// there is nothing to count yet, which is not convergence.
		want = live
		if live == 0 {
			return counted, want, false
		}
	} else {
		want = int(svc.GetSpec().GetReplicas())
	}
	return counted, want, counted == want && live == want && stopping == 0
}

// waiter follows the watch stream from before a write until the written
// service converges.
type waiter struct {
	a      *app
	ctl    shoalv1.ControlClient
	wf     waitFlags
	events chan *shoalv1.WatchEvent
	errc   chan error
	cancel context.CancelFunc
}

func (a *app) startWait(ctx context.Context, ctl shoalv1.ControlClient, wf waitFlags) (*waiter, error) {
	w := &waiter{a: a, ctl: ctl, wf: wf, cancel: func() {}}
	if wf.detach {
		return w, nil
	}
	wctx, cancel := context.WithTimeout(ctx, wf.wait)
	stream, err := ctl.Watch(wctx, &shoalv1.WatchRequest{Kinds: []string{"task"}})
	if err != nil {
		cancel()
		return nil, err
	}
	w.cancel = cancel
	w.events = make(chan *shoalv1.WatchEvent, 1024)
	w.errc = make(chan error, 1)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				w.errc <- err
				return
			}
			w.events <- ev
		}
	}()
	return w, nil
}

func (w *waiter) stop() { w.cancel() }

// wait prints progress until svc's tasks converge.
func (w *waiter) wait(ctx context.Context, svc *shoalv1.Service) error {
	defer w.cancel()
	if w.wf.detach {
		return nil
	}
	id, name := svc.GetMeta().GetId(), svc.GetSpec().GetName()
	tasks := map[string]*shoalv1.Task{}
	lctx, cancel := w.a.call(ctx)
	resp, err := w.ctl.ListTasks(lctx, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": id}})
	cancel()
	if err != nil {
		return err
	}
	for _, t := range resp.GetTasks() {
		tasks[t.GetMeta().GetId()] = t
	}
	last := -1
	told := map[string]bool{} // failed tasks already reported
	for {
		counted, want, done := convergence(svc, tasks)
		if counted != last {
			fmt.Fprintf(w.a.out, "%s: %d/%d tasks running\n", name, counted, want)
			last = counted
		}
		for _, t := range sortedTasks(tasks) {
			st := t.GetStatus()
			if (st.GetState() == shoalv1.TaskState_TASK_STATE_FAILED || st.GetState() == shoalv1.TaskState_TASK_STATE_REJECTED) &&
				!told[t.GetMeta().GetId()] && t.GetSpecVersion() == svc.GetSpecVersion() {
				told[t.GetMeta().GetId()] = true
				fmt.Fprintf(w.a.out, "%s: task %s %s: %s\n", name, taskName(t),
					strings.ToLower(enumShort(st.GetState().String(), "TASK_STATE_")), st.GetErr())
			}
		}
		if done {
			fmt.Fprintf(w.a.out, "%s: converged (%d/%d)\n", name, counted, want)
			return nil
		}
		select {
		case ev := <-w.events:
			applyEvent(tasks, id, ev)
			// One raft entry brings many events: fold all that are queued
			// before judging progress.
			for queued := true; queued; {
				select {
				case ev := <-w.events:
					applyEvent(tasks, id, ev)
				default:
					queued = false
				}
			}
		case err := <-w.errc:
			if err == io.EOF || ctx.Err() == nil {
				return fmt.Errorf("%s did not converge within %s: %d/%d tasks running (%v); see `shoal service ps %s`",
					name, w.wf.wait, counted, want, err, name)
			}
			return err
		}
	}
}

func sortedTasks(tasks map[string]*shoalv1.Task) []*shoalv1.Task {
	out := make([]*shoalv1.Task, 0, len(tasks))
	for _, t := range tasks {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetMeta().GetId() < out[j].GetMeta().GetId() })
	return out
}

// applyEvent folds a task event into the set, ignoring events older than
// what the set already holds.
func applyEvent(tasks map[string]*shoalv1.Task, serviceID string, ev *shoalv1.WatchEvent) {
	t := ev.GetObject().GetTask()
	if t == nil || t.GetServiceId() != serviceID {
		return
	}
	tid := t.GetMeta().GetId()
	if ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE {
		delete(tasks, tid)
		return
	}
	if cur, ok := tasks[tid]; ok && cur.GetMeta().GetVersion() > t.GetMeta().GetVersion() {
		return
	}
	tasks[tid] = t
}
