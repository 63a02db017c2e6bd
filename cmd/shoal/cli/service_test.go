package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// control is the fake manager's service side: canned services and tasks,
// a scripted watch stream, and the writes it was asked for.
type control struct {
	cmu      sync.Mutex // guards the fields below
	services []*shoalv1.Service
	tasks    []*shoalv1.Task
	updates  []*shoalv1.UpdateServiceRequest
	// patchable: PatchService is served (patch_test.go), its requests
	// recorded in patches; else it is Unimplemented.
	patchable bool
	patches   []*shoalv1.PatchServiceRequest
	// watch serves Watch; nil: no event, the stream stays open.
	watch func(*shoalv1.WatchRequest, grpc.ServerStreamingServer[shoalv1.WatchEvent]) error
}

func (f *fakeManager) findService(ref string) *shoalv1.Service {
	for _, s := range f.services {
		if s.GetMeta().GetId() == ref || s.GetSpec().GetName() == ref {
			return s
		}
	}
	return nil
}

func (f *fakeManager) CreateService(_ context.Context, req *shoalv1.CreateServiceRequest) (*shoalv1.CreateServiceResponse, error) {
	f.cmu.Lock()
	defer f.cmu.Unlock()
	svc := &shoalv1.Service{Meta: &shoalv1.Meta{Id: "svc" + req.GetSpec().GetName(), Version: 1}, Spec: req.GetSpec(), SpecVersion: 1}
	f.services = append(f.services, svc)
	return &shoalv1.CreateServiceResponse{Service: svc}, nil
}

func (f *fakeManager) GetService(_ context.Context, req *shoalv1.GetServiceRequest) (*shoalv1.GetServiceResponse, error) {
	f.cmu.Lock()
	defer f.cmu.Unlock()
	if s := f.findService(req.GetRef()); s != nil {
		return &shoalv1.GetServiceResponse{Service: s}, nil
	}
	return nil, errdefs.NotFoundf("service %q: not found", req.GetRef())
}

func (f *fakeManager) ListServices(context.Context, *shoalv1.ListServicesRequest) (*shoalv1.ListServicesResponse, error) {
	f.cmu.Lock()
	defer f.cmu.Unlock()
	return &shoalv1.ListServicesResponse{Services: f.services}, nil
}

func (f *fakeManager) UpdateService(_ context.Context, req *shoalv1.UpdateServiceRequest) (*shoalv1.UpdateServiceResponse, error) {
	f.cmu.Lock()
	defer f.cmu.Unlock()
	f.updates = append(f.updates, req)
	s := f.findService(req.GetServiceId())
	if s == nil {
		return nil, errdefs.NotFoundf("service %q: not found", req.GetServiceId())
	}
	s = proto.Clone(s).(*shoalv1.Service)
	s.Spec = req.GetSpec()
	s.SpecVersion++
	if req.GetView() == shoalv1.ServiceView_SERVICE_VIEW_BRIEF {
		s.Spec, s.PreviousSpec = nil, nil // as the manager's brief reply
	}
	return &shoalv1.UpdateServiceResponse{Service: s}, nil
}

func (f *fakeManager) ListTasks(_ context.Context, req *shoalv1.ListTasksRequest) (*shoalv1.ListTasksResponse, error) {
	f.cmu.Lock()
	defer f.cmu.Unlock()
	var out []*shoalv1.Task
	for _, t := range f.tasks {
		if ref := req.GetFilters()["service"]; ref == "" || ref == t.GetServiceId() || ref == t.GetServiceName() {
			out = append(out, t)
		}
	}
	return &shoalv1.ListTasksResponse{Tasks: out}, nil
}

func (f *fakeManager) Watch(req *shoalv1.WatchRequest, st grpc.ServerStreamingServer[shoalv1.WatchEvent]) error {
	if f.watch == nil {
		<-st.Context().Done()
		return st.Context().Err()
	}
	return f.watch(req, st)
}

// runTo runs the CLI against the fake manager with the given writers.
func (c *cliCluster) runTo(out, errOut io.Writer, args ...string) int {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"--host", c.addr, "--cert-dir", c.certDir, "--data-dir", c.t.TempDir(), "--timeout", "10s"}, args...)
	return Main(ctx, full, out, errOut)
}

// signalWriter collects output and closes seen once it holds want.
type signalWriter struct {
	mu   sync.Mutex // guards buf
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func newSignalWriter(want string) *signalWriter {
	return &signalWriter{want: want, seen: make(chan struct{})}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func taskEvent(t *shoalv1.Task) *shoalv1.WatchEvent {
	return &shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_UPDATE,
		Object: &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Task{Task: t}}}
}

// webTask is task id of service "web" (created by the fake as "svcweb") in
// slot 1, version ver, in state st.
func webTask(id string, ver uint64, created time.Time, st shoalv1.TaskState, errText string) *shoalv1.Task {
	return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id, Version: ver, CreatedAt: timestamppb.New(created)}, ServiceId: "svcweb", ServiceName: "web",
		Slot: 1, SpecVersion: 1, DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING, NodeId: "n1",
		Status: &shoalv1.TaskStatus{State: st, Err: errText, ExitCode: 3, Timestamp: timestamppb.New(created)}}
}

