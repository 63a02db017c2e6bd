package cli

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/errdefs"

	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/restartpolicy"
	"github.com/shoal-dev/shoal/specrules"
)

// convergence says how far a service's tasks are. It is the one place that
// decides what "converged" means: a task counts once its container runs
// (desired RUNNING, state RUNNING, and healthy if it has a health check)
// and it is built from the current spec.
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
		if runningHealthy(t) && t.GetSpecVersion() == svc.GetSpecVersion() {
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

// countedKey names the tasks convergence counts (running, current spec),
// so that the monitor period starts again when one of them is replaced
// even if the count stays the same.
func countedKey(svc *shoalv1.Service, tasks map[string]*shoalv1.Task) string {
	var ids []string
	for id, t := range tasks {
		if t.GetDesiredState() <= shoalv1.TaskState_TASK_STATE_RUNNING && runningHealthy(t) &&
			t.GetSpecVersion() == svc.GetSpecVersion() {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

// stuck finds a task whose end the orchestrator will never repair, so that
// the service cannot converge: a slot (a node, for a global service) whose
// restart policy gives up on it for good — condition none, on-failure
// after an end that is not a failure, or max_attempts restarts used up
// with no window to wait out. The rules are the orchestrator's own
// (restartpolicy.Decide); it returns nil while there is hope, and the
// slot's newest task with the reason otherwise.
func stuck(svc *shoalv1.Service, tasks map[string]*shoalv1.Task) (*shoalv1.Task, string) {
	keys, groups := slotGroups(svc, tasks)
	now := time.Now()
	for _, k := range keys {
		g := groups[k]
		if _, _, never := restartpolicy.Decide(svc, g, now); never != "" {
			return slices.MaxFunc(g, restartpolicy.CompareAge), never
		}
	}
	return nil, ""
}

// slotGroups splits svc's tasks by wanted slot (1..replicas; by node for a
// global service), in key order.
func slotGroups(svc *shoalv1.Service, tasks map[string]*shoalv1.Task) ([]string, map[string][]*shoalv1.Task) {
	global := svc.GetSpec().GetMode() == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL
	groups := map[string][]*shoalv1.Task{}
	for _, t := range tasks {
		switch {
		case global && t.GetSlot() == 0:
			groups[t.GetNodeId()] = append(groups[t.GetNodeId()], t)
		case !global && t.GetSlot() >= 1 && int64(t.GetSlot()) <= svc.GetSpec().GetReplicas():
			k := strconv.FormatUint(t.GetSlot(), 10)
			groups[k] = append(groups[k], t)
		}
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, groups
}

// rejectRepeats is how many ends without a run in a row (rejections, or
// failures to start), for one reason, every wanted slot needs before
// hopeless gives the wait up.
const rejectRepeats = 3

// hopeless finds a service that will not run as things are, although the
// orchestrator keeps replacing its tasks (a restart policy that retries
// them): every wanted slot (1..replicas; for a global service every node
// with a task of the current spec meant to run) has had its newest
// rejectRepeats ended tasks of the current spec end without running for
// one reason, the same reason for every slot — all REJECTED by their
// agents, or all FAILED to start (startFailure) —; no task of the service
// is running; and no task of the current spec ran (ran: one was seen
// running, complete, or failed after it started). A crash loop (FAILED
// after RUNNING) never counts: it may recover. A REJECTED and a failed
// start are different reasons even if their texts matched: the agent
// refused the task in one, the runtime could not start it in the other.
// Older specs' tasks, and tasks stopped by the orchestrator, do not
// count. A rollout is judged alike: the new spec's tasks, and nothing
// running, old or new. It returns the reason (the error of the first
// slot's newest task), how many of the current spec's tasks ended so in
// the wanted slots, and whether they failed to start (else they were
// rejected); "" while there is hope.
func hopeless(svc *shoalv1.Service, tasks map[string]*shoalv1.Task, ran bool) (why string, times int, failedStart bool) {
	if ran {
		return "", 0, false
	}
	for _, t := range tasks {
		if t.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_RUNNING ||
			t.GetSpecVersion() == svc.GetSpecVersion() && didRun(t) {
			return "", 0, false
		}
	}
	global := svc.GetSpec().GetMode() == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL
	keys, groups := slotGroups(svc, tasks)
	if !global && int64(len(keys)) < svc.GetSpec().GetReplicas() {
		return "", 0, false // a slot without a task yet
	}
	key, slots := "", 0
	for _, k := range keys {
		var ended []*shoalv1.Task
		for _, t := range groups[k] {
			if t.GetSpecVersion() == svc.GetSpecVersion() && t.GetDesiredState() <= shoalv1.TaskState_TASK_STATE_RUNNING &&
				t.GetStatus().GetState() >= shoalv1.TaskState_TASK_STATE_COMPLETE {
				ended = append(ended, t)
			}
		}
		if len(ended) == 0 && global && !slices.ContainsFunc(groups[k], func(t *shoalv1.Task) bool {
			return t.GetSpecVersion() == svc.GetSpecVersion() && t.GetDesiredState() <= shoalv1.TaskState_TASK_STATE_RUNNING
		}) {
			continue // a node the service no longer runs on
		}
		if len(ended) < rejectRepeats {
			return "", 0, false
		}
		slices.SortFunc(ended, restartpolicy.CompareEnded)
		for i, t := range ended {
			r, shown, fs := noRunReason(t)
			if i < rejectRepeats && (r == "" || key != "" && r != key) {
				return "", 0, false
			}
			if key == "" {
				key, why, failedStart = r, shown, fs
			}
			if r == key {
				times++
			}
		}
		slots++
	}
	if slots == 0 {
		return "", 0, false
	}
	return why, times, failedStart
}

// noRunReason says why t ended without having run, for hopeless: key
// compares reasons across tasks (the kind of end and its stable text),
// shown is t's error as told to the user, failedStart whether t failed to
// start (else its agent rejected it). key is "" for any other end.
func noRunReason(t *shoalv1.Task) (key, shown string, failedStart bool) {
	st := t.GetStatus()
	if st.GetState() == shoalv1.TaskState_TASK_STATE_REJECTED {
		shown = cmp.Or(st.GetErr(), st.GetMessage(), "rejected")
		return "rejected: " + shown, shown, false
	}
	if !startFailure(t) {
		return "", "", false
	}
	shown = strings.TrimPrefix(st.GetErr(), startFailurePrefix)
	// The runtime names the task in its error (`task "<id>": …`, and the
	// shim log's path under the task's directory), so that text differs
	// on every attempt: the task's own id is what varies; the rest (the
	// exec's error) is the cause and repeats.
	stable := shown
	if id := t.GetMeta().GetId(); id != "" {
		stable = strings.ReplaceAll(stable, id, "<task>")
	}
	return "failed to start: " + stable, shown, true
}

// startFailurePrefix begins the error of a task its agent could not start
// (agent/taskctl.go: preparing or starting the container failed, before
// RUNNING); a container that ran and ended says "exit code N", "killed
// by signal", "OOM killed", "unhealthy: …" or that its shim died.
const startFailurePrefix = "starting container: "

// startFailure: t failed to start, so it never ran. The agent reports it
// as FAILED with startFailurePrefix and no exit code; the status has no
// field that says so (a container's end carries its exit code, but the
// shim's death does not), so the error's prefix does.
func startFailure(t *shoalv1.Task) bool {
	st := t.GetStatus()
	return st.GetState() == shoalv1.TaskState_TASK_STATE_FAILED && st.GetExitCode() == 0 && !st.GetOomKilled() &&
		strings.HasPrefix(st.GetErr(), startFailurePrefix)
}

// didRun: t is or was running (RUNNING, COMPLETE, or FAILED unless it
// failed to start).
func didRun(t *shoalv1.Task) bool {
	switch t.GetStatus().GetState() {
	case shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_COMPLETE:
		return true
	case shoalv1.TaskState_TASK_STATE_FAILED:
		return !startFailure(t)
	}
	return false
}

// endText describes how a task ended: its error, or its exit code.
func endText(t *shoalv1.Task) string {
	st := t.GetStatus()
	state := strings.ToLower(enumShort(st.GetState().String(), "TASK_STATE_"))
	switch {
	case st.GetErr() != "":
		return state + ": " + st.GetErr()
	case st.GetState() == shoalv1.TaskState_TASK_STATE_COMPLETE || st.GetState() == shoalv1.TaskState_TASK_STATE_FAILED:
		return fmt.Sprintf("%s (exit code %d)", state, st.GetExitCode())
	case st.GetMessage() != "":
		return state + ": " + st.GetMessage()
	}
	return state
}

// monitorTimer starts the monitor period; tests replace it to decide when
// the period ends.
var monitorTimer = func(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}

// resumeWait bounds how long a waiter tries to open its watch again after
// the stream broke (the manager went away: a leader killed during a
// rollout, say) before it gives the wait up; it covers an election and a
// manager restart. A variable for tests.
var resumeWait = 10 * time.Second

// waiter follows the watch stream from before a write until the written
// service converges.
type waiter struct {
	a      *app
	ctl    shoalv1.ControlClient
	wf     waitFlags
	kinds  []string // the kinds watched
	events chan *shoalv1.WatchEvent
	errc   chan error
	cancel context.CancelFunc
	// floor is the raft index of the write waited for (its service's
	// version), set by setFloor from wait: a stream that broke before any
	// event resumes there once it is known, so that no event after the
	// write is missed.
	floor    atomic.Uint64
	floorSet chan struct{}
}

func (w *waiter) setFloor(index uint64) {
	w.floor.Store(index)
	close(w.floorSet)
}

func (a *app) startWait(ctx context.Context, cl *client.Client, wf waitFlags) (*waiter, error) {
	return a.startWatch(ctx, cl, wf, watchKinds)
}

// startWatch is startWait watching the given kinds.
func (a *app) startWatch(ctx context.Context, cl *client.Client, wf waitFlags, kinds []string) (*waiter, error) {
	w := &waiter{a: a, ctl: cl.Control, wf: wf, kinds: kinds, cancel: func() {}, floorSet: make(chan struct{})}
	if wf.detach {
		return w, nil
	}
	if wf.monitor > 0 && wf.monitor >= wf.wait {
		// The wait would always end in "did not converge", the tasks
		// running all along: refuse it before anything is written.
		return nil, fmt.Errorf("--monitor %s: must be shorter than --wait-timeout %s, which bounds the whole wait", wf.monitor, wf.wait)
	}
	// A wait may outlive the manager it started on (a leader killed during
	// a rollout): know every manager to watch again from. Best effort: a
	// failure here shows in the write that follows, except that no manager
	// can serve at all (refused, not ready), which is said as such here.
	lctx, lcancel := a.call(ctx)
	err := cl.LearnManagers(lctx)
	lcancel()
	if errdefs.IsNotReady(err) {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, wf.wait)
	stream, err := w.ctl.Watch(wctx, &shoalv1.WatchRequest{Kinds: w.kinds})
	if err != nil {
		cancel()
		return nil, err
	}
	w.cancel = cancel
	w.events = make(chan *shoalv1.WatchEvent, 1024)
	w.errc = make(chan error, 1)
	go w.follow(wctx, stream)
	return w, nil
}

var watchKinds = []string{"task", "service"}

// foldQueued folds ev and every event already queued behind it: one raft
// entry brings many events, and progress is judged after all of them.
func (w *waiter) foldQueued(ev *shoalv1.WatchEvent, fold func(*shoalv1.WatchEvent)) {
	fold(ev)
	for {
		select {
		case ev := <-w.events:
			fold(ev)
		default:
			return
		}
	}
}

// follow hands the stream's events to the wait loop. When the stream
// breaks with UNAVAILABLE (its manager died or restarted) it opens the
// watch again — on another manager, if the connection knows one — from the
// index of the last event seen (the write's, before any), so the wait
// goes on where it was; the events of that entry come again, which the
// loop folds by version. It gives up once resumeWait passed since the
// break without a watch accepted again (its headers) or an event, or at
// once on any other error, handing the error to the loop.
func (w *waiter) follow(ctx context.Context, stream grpc.ServerStreamingClient[shoalv1.WatchEvent]) {
	var last uint64
	var broke error // the break being resumed from; nil while events flow
	var brokeAt time.Time
	backoff := 50 * time.Millisecond
	for {
		ev, err := stream.Recv()
		if err == nil {
			last = max(last, ev.GetIndex())
			broke, backoff = nil, 50*time.Millisecond
			w.events <- ev
			continue
		}
		for stream = nil; stream == nil; {
			if ctx.Err() != nil || !errdefs.IsUnavailable(err) {
				w.errc <- err
				return
			}
			if broke == nil {
				broke, brokeAt = err, time.Now()
			} else if time.Since(brokeAt) > resumeWait {
				w.errc <- fmt.Errorf("%s; watching again failed for %s: %w", status.Convert(broke).Message(), resumeWait, err)
				return
			}
			floorSet := w.floorSet
			if last > 0 {
				floorSet = nil // resumes from the last event, not the write
			}
			for waited := false; !waited; {
				select {
				case <-ctx.Done():
					w.errc <- ctx.Err()
					return
				case <-floorSet:
					floorSet = nil // known now; still back off
				case <-time.After(backoff):
					waited = floorSet == nil
				}
			}
			backoff = min(2*backoff, 500*time.Millisecond)
			if stream, err = w.ctl.Watch(ctx, &shoalv1.WatchRequest{Kinds: w.kinds, FromIndex: max(last, w.floor.Load())}); err != nil {
				stream = nil
			}
		}
		// The manager sends the headers once it accepted the watch: the
		// resume worked, and a later break (that manager restarted, after
		// a quiet spell longer than resumeWait: a rollout's update delay)
		// is a new one with its own resumeWait, not the old one's.
		// A refusal has no headers (gRPC's Header then answers nil, nil:
		// Recv above reads why).
		if md, err := stream.Header(); err == nil && md != nil {
			broke, backoff = nil, 50*time.Millisecond
		}
	}
}

func (w *waiter) stop() { w.cancel() }

// wait prints progress until svc's tasks converge.
func (w *waiter) wait(ctx context.Context, svc *shoalv1.Service) error {
	defer w.cancel()
	if w.wf.detach {
		return nil
	}
	if specrules.IsJob(svc.GetSpec().GetMode()) {
		return w.waitJob(ctx, svc) // jobwait.go
	}
	id, name := svc.GetMeta().GetId(), svc.GetSpec().GetName()
	w.setFloor(svc.GetMeta().GetVersion())
	tasks := map[string]*shoalv1.Task{}
	lctx, cancel := w.a.call(ctx)
	resp, err := client.ListTasks(lctx, w.ctl, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": id}})
	cancel()
	if err != nil {
		return err
	}
	// ran: the spec versions of which a task was seen running (hopeless).
	ran := map[uint64]bool{}
	for _, t := range resp.GetTasks() {
		tasks[t.GetMeta().GetId()] = t
		if didRun(t) {
			ran[t.GetSpecVersion()] = true
		}
	}
	began := time.Now()
	last := -1
	told := map[string]bool{} // failed tasks already reported
	// The monitor: converged only once the same counted tasks have stayed
	// running for wf.monitor (a task that dies a second after it started
	// must not be reported as converged).
	var stableKey string
	var stableC <-chan time.Time
	stopStable := func() {}
	stopMonitor := func() {
		stopStable()
		stableC, stopStable, stableKey = nil, func() {}, ""
	}
	defer stopMonitor()
	announced := false
	// A write that started a rollout is followed by its update status.
	rw := newRolloutWatch(svc)
	fold := func(ev *shoalv1.WatchEvent) {
		applyEvent(tasks, id, ev)
		if t := ev.GetObject().GetTask(); t.GetServiceId() == id && didRun(t) {
			ran[t.GetSpecVersion()] = true
		}
		svc = serviceEvent(svc, ev)
	}
	for {
		counted, want, done := convergence(svc, tasks)
		if counted != last {
			fmt.Fprintln(w.a.out, progressLine(name, counted, want, rw.on))
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
		if rw.on {
			if end, err := rw.step(w.a.out, svc); end {
				return err
			}
		}
		if t, why := stuck(svc, tasks); t != nil && !rw.on {
			return fmt.Errorf("%s cannot converge: task %s %s; %s; see `shoal service ps %s`", name, taskName(t), endText(t), why, name)
		}
		if why, n, failedStart := hopeless(svc, tasks, ran[svc.GetSpecVersion()]); why != "" {
			where, ended := "slot", "were rejected"
			if svc.GetSpec().GetMode() == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL {
				where = "node"
			}
			if failedStart {
				ended = "failed to start"
			}
			return fmt.Errorf("%s cannot run: its tasks %s %d times, on every %s, for one reason: %s; "+
				"the service stays defined and shoal keeps retrying it: fix the cause, see `shoal service ps %s`, or remove it with `shoal service rm %s`",
				name, ended, n, where, why, name, name)
		}
		switch {
		case rw.on:
			// The orchestrator's monitor decides.
		case done && (w.wf.monitor <= 0 || want == 0):
			// Nothing to monitor when no task is wanted (replicas 0).
			fmt.Fprintf(w.a.out, "%s: converged (%d/%d)\n", name, counted, want)
			return nil
		case done:
			if key := countedKey(svc, tasks); stableC == nil || key != stableKey {
				stopMonitor()
				stableKey = key
				stableC, stopStable = monitorTimer(w.wf.monitor)
				if !announced {
					fmt.Fprintf(w.a.out, "%s: verifying that the tasks stay running for %s\n", name, w.wf.monitor)
					announced = true
				}
			}
		default:
			stopMonitor()
		}
		select {
		case <-stableC:
			fmt.Fprintf(w.a.out, "%s: converged (%d/%d): tasks stayed running for %s\n", name, counted, want, w.wf.monitor)
			return nil
		case ev := <-w.events:
			w.foldQueued(ev, fold)
		case err := <-w.errc:
			if ctx.Err() != nil {
				return err
			}
			if errdefs.IsDeadlineExceeded(err) {
				return fmt.Errorf("%s did not converge within %s: %d/%d tasks running; see `shoal service ps %s`",
					name, w.wf.wait, counted, want, name)
			}
			// The stream ended early (the manager went away, or cut the
			// watch): the write stands, only the progress is lost.
			return fmt.Errorf("%s: lost the task stream after %s, %d/%d tasks running (%s); the service was written: see `shoal service ps %s`",
				name, time.Since(began).Round(time.Millisecond), counted, want, status.Convert(err).Message(), name)
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

// progressLine says how far a service is: "web: 2/5 tasks running", or,
// while it scales down, how many are still to stop (not "2/0"). During a
// rollout only the tasks of the spec rolled out count, while the others
// still serve: the line says so ("web: 0/5 tasks running" at the start of
// an update of 5 running tasks read as an outage).
func progressLine(name string, running, want int, rollout bool) string {
	if rollout {
		return fmt.Sprintf("%s: %d/%d tasks of the new spec running", name, running, want)
	}
	if running > want {
		return fmt.Sprintf("%s: %d tasks running, %d wanted (stopping %d)", name, running, want, running-want)
	}
	return fmt.Sprintf("%s: %d/%d tasks running", name, running, want)
}