// TestCreateMonitor: `service create` reports convergence only once the
// tasks stayed running for --monitor; a task that dies meanwhile and is
// replaced starts the period again; one that dies and will not be
// restarted (restart condition none) ends the command at once with the
// task's error instead of waiting out --wait-timeout.
func TestCreateMonitor(t *testing.T) {
	t0 := time.Now()
	run := shoalv1.TaskState_TASK_STATE_RUNNING
	failed := shoalv1.TaskState_TASK_STATE_FAILED
	cases := []struct {
		name  string
		flags []string
		// after sends the events that follow the first task's RUNNING,
		// once the CLI said it is verifying.
		after    []*shoalv1.Task
		wantCode int
		want     []string // in stdout + stderr, in this order
		notWant  string
	}{
		{
			name:  "dies during the monitor and is replaced",
			flags: []string{"--monitor", "200ms"},
			after: []*shoalv1.Task{
				webTask("t1", 3, t0, failed, "exit status 3"),
				webTask("t2", 4, t0.Add(time.Second), run, ""),
			},
			want: []string{"web: 1/1 tasks running", "verifying that the tasks stay running for 200ms",
				"task web.1 failed: exit status 3", "web: converged (1/1): tasks stayed running for 200ms"},
		},
		{
			name:     "dies during the monitor, restart condition none",
			flags:    []string{"--monitor", "1h", "--wait-timeout", "2h", "--restart-condition", "none"},
			after:    []*shoalv1.Task{webTask("t1", 3, t0, failed, "exit status 3")},
			wantCode: 1,
			want: []string{"web: 1/1 tasks running", "verifying", "task web.1 failed: exit status 3",
				"Error: web cannot converge: task web.1 failed: exit status 3; restart condition none"},
			notWant: "converged",
		},
		{
			name:     "restart max attempts used up",
			flags:    []string{"--monitor", "1h", "--wait-timeout", "2h", "--restart-max-attempts", "1"},
			after:    []*shoalv1.Task{webTask("t1", 3, t0, failed, "oom"), webTask("t2", 4, t0.Add(time.Second), failed, "oom again")},
			wantCode: 1,
			want:     []string{"Error: web cannot converge: task web.1 failed: oom again; gave up after 1 restarts"},
			notWant:  "converged",
		},
		{
			name:  "monitor 0: converged as soon as the tasks run",
			flags: []string{"--monitor", "0"},
			want:  []string{"web: 1/1 tasks running", "web: converged (1/1)\n"},
		},
	}
	// The monitor periods end when the test says: the first never (the
	// task dies during it), later ones at once.
	defer func(orig func(time.Duration) (<-chan time.Time, func())) { monitorTimer = orig }(monitorTimer)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			periods := 0
			monitorTimer = func(time.Duration) (<-chan time.Time, func()) {
				periods++
				c := make(chan time.Time, 1)
				if periods > 1 || len(tc.after) == 0 {
					c <- time.Now()
				}
				return c, func() {}
			}
			c := newCLICluster(t)
			out := newSignalWriter("verifying")
			c.mgr.watch = func(_ *shoalv1.WatchRequest, st grpc.ServerStreamingServer[shoalv1.WatchEvent]) error {
				if err := st.Send(taskEvent(webTask("t1", 2, t0, run, ""))); err != nil {
					return err
				}
				if len(tc.after) > 0 {
					select {
					case <-out.seen:
					case <-st.Context().Done():
						return st.Context().Err()
					}
					for _, tk := range tc.after {
						if err := st.Send(taskEvent(tk)); err != nil {
							return err
						}
					}
				}
				<-st.Context().Done()
				return st.Context().Err()
			}
			args := slices.Concat([]string{"service", "create", "--name", "web", "--no-resolve-image"}, tc.flags, []string{"demo:1"})
			code := c.runTo(out, out, args...)
			got := out.String()
			checkOutput(t, got, code, tc.wantCode, tc.notWant, tc.want...)
		})
	}
}

// A monitor period as long as the whole wait can never be seen through:
// create and update would always end "did not converge" with the tasks
// running. Refused before anything is written.
func TestMonitorLongerThanWaitRefused(t *testing.T) {
	c := newCLICluster(t)
	code, out, errOut := c.run("service", "create", "--name", "web", "--no-resolve-image", "--monitor", "3m", "--wait-timeout", "2m", "demo:1")
	if code == 0 || !strings.Contains(errOut, "--monitor 3m0s: must be shorter than --wait-timeout 2m0s") {
		t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	created := func() int {
		c.mgr.cmu.Lock()
		defer c.mgr.cmu.Unlock()
		return len(c.mgr.services)
	}
	if n := created(); n != 0 {
		t.Errorf("%d services created", n)
	}
	// --detach waits for nothing: no refusal.
	code, _, errOut = c.run("service", "create", "--name", "web", "--no-resolve-image", "--monitor", "3m", "--wait-timeout", "2m", "-d", "demo:1")
	if code != 0 || created() != 1 {
		t.Errorf("--detach: exit %d: %s", code, errOut)
	}
}

// A service that wants no task (replicas 0, or scaled to 0) converges as
// soon as its tasks are gone: there is nothing to watch for a monitor
// period. It used to wait out --wait-timeout: the monitor started only
// when the set of running tasks changed, and an empty set never did.
func TestCreateZeroReplicasConverges(t *testing.T) {
	defer func(orig func(time.Duration) (<-chan time.Time, func())) { monitorTimer = orig }(monitorTimer)
	monitorTimer = func(time.Duration) (<-chan time.Time, func()) {
		c := make(chan time.Time, 1)
		c <- time.Now() // every period ends at once
		return c, func() {}
	}
	c := newCLICluster(t)
	code, out, errOut := c.run("service", "create", "--name", "web", "--no-resolve-image", "--replicas", "0",
		"--monitor", "1s", "--wait-timeout", "5s", "demo:1")
	if code != 0 || !strings.Contains(out, "web: converged (0/0)") {
		t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

// A task stream that ends early (the manager went away) is not reported as
// "did not converge within --wait-timeout": the wait was not over, and the
// write stands. A wait that runs out says so.
func TestWaitStreamEndsEarly(t *testing.T) {
	defer func(d time.Duration) { resumeWait = d }(resumeWait)
	resumeWait = 300 * time.Millisecond // the stream cannot be opened again
	c := newCLICluster(t)
	// The stream ends at once; the CLI reads that only after its create
	// was answered (the error waits in the waiter's channel).
	c.mgr.watch = func(*shoalv1.WatchRequest, grpc.ServerStreamingServer[shoalv1.WatchEvent]) error {
		return errdefs.Unavailablef("manager shutting down")
	}
	code, out, errOut := c.run("service", "create", "--name", "web", "--no-resolve-image", "--wait-timeout", "1h", "demo:1")
	if code == 0 || strings.Contains(errOut, "within 1h") || !strings.Contains(errOut, "lost the task stream") ||
		!strings.Contains(errOut, "manager shutting down") {
		t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}

	c.mgr.watch = nil // no event, the stream stays open until the wait ends
	code, out, errOut = c.run("service", "create", "--name", "api", "--no-resolve-image", "--monitor", "0", "--wait-timeout", "100ms", "demo:1")
	if code == 0 || !strings.Contains(errOut, "api did not converge within 100ms: 0/1 tasks running") {
		t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

// TestWaitResumesAfterStreamBreaks: a manager killed during a wait (the
// leader, in a rollout) breaks the task stream with UNAVAILABLE; the wait
// opens the watch again from the last event's index (the write's before
// any event) and goes on to convergence instead of giving up.
func TestWaitResumesAfterStreamBreaks(t *testing.T) {
	t0 := time.Now()
	c := newCLICluster(t)
	opens := &watchOpens{}
	c.mgr.watch = func(req *shoalv1.WatchRequest, st grpc.ServerStreamingServer[shoalv1.WatchEvent]) error {
		n := opens.add(req)
		switch n {
		case 1: // opened before the write; breaks before any event
			return errdefs.Unavailablef("error reading from server: EOF")
		case 2: // one event, then the manager dies
			if err := sendTaskEvent(st, webTask("t1", 5, t0, shoalv1.TaskState_TASK_STATE_STARTING, ""), 5); err != nil {
				return err
			}
			return errdefs.Unavailablef("error reading from server: EOF")
		}
		if err := sendTaskEvent(st, webTask("t1", 6, t0, shoalv1.TaskState_TASK_STATE_RUNNING, ""), 6); err != nil {
			return err
		}
		<-st.Context().Done()
		return st.Context().Err()
	}
	createWebConverges(t, c)
	// 0: from the next entry (before the write); 1: the write's index
	// (the fake's service version); 5: the last event's.
	if froms := opens.list(); !slices.Equal(froms, []uint64{0, 1, 5}) {
		t.Fatalf("watches opened from %v, want [0 1 5]", froms)
	}
}

// TestWaitResumesTwiceInAQuietRollout: the wait's stream breaks (the
// leader killed), is opened again on another manager, which then sends
// nothing for longer than resumeWait (a rollout's update delay), and
// breaks in turn (that manager restarted: a rolling restart). The second
// break is a new one, resumed as the first: the reopened watch had been
// accepted. Before, the time since the first break counted, and the wait
// gave up at once saying that watching again had failed for resumeWait.
func TestWaitResumesTwiceInAQuietRollout(t *testing.T) {
	defer func(d time.Duration) { resumeWait = d }(resumeWait)
	resumeWait = 200 * time.Millisecond
	t0 := time.Now()
	c := newCLICluster(t)
	opens := &watchOpens{}
	c.mgr.watch = func(req *shoalv1.WatchRequest, st grpc.ServerStreamingServer[shoalv1.WatchEvent]) error {
		n := opens.add(req)
		if err := st.SendHeader(metadata.MD{}); err != nil { // accepted
			return err
		}
		switch n {
		case 1: // one event, then the leader dies
			if err := sendTaskEvent(st, webTask("t1", 5, t0, shoalv1.TaskState_TASK_STATE_STARTING, ""), 5); err != nil {
				return err
			}
			return errdefs.Unavailablef("error reading from server: EOF")
		case 2: // quiet for longer than resumeWait, then this manager restarts
			select {
			case <-time.After(3 * resumeWait):
			case <-st.Context().Done():
				return st.Context().Err()
			}
			return errdefs.Unavailablef("error reading from server: EOF")
		}
		if err := sendTaskEvent(st, webTask("t1", 6, t0, shoalv1.TaskState_TASK_STATE_RUNNING, ""), 6); err != nil {
			return err
		}
		<-st.Context().Done()
		return st.Context().Err()
	}
	createWebConverges(t, c)
	if froms := opens.list(); !slices.Equal(froms, []uint64{0, 5, 5}) {
		t.Fatalf("watches opened from %v, want [0 5 5]", froms)
	}
}

func TestStuck(t *testing.T) {
	t0 := time.Now()
	mk := func(id string, slot uint64, ago time.Duration, st, desired shoalv1.TaskState, ver uint64) *shoalv1.Task {
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id, CreatedAt: timestamppb.New(t0.Add(-ago))}, Slot: slot, NodeId: "n" + id,
			SpecVersion: ver, DesiredState: desired, Status: &shoalv1.TaskStatus{State: st, Timestamp: timestamppb.New(t0.Add(-ago))}}
	}
	const (
		run      = shoalv1.TaskState_TASK_STATE_RUNNING
		failed   = shoalv1.TaskState_TASK_STATE_FAILED
		complete = shoalv1.TaskState_TASK_STATE_COMPLETE
		orphaned = shoalv1.TaskState_TASK_STATE_ORPHANED
		shutdown = shoalv1.TaskState_TASK_STATE_SHUTDOWN
	)
	svc := func(mode shoalv1.ServiceMode, replicas int64, pol *shoalv1.RestartPolicy) *shoalv1.Service {
		return &shoalv1.Service{SpecVersion: 2, Spec: &shoalv1.ServiceSpec{Mode: mode, Replicas: replicas, Task: &shoalv1.TaskSpec{Restart: pol}}}
	}
	repl, global := shoalv1.ServiceMode_SERVICE_MODE_REPLICATED, shoalv1.ServiceMode_SERVICE_MODE_GLOBAL
	none := &shoalv1.RestartPolicy{Condition: shoalv1.RestartCondition_RESTART_CONDITION_NONE}
	onFailure := &shoalv1.RestartPolicy{Condition: shoalv1.RestartCondition_RESTART_CONDITION_ON_FAILURE}
	max2 := &shoalv1.RestartPolicy{MaxAttempts: 2}
	max2window := &shoalv1.RestartPolicy{MaxAttempts: 2, WindowMs: 60000}
	tests := []struct {
		name  string
		svc   *shoalv1.Service
		tasks []*shoalv1.Task
		stuck string // id of the stuck task, "" for none
	}{
		{"running", svc(repl, 1, none), []*shoalv1.Task{mk("a", 1, 0, run, run, 2)}, ""},
		{"none: failed", svc(repl, 1, none), []*shoalv1.Task{mk("a", 1, 0, failed, run, 2)}, "a"},
		{"none: completed", svc(repl, 1, none), []*shoalv1.Task{mk("a", 1, 0, complete, run, 2)}, "a"},
		// The orchestrator replaces no task with condition none, not even
		// one whose node was lost.
		{"none: orphaned (node lost) is not replaced either", svc(repl, 1, none), []*shoalv1.Task{mk("a", 1, 0, orphaned, run, 2)}, "a"},
		{"any: orphaned is replaced", svc(repl, 1, nil), []*shoalv1.Task{mk("a", 1, 0, orphaned, run, 2)}, ""},
		{"none: failed but replaced since (update)", svc(repl, 1, none),
			[]*shoalv1.Task{mk("a", 1, time.Minute, failed, run, 2), mk("b", 1, 0, run, run, 2)}, ""},
		{"none: stopped by the orchestrator", svc(repl, 1, none), []*shoalv1.Task{mk("a", 1, 0, shutdown, shutdown, 2)}, ""},
		{"none: failed task of an older spec", svc(repl, 1, none), []*shoalv1.Task{mk("a", 1, 0, failed, run, 1)}, ""},
		{"none: slot beyond the replicas", svc(repl, 1, none), []*shoalv1.Task{mk("a", 1, 0, run, run, 2), mk("b", 2, 0, failed, run, 2)}, ""},
		{"any: failed is restarted", svc(repl, 1, nil), []*shoalv1.Task{mk("a", 1, 0, failed, run, 2)}, ""},
		{"on-failure: failed is restarted", svc(repl, 1, onFailure), []*shoalv1.Task{mk("a", 1, 0, failed, run, 2)}, ""},
		{"on-failure: completed", svc(repl, 1, onFailure), []*shoalv1.Task{mk("a", 1, 0, complete, run, 2)}, "a"},
		{"on-failure: shut down on its own", svc(repl, 1, onFailure), []*shoalv1.Task{mk("a", 1, 0, shutdown, run, 2)}, "a"},
		{"on-failure: rejected is restarted", svc(repl, 1, onFailure), []*shoalv1.Task{mk("a", 1, 0, shoalv1.TaskState_TASK_STATE_REJECTED, run, 2)}, ""},
		{"max 2: two ends, one restart left", svc(repl, 1, max2),
			[]*shoalv1.Task{mk("a", 1, 2*time.Minute, failed, run, 2), mk("b", 1, time.Minute, failed, run, 2)}, ""},
		{"max 2: three ends", svc(repl, 1, max2),
			[]*shoalv1.Task{mk("a", 1, 3*time.Minute, failed, run, 2), mk("b", 1, 2*time.Minute, failed, run, 2), mk("c", 1, time.Minute, failed, run, 2)}, "c"},
		{"max 2 in a window: retried later", svc(repl, 1, max2window),
			[]*shoalv1.Task{mk("a", 1, 3*time.Second, failed, run, 2), mk("b", 1, 2*time.Second, failed, run, 2), mk("c", 1, time.Second, failed, run, 2)}, ""},
		{"global: failed on one node", svc(global, 0, none), []*shoalv1.Task{mk("a", 0, 0, run, run, 2), mk("b", 0, 0, failed, run, 2)}, "b"},
	}
	for _, tt := range tests {
		m := map[string]*shoalv1.Task{}
		for _, x := range tt.tasks {
			m[x.GetMeta().GetId()] = x
		}
		got, why := stuck(tt.svc, m)
		if got.GetMeta().GetId() != tt.stuck {
			t.Errorf("%s: stuck = %q (%s), want %q", tt.name, got.GetMeta().GetId(), why, tt.stuck)
		}
		if got != nil && why == "" {
			t.Errorf("%s: no reason", tt.name)
		}
	}
}

// TestCreateStopsWhenEveryTaskIsRejected: `service create` of a service
// whose every replacement is rejected for one reason (an overlay network on
// `shoal dev`), or fails to start for one reason (a command the runtime
// cannot exec), ends once each slot saw three of them, naming the reason
// once, instead of waiting out --wait-timeout; two per slot, another
// reason on one slot, or a crash after RUNNING keep it waiting.
func TestCreateStopsWhenEveryTaskIsRejected(t *testing.T) {
	t0 := time.Now()
	const (
		noOverlay = "this node runs no overlay networks (its advertise address must be a non-loopback IPv4 address)"
		noExec    = `start container: unable to start container process: exec: "./app": stat ./app: no such file or directory`
		rejected  = shoalv1.TaskState_TASK_STATE_REJECTED
		failed    = shoalv1.TaskState_TASK_STATE_FAILED
		running   = shoalv1.TaskState_TASK_STATE_RUNNING
	)
	// ended is k ends of each slot (1..len(reasons)) in state st: a
	// rejection with the reason, or a failure to start as the agent
	// reports it (its error names the task; no exit code).
	ended := func(k int, st shoalv1.TaskState, reasons ...string) []*shoalv1.Task {
		var out []*shoalv1.Task
		for i := range k {
			for slot, why := range reasons {
				id := fmt.Sprintf("t%d.%d", slot+1, i)
				tk := webTask(id, uint64(2+len(out)), t0.Add(time.Duration(len(out))*time.Second), st, why)
				if st == failed {
					tk.Status.Err = fmt.Sprintf("starting container: task %q: %s", id, why)
					tk.Status.ExitCode = 0
				}
				tk.Slot = uint64(slot + 1)
				out = append(out, tk)
			}
		}
		return out
	}
	// crashLoop: each slot's tasks run, one at a time, then exit 3.
	// crashUnseen: the same, but each RUNNING was overwritten before it
	// was written (an agent's statuses coalesce): the exit code tells.
	var crashLoop, crashUnseen []*shoalv1.Task
	for _, tk := range ended(3, running, "", "", "") {
		crashed := proto.Clone(tk).(*shoalv1.Task)
		crashed.Meta.Version += 100
		crashed.Status.State, crashed.Status.Err = failed, "exit code 3"
		crashLoop = append(crashLoop, tk, crashed)
		crashUnseen = append(crashUnseen, crashed)
	}
	cases := []struct {
		name   string
		events []*shoalv1.Task
		want   string // in stderr
		reason string // named at most once in stderr
	}{
		{"3 times on every slot", ended(3, rejected, noOverlay, noOverlay, noOverlay),
			"Error: web cannot run: its tasks were rejected 9 times, on every slot, for one reason: " + noOverlay +
				"; the service stays defined and shoal keeps retrying it: fix the cause, see `shoal service ps web`, or remove it with `shoal service rm web`", noOverlay},
		{"2 times on every slot", ended(2, rejected, noOverlay, noOverlay, noOverlay), "web did not converge within 500ms", noOverlay},
		{"another reason on one slot", ended(3, rejected, noOverlay, noOverlay, "no such image"), "web did not converge within 500ms", noOverlay},
		// A task of the spec ran (its node was lost since): its end does
		// not show it, the wait remembers.
		{"a task ran before", slices.Concat([]*shoalv1.Task{webTask("t0", 100, t0.Add(-time.Minute), shoalv1.TaskState_TASK_STATE_RUNNING, ""),
			webTask("t0", 101, t0.Add(-time.Minute), shoalv1.TaskState_TASK_STATE_ORPHANED, "node down")}, ended(3, rejected, noOverlay, noOverlay, noOverlay)),
			"web did not converge within 500ms", noOverlay},
		{"failed to start 3 times on every slot", ended(3, failed, noExec, noExec, noExec),
			"Error: web cannot run: its tasks failed to start 9 times, on every slot, for one reason: task \"t1.2\": " + noExec +
				"; the service stays defined and shoal keeps retrying it: fix the cause, see `shoal service ps web`, or remove it with `shoal service rm web`", noExec},
		{"failed to start 2 times on every slot", ended(2, failed, noExec, noExec, noExec), "web did not converge within 500ms", noExec},
		{"failed to start, another cause on one slot", ended(3, failed, noExec, noExec, "exec format error"), "web did not converge within 500ms", noExec},
		{"a task of the spec ran before the failures to start", slices.Concat(
			[]*shoalv1.Task{webTask("t0", 100, t0.Add(-time.Minute), shoalv1.TaskState_TASK_STATE_RUNNING, "")}, ended(3, failed, noExec, noExec, noExec)),
			"web did not converge within 500ms", noExec},
		{"crash loop: failed after running", crashLoop, "web did not converge within 500ms", "exit code 3"},
		{"crash loop: failed after running, RUNNING not seen", crashUnseen, "web did not converge within 500ms", "exit code 3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCLICluster(t)
			c.mgr.watch = func(_ *shoalv1.WatchRequest, st grpc.ServerStreamingServer[shoalv1.WatchEvent]) error {
				for _, tk := range tc.events {
					if err := st.Send(taskEvent(tk)); err != nil {
						return err
					}
				}
				<-st.Context().Done()
				return st.Context().Err()
			}
			timeout := "500ms"
			if !strings.Contains(tc.want, "did not converge") {
				timeout = "20s" // ends long before, unless it waits it out
			}
			code, out, errOut := c.run("service", "create", "--name", "web", "--replicas", "3", "--no-resolve-image", "--monitor", "0",
				"--wait-timeout", timeout, "demo:1")
			if code != 1 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, want 1 with %q\nstdout: %s\nstderr: %s", code, tc.want, out, errOut)
			}
			if n := strings.Count(errOut, tc.reason); n > 1 {
				t.Errorf("the reason is named %d times:\n%s", n, errOut)
			}
			wantEnds := map[string]int{}
			for _, tk := range tc.events {
				switch tk.GetStatus().GetState() {
				case rejected:
					wantEnds["rejected: "]++
				case failed:
					wantEnds["failed: "]++
				}
			}
			for word, want := range wantEnds {
				if got := strings.Count(out, word); got != want {
					t.Errorf("%d %q reported, want %d:\n%s", got, word, want, out)
				}
			}
		})
	}
}

// TestHopeless: the wait gives up only when every wanted slot's newest
// three ended tasks of the current spec were rejected for one reason and
// nothing runs or ran.
func TestHopeless(t *testing.T) {
	t0 := time.Now()
	const (
		run       = shoalv1.TaskState_TASK_STATE_RUNNING
		pending   = shoalv1.TaskState_TASK_STATE_PENDING
		failed    = shoalv1.TaskState_TASK_STATE_FAILED
		rejected  = shoalv1.TaskState_TASK_STATE_REJECTED
		shutdown  = shoalv1.TaskState_TASK_STATE_SHUTDOWN
		noOverlay = "this node runs no overlay networks"
		noExec    = `start container: unable to start container process: exec: "./app": stat ./app: no such file or directory`
	)
	n := 0
	mk := func(slot uint64, node string, st, desired shoalv1.TaskState, ver uint64, errText string) *shoalv1.Task {
		n++
		at := t0.Add(time.Duration(n) * time.Second) // each newer than the last
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: fmt.Sprintf("t%02d", n), CreatedAt: timestamppb.New(at)}, Slot: slot, NodeId: node,
			SpecVersion: ver, DesiredState: desired, Status: &shoalv1.TaskStatus{State: st, Err: errText, Timestamp: timestamppb.New(at)}}
	}
	// rej is k rejections of slot (node, for global) with errText, spec 2.
	rej := func(k int, slot uint64, node, errText string) []*shoalv1.Task {
		var out []*shoalv1.Task
		for range k {
			out = append(out, mk(slot, node, rejected, run, 2, errText))
		}
		return out
	}
	// fst is k failures to start of slot (node, for global) for cause, spec
	// 2, as the agent reports them: the runtime's error names the task.
	fst := func(k int, slot uint64, node, cause string) []*shoalv1.Task {
		var out []*shoalv1.Task
		for range k {
			tk := mk(slot, node, failed, run, 2, "")
			tk.Status.Err = fmt.Sprintf("starting container: task %q: %s (see /var/lib/shoal/tasks/%s/shim.log)", tk.Meta.Id, cause, tk.Meta.Id)
			out = append(out, tk)
		}
		return out
	}
	// crashed: a task that ran and failed (its exit code says so).
	crashed := func(slot uint64) *shoalv1.Task {
		tk := mk(slot, "n1", failed, run, 2, "exit code 1")
		tk.Status.ExitCode = 1
		return tk
	}
	repl := &shoalv1.Service{SpecVersion: 2, Spec: &shoalv1.ServiceSpec{Replicas: 3}}
	global := &shoalv1.Service{SpecVersion: 2, Spec: &shoalv1.ServiceSpec{Mode: shoalv1.ServiceMode_SERVICE_MODE_GLOBAL}}
	tests := []struct {
		name  string
		svc   *shoalv1.Service
		tasks []*shoalv1.Task
		ran   bool
		times int  // 0: keep waiting
		start bool // they failed to start (else: were rejected)
	}{
		{"every slot rejected 3 times, same reason", repl, slices.Concat(rej(3, 1, "n1", noOverlay), rej(3, 2, "n1", noOverlay), rej(3, 3, "n1", noOverlay)), false, 9, false},
		{"and a replacement pending", repl, slices.Concat(rej(3, 1, "n1", noOverlay), rej(3, 2, "n1", noOverlay), rej(3, 3, "n1", noOverlay),
			[]*shoalv1.Task{mk(1, "", pending, run, 2, "")}), false, 9, false},
		{"more than 3 on a slot: all counted", repl, slices.Concat(rej(4, 1, "n1", noOverlay), rej(3, 2, "n1", noOverlay), rej(3, 3, "n1", noOverlay)), false, 10, false},
		{"2 times each", repl, slices.Concat(rej(2, 1, "n1", noOverlay), rej(2, 2, "n1", noOverlay), rej(2, 3, "n1", noOverlay)), false, 0, false},
		{"one slot 2 times", repl, slices.Concat(rej(3, 1, "n1", noOverlay), rej(2, 2, "n1", noOverlay), rej(3, 3, "n1", noOverlay)), false, 0, false},
		{"one slot without a task yet", repl, slices.Concat(rej(3, 1, "n1", noOverlay), rej(3, 2, "n1", noOverlay)), false, 0, false},
		{"one slot running", repl, slices.Concat(rej(3, 1, "n1", noOverlay), rej(3, 2, "n1", noOverlay), rej(1, 3, "n1", noOverlay),
			[]*shoalv1.Task{mk(3, "n2", run, run, 2, "")}), false, 0, false},
		{"a slot on another node, another reason", repl, slices.Concat(rej(3, 1, "n1", noOverlay), rej(3, 2, "n1", noOverlay), rej(3, 3, "n2", "no such image")), false, 0, false},
		{"a slot's newest rejection differs", repl, slices.Concat(rej(3, 1, "n1", noOverlay), rej(3, 2, "n1", noOverlay), rej(3, 3, "n1", noOverlay),
			rej(1, 3, "n1", "memory limit above the node's memory")), false, 0, false},
		{"older spec's rejections ignored", repl, slices.Concat(rej(1, 1, "n1", noOverlay), rej(1, 2, "n1", noOverlay), rej(1, 3, "n1", noOverlay),
			[]*shoalv1.Task{mk(1, "n1", rejected, run, 1, noOverlay), mk(1, "n1", rejected, run, 1, noOverlay),
				mk(2, "n1", rejected, run, 1, noOverlay), mk(2, "n1", rejected, run, 1, noOverlay),
				mk(3, "n1", rejected, run, 1, noOverlay), mk(3, "n1", rejected, run, 1, noOverlay)},
			rej(1, 1, "n1", noOverlay), rej(1, 2, "n1", noOverlay), rej(1, 3, "n1", noOverlay)), false, 0, false},
		{"rejections of tasks stopped by the orchestrator ignored", repl, slices.Concat(rej(2, 1, "n1", noOverlay), rej(3, 2, "n1", noOverlay), rej(3, 3, "n1", noOverlay),
			[]*shoalv1.Task{mk(1, "n1", rejected, shutdown, 2, noOverlay)}), false, 0, false},
		{"a task of the spec failed (it may have run)", repl, slices.Concat([]*shoalv1.Task{mk(1, "n1", failed, run, 2, "exit status 1")},
			rej(3, 1, "n1", noOverlay), rej(3, 2, "n1", noOverlay), rej(3, 3, "n1", noOverlay)), false, 0, false},
		{"a task of the spec was seen running", repl, slices.Concat(rej(3, 1, "n1", noOverlay), rej(3, 2, "n1", noOverlay), rej(3, 3, "n1", noOverlay)), true, 0, false},
		{"rollout: the old spec's tasks still run", repl, slices.Concat(rej(3, 1, "n1", noOverlay), rej(3, 2, "n1", noOverlay), rej(3, 3, "n1", noOverlay),
			[]*shoalv1.Task{mk(2, "n1", run, run, 1, "")}), false, 0, false},
		{"rollout: nothing runs", repl, slices.Concat([]*shoalv1.Task{mk(1, "n1", shutdown, shutdown, 1, ""), mk(2, "n1", shutdown, shutdown, 1, ""), mk(3, "n1", shutdown, shutdown, 1, "")},
			rej(3, 1, "n1", noOverlay), rej(3, 2, "n1", noOverlay), rej(3, 3, "n1", noOverlay)), false, 9, false},
		{"no replica wanted", &shoalv1.Service{SpecVersion: 2, Spec: &shoalv1.ServiceSpec{Replicas: 0}}, rej(3, 1, "n1", noOverlay), false, 0, false},
		{"global: every node rejected 3 times", global, slices.Concat(rej(3, 0, "n1", noOverlay), rej(3, 0, "n2", noOverlay)), false, 6, false},
		{"global: a node left (its task stopped) does not count", global, slices.Concat(rej(3, 0, "n1", noOverlay),
			[]*shoalv1.Task{mk(0, "n2", shutdown, shutdown, 2, "")}), false, 3, false},
		{"global: one node rejected twice", global, slices.Concat(rej(3, 0, "n1", noOverlay), rej(2, 0, "n2", noOverlay)), false, 0, false},
		{"global: one node runs it", global, slices.Concat(rej(3, 0, "n1", noOverlay), []*shoalv1.Task{mk(0, "n2", run, run, 2, "")}), false, 0, false},
		{"global: no task yet", global, nil, false, 0, false},
		{"start failures: every slot 3 times, one cause (the task ids differ)", repl,
			slices.Concat(fst(3, 1, "n1", noExec), fst(3, 2, "n1", noExec), fst(3, 3, "n1", noExec)), false, 9, true},
		{"start failures: 2 times each", repl, slices.Concat(fst(2, 1, "n1", noExec), fst(2, 2, "n1", noExec), fst(2, 3, "n1", noExec)), false, 0, false},
		{"start failures: one slot's task ran and crashed before", repl, slices.Concat([]*shoalv1.Task{crashed(3)},
			fst(3, 1, "n1", noExec), fst(3, 2, "n1", noExec), fst(3, 3, "n1", noExec)), false, 0, false},
		{"start failures: a task of the spec was seen running", repl,
			slices.Concat(fst(3, 1, "n1", noExec), fst(3, 2, "n1", noExec), fst(3, 3, "n1", noExec)), true, 0, false},
		{"start failures: one slot running", repl, slices.Concat(fst(3, 1, "n1", noExec), fst(3, 2, "n1", noExec),
			[]*shoalv1.Task{mk(3, "n1", run, run, 2, "")}), false, 0, false},
		{"crash loop: every slot failed 3 times after running", repl,
			[]*shoalv1.Task{crashed(1), crashed(1), crashed(1), crashed(2), crashed(2), crashed(2), crashed(3), crashed(3), crashed(3)}, false, 0, false},
		{"crash loop: a start error with an exit code ran", repl, func() []*shoalv1.Task {
			out := slices.Concat(fst(3, 1, "n1", noExec), fst(3, 2, "n1", noExec), fst(3, 3, "n1", noExec))
			for _, tk := range out {
				tk.Status.ExitCode = 1
			}
			return out
		}(), false, 0, false},
		{"crash loop: the shim died (no exit code, it may have run)", repl, func() []*shoalv1.Task {
			var out []*shoalv1.Task
			for slot := uint64(1); slot <= 3; slot++ {
				for range 3 {
					out = append(out, mk(slot, "n1", failed, run, 2, "the task's shim died unexpectedly"))
				}
			}
			return out
		}(), false, 0, false},
		{"start failures: another cause on one slot", repl,
			slices.Concat(fst(3, 1, "n1", noExec), fst(3, 2, "n1", noExec), fst(3, 3, "n1", "exec format error")), false, 0, false},
		{"start failures: a slot's newest cause differs", repl,
			slices.Concat(fst(3, 1, "n1", noExec), fst(3, 2, "n1", noExec), fst(3, 3, "n1", noExec), fst(1, 3, "n1", "exec format error")), false, 0, false},
		// A refusal and a failed start are different reasons, even with
		// one text.
		{"rejections on one slot, start failures with the same text on the others", repl, func() []*shoalv1.Task {
			out := rej(3, 1, "n1", noExec)
			for slot := uint64(2); slot <= 3; slot++ {
				for range 3 {
					out = append(out, mk(slot, "n1", failed, run, 2, "starting container: "+noExec))
				}
			}
			return out
		}(), false, 0, false},
		{"global: every node failed to start 3 times", global, slices.Concat(fst(3, 0, "n1", noExec), fst(3, 0, "n2", noExec)), false, 6, true},
	}
	for _, tt := range tests {
		m := map[string]*shoalv1.Task{}
		for _, x := range tt.tasks {
			m[x.GetMeta().GetId()] = x
		}
		why, times, start := hopeless(tt.svc, m, tt.ran)
		wantWhy := why == noOverlay
		if tt.start {
			// The newest task's error, without the agent's prefix.
			wantWhy = strings.HasPrefix(why, `task "t`) && strings.Contains(why, noExec)
		}
		if times != tt.times || (times > 0) != wantWhy || start != tt.start {
			t.Errorf("%s: hopeless = %q, %d times, failed to start %v; want %d times, failed to start %v", tt.name, why, times, start, tt.times, tt.start)
		}
	}
}

// TestServicePsDesired: tasks that ended — failed, completed, rejected —
// show DESIRED STATE Shutdown (the store keeps RUNNING, which --format json
// still shows); live tasks show what they are meant to be.
func TestServicePsDesired(t *testing.T) {
	c := newCLICluster(t)
	c.mgr.nodes = []*shoalv1.Node{{Meta: &shoalv1.Meta{Id: "n1"}, Spec: &shoalv1.NodeSpec{Name: "node1"}}}
	now := time.Now()
	mk := func(id string, slot uint64, st, desired shoalv1.TaskState) *shoalv1.Task {
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: "svcweb", ServiceName: "web", Slot: slot, NodeId: "n1",
			DesiredState: desired, Status: &shoalv1.TaskStatus{State: st, Timestamp: timestamppb.New(now)}}
	}
	run, shutdown := shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_SHUTDOWN
	c.mgr.tasks = []*shoalv1.Task{
		mk("running000001", 1, run, run),
		mk("failed0000001", 2, shoalv1.TaskState_TASK_STATE_FAILED, run),
		mk("complete00001", 3, shoalv1.TaskState_TASK_STATE_COMPLETE, run),
		mk("rejected00001", 4, shoalv1.TaskState_TASK_STATE_REJECTED, run),
		mk("stopping00001", 5, run, shutdown),
		mk("pending000001", 6, shoalv1.TaskState_TASK_STATE_PENDING, run),
	}
	want := map[string]string{"running00000": "Running", "failed000000": "Shutdown", "complete0000": "Shutdown",
		"rejected0000": "Shutdown", "stopping0000": "Shutdown", "pending00000": "Running"}
	code, out, errOut := c.run("service", "ps", "web")
	if code != 0 {
		t.Fatalf("service ps: %d %s", code, errOut)
	}
	// ID NAME IMAGE(empty here) NODE DESIRED
	row := regexp.MustCompile(`(?m)^(\S+)\s+web\.\d+\s+node1\s+(\S+)\s`)
	got := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(out, -1) {
		got[m[1]] = m[2]
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("desired states %v, want %v:\n%s", got, want, out)
	}
	// JSON keeps the stored value.
	code, out, _ = c.run("service", "ps", "web", "--format", "json")
	if code != 0 || !regexp.MustCompile(`"desired_?[sS]tate":\s*"TASK_STATE_RUNNING"`).MatchString(out) {
		t.Errorf("--format json: %d\n%s", code, out)
	}
}

// TestServiceUpdateArgs: --args replaces the args, split like a shell
// does; --args "" clears them; an update without --args keeps them.
func TestServiceUpdateArgs(t *testing.T) {
	c := newCLICluster(t)
	c.mgr.services = []*shoalv1.Service{{Meta: &shoalv1.Meta{Id: "svcweb", Version: 7}, SpecVersion: 1,
		Spec: &shoalv1.ServiceSpec{Name: "web", Replicas: 1, Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:1", Args: []string{"serve"}}}}}}
	cases := []struct {
		flags []string
		want  []string
	}{
		{[]string{"--args", `sleep 'a b' "c \"d\"" e\ f`}, []string{"sleep", "a b", `c "d"`, "e f"}},
		{[]string{"--args", ""}, nil},
		{[]string{"--replicas", "2"}, []string{"serve"}},
	}
	for _, tc := range cases {
		code, _, errOut := c.run(slices.Concat([]string{"service", "update", "--detach"}, tc.flags, []string{"web"})...)
		if code != 0 {
			t.Fatalf("update %q: %s", tc.flags, errOut)
		}
		req := c.mgr.updates[len(c.mgr.updates)-1]
		if got := req.GetSpec().GetTask().GetContainer().GetArgs(); !slices.Equal(got, tc.want) {
			t.Errorf("update %q: args %q, want %q", tc.flags, got, tc.want)
		}
		if req.GetVersion() != 7 {
			t.Errorf("update %q: version %d, want the one read (7)", tc.flags, req.GetVersion())
		}
	}
	code, _, errOut := c.run("service", "update", "--detach", "--args", `sleep "inf`, "web")
	if code == 0 || !strings.Contains(errOut, "--args") || !strings.Contains(errOut, "unterminated") {
		t.Errorf("unterminated quote: %d %q", code, errOut)
	}
}

// TestDetachedUpdateAsksABriefReply: `service update --detach` reads
// nothing of the reply but the name, so it asks for the brief one and
// prints the name it sent; an update that waits asks for the whole
// service (the wait reads its spec).
func TestDetachedUpdateAsksABriefReply(t *testing.T) {
	defer func(orig func(time.Duration) (<-chan time.Time, func())) { monitorTimer = orig }(monitorTimer)
	monitorTimer = func(time.Duration) (<-chan time.Time, func()) {
		c := make(chan time.Time, 1)
		c <- time.Now() // every period ends at once
		return c, func() {}
	}
	c := newCLICluster(t)
	c.mgr.services = []*shoalv1.Service{{Meta: &shoalv1.Meta{Id: "svcweb", Version: 7}, SpecVersion: 1,
		Spec: &shoalv1.ServiceSpec{Name: "web", Replicas: 1, Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:1"}}}}}
	for _, tc := range []struct {
		args    []string
		view    shoalv1.ServiceView
		outPart string
	}{
		{[]string{"service", "update", "--detach", "--replicas", "2", "web"}, shoalv1.ServiceView_SERVICE_VIEW_BRIEF, "web\n"},
		{[]string{"service", "scale", "--detach", "web=3"}, shoalv1.ServiceView_SERVICE_VIEW_BRIEF, "web\n"},
		{[]string{"service", "update", "--replicas", "0", "--monitor", "1s", "--wait-timeout", "5s", "web"}, shoalv1.ServiceView_SERVICE_VIEW_FULL, "web: converged (0/0)"},
	} {
		code, out, errOut := c.run(tc.args...)
		if code != 0 || !strings.HasPrefix(out, "web\n") || !strings.Contains(out, tc.outPart) {
			t.Fatalf("%q: exit %d\nstdout: %s\nstderr: %s", tc.args, code, out, errOut)
		}
		if got := c.mgr.updates[len(c.mgr.updates)-1].GetView(); got != tc.view {
			t.Errorf("%q: asked for %s, want %s", tc.args, got, tc.view)
		}
	}
}

func TestSplitWords(t *testing.T) {
	for in, want := range map[string][]string{
		"":                   nil,
		"   ":                nil,
		"a  b\tc":            {"a", "b", "c"},
		`sh -c 'echo $HOME'`: {"sh", "-c", "echo $HOME"},
		`a"b c"d`:            {"ab cd"},
		`''`:                 {""},
		`"\$x \a"`:           {`$x \a`},
	} {
		got, err := splitWords(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("splitWords(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`'a`, `"a`, `a\`} {
		if _, err := splitWords(bad); err == nil {
			t.Errorf("splitWords(%q): no error", bad)
		}
	}
}

// TestServicePsSeveral: `service ps A B` lists both services' tasks in one
// table, each task once (a service named twice), and leaves out others.
func TestServicePsSeveral(t *testing.T) {
	c := newCLICluster(t)
	now := time.Now()
	mk := func(id, svc string, slot uint64) *shoalv1.Task {
		run := shoalv1.TaskState_TASK_STATE_RUNNING
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: "svc" + svc, ServiceName: svc, Slot: slot,
			DesiredState: run, Status: &shoalv1.TaskStatus{State: run, Timestamp: timestamppb.New(now)}}
	}
	c.mgr.tasks = []*shoalv1.Task{mk("webtask00001", "web", 1), mk("apitask00001", "api", 1), mk("apitask00002", "api", 2), mk("dbtask000001", "db", 1)}
	code, out, errOut := c.run("service", "ps", "web", "api", "web")
	if code != 0 {
		t.Fatalf("service ps web api: %d %s", code, errOut)
	}
	for _, want := range []string{"web.1", "api.1", "api.2"} {
		if n := strings.Count(out, want+" "); n != 1 {
			t.Errorf("%s listed %d times:\n%s", want, n, out)
		}
	}
	if strings.Contains(out, "db.1") || strings.Count(out, "\nID") > 0 || strings.Count(out, "ID ") != 1 {
		t.Errorf("want one table of web and api only:\n%s", out)
	}
	if code, _, _ := c.run("service", "ps"); code == 0 {
		t.Error("service ps with no service succeeded")
	}
}

// `service create IMAGE -- CMD ARG...` (the way `task exec TASK -- CMD`
// is written) runs CMD: flags stop at IMAGE, so "--" reached the spec as
// the command and every task was rejected with `command "--" not found`
// (found in a hand trial). Without "--" the arguments are as given.
func TestCreateCommandAfterDashDash(t *testing.T) {
	c := newCLICluster(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"dash", []string{"redis:7", "--", "redis-server", "--save", ""}, []string{"redis-server", "--save", ""}},
		{"no dash", []string{"redis:7", "redis-server", "--port", "7000"}, []string{"redis-server", "--port", "7000"}},
		{"dash later", []string{"redis:7", "sh", "--", "x"}, []string{"sh", "--", "x"}},
	} {
		args := slices.Concat([]string{"service", "create", "--name", tc.name, "--no-resolve-image", "-d"}, tc.args)
		if code, _, errOut := c.run(args...); code != 0 {
			t.Fatalf("%s: exit %d: %s", tc.name, code, errOut)
		}
		c.mgr.cmu.Lock()
		got := c.mgr.findService(tc.name).GetSpec().GetTask().GetContainer().GetArgs()
		c.mgr.cmu.Unlock()
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: args %q, want %q", tc.name, got, tc.want)
		}
	}
}

// sendTaskEvent sends the event of task at raft index index.
func sendTaskEvent(st grpc.ServerStreamingServer[shoalv1.WatchEvent], task *shoalv1.Task, index uint64) error {
	ev := taskEvent(task)
	ev.Index = index
	return st.Send(ev)
}

// createWebConverges runs `service create` of web (1 replica, waiting)
// and expects it to converge.
func createWebConverges(t *testing.T, c *cliCluster) {
	t.Helper()
	code, out, errOut := c.run("service", "create", "--name", "web", "--no-resolve-image", "--monitor", "0", "--wait-timeout", "1m", "demo:1")
	if code != 0 || !strings.Contains(out, "web: converged (1/1)") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

// checkOutput fails t unless a command exited with wantCode and its
// output got holds every one of want, in order, and not notWant.
func checkOutput(t *testing.T, got string, code, wantCode int, notWant string, want ...string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("exit code %d, want %d; output:\n%s", code, wantCode, got)
	}
	if notWant != "" && strings.Contains(got, notWant) {
		t.Errorf("output says %q:\n%s", notWant, got)
	}
	rest := got
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("output lacks %q (in this order):\n%s", w, got)
		}
		rest = rest[i+len(w):]
	}
}

// watchOpens records the index each Watch of a scripted manager was
// opened from, in order.
type watchOpens struct {
	mu   sync.Mutex
	from []uint64
}

// add records req's index and returns how many watches were opened.
func (w *watchOpens) add(req *shoalv1.WatchRequest) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.from = append(w.from, req.GetFromIndex())
	return len(w.from)
}

func (w *watchOpens) list() []uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.from)
}
