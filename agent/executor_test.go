package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/agent/image"
	"github.com/shoal-dev/shoal/agent/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// fakeImages is an in-memory image store: "app:1" exists locally,
// "registry/app:2" can be pulled, anything else fails to pull.
type fakeImages struct {
	mu     sync.Mutex // guards images and pulls
	images map[string]image.Image
	pulls  int
	block  chan struct{} // if set, pulls wait for it
}

func newFakeImages() *fakeImages {
	return &fakeImages{images: map[string]image.Image{
		"app:1": {Digest: "sha256:aaa", Layers: []string{"/layers/a"}, Config: image.Config{Entrypoint: []string{"/bin/app"}, Env: []string{"PATH=/bin", "A=image"}}},
	}}
}

func (f *fakeImages) Get(ref string) (image.Image, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if img, ok := f.images[ref]; ok {
		return img, true
	}
	for _, img := range f.images { // by digest, as the real store does
		if img.Digest == ref {
			return img, true
		}
	}
	return image.Image{}, false
}

func (f *fakeImages) Pull(ctx context.Context, ref string, _ image.PullOptions) (image.Image, error) {
	f.mu.Lock()
	f.pulls++
	block := f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return image.Image{}, ctx.Err()
		}
	}
	if ref == "registry/app:2" {
		img := image.Image{Digest: "sha256:bbb", Layers: []string{"/layers/b"}, Config: image.Config{Cmd: []string{"app", "--serve"}}}
		f.mu.Lock()
		f.images[ref] = img
		f.mu.Unlock()
		return img, nil
	}
	return image.Image{}, fmt.Errorf("pull %q: %w: manifest unknown", ref, image.ErrNotFound)
}

func (f *fakeImages) LowerDirs(img image.Image) []string { return img.Layers }
func (f *fakeImages) MarkUsed(string) error              { return nil }

// fakeNet hands out one address per task.
type fakeNet struct {
	mu   sync.Mutex // guards up
	up   map[string]bool
	next int
	iso  map[string]bool // tasks whose node-local port was isolated
}

func (n *fakeNet) Isolate(id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.iso == nil {
		n.iso = map[string]bool{}
	}
	n.iso[id] = true
	return nil
}

func (n *fakeNet) isolated(id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.iso[id]
}

func (n *fakeNet) Setup(_ context.Context, id string) (NetAttachment, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next++
	n.up[id] = true
	return NetAttachment{NetNSPath: "/run/netns/" + id, Addresses: []string{fmt.Sprintf("10.0.0.%d/24", n.next)}}, nil
}

func (n *fakeNet) Teardown(_ context.Context, id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.up, id)
	return nil
}

func (n *fakeNet) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.up)
}

type execEnv struct {
	t      *testing.T
	dir    string
	rt     *runtime.Fake
	images *fakeImages
	net    *fakeNet
	ov     Overlay // nil: none
	disc   Discovery
	netw   Network // nil: net
	ex     *Executor
	cancel context.CancelFunc
	done   chan error
	// wrapDB, if set, wraps the executor's task database (to fail or
	// record writes).
	wrapDB func(taskStore) taskStore
	// onStatus, if set before start, is ExecutorConfig.OnStatus.
	onStatus func(*shoalv1.Task, *shoalv1.TaskStatus)
	// withdrawal, if set before start, is ExecutorConfig.Withdrawal.
	withdrawal EndpointWithdrawal
}

func newExecEnv(t *testing.T) *execEnv { return newExecEnvWrapped(t, nil) }

func newExecEnvWrapped(t *testing.T, wrapDB func(taskStore) taskStore) *execEnv {
	env := &execEnv{t: t, dir: t.TempDir(), rt: runtime.NewFake(), images: newFakeImages(), net: &fakeNet{up: map[string]bool{}}, wrapDB: wrapDB}
	env.start()
	t.Cleanup(env.stop)
	return env
}

// start runs an executor on env.dir (again, after stop: an agent restart).
func (env *execEnv) start() {
	var netw Network = env.net
	if env.netw != nil {
		netw = env.netw
	}
	ex, err := NewExecutor(ExecutorConfig{Dir: env.dir, Runtime: env.rt, Images: env.images, Network: netw,
		Overlay: env.ov, Discovery: env.disc, Withdrawal: env.withdrawal, NodeMemory: 1 << 30, OnStatus: env.onStatus, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		env.t.Fatal(err)
	}
	if env.wrapDB != nil {
		ex.db = env.wrapDB(ex.db)
	}
	// The rootfs "mount" makes a directory holding the image's program.
	ex.mount = func(_ []string, _, _, target string) error {
		for _, p := range []string{"bin/app", "bin/sh"} {
			if err := os.MkdirAll(filepath.Join(target, "bin"), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(target, p), []byte("#!"), 0o755); err != nil {
				return err
			}
		}
		return nil
	}
	ex.unmount = func(string) error { return nil }
	ctx, cancel := context.WithCancel(context.Background())
	env.ex, env.cancel, env.done = ex, cancel, make(chan error, 1)
	go func() { env.done <- ex.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for env.ex.baseCtx() == context.Background() {
		if time.Now().After(deadline) {
			env.t.Fatal("executor did not start")
		}
		time.Sleep(time.Millisecond)
	}
}

func (env *execEnv) stop() {
	if env.cancel == nil {
		return
	}
	env.cancel()
	if err := <-env.done; err != nil {
		env.t.Errorf("executor Run: %v", err)
	}
	env.cancel = nil
}

func (env *execEnv) taskDirExists(id string) bool {
	_, err := os.Stat(env.ex.paths(id).dir)
	return err == nil
}

func task(id, img string, desired shoalv1.TaskState) *shoalv1.Task {
	return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: "svc", DesiredState: desired,
		Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED},
		Spec:   &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: img, Env: []string{"A=spec"}, StopGraceMs: 100}}}
}

// waitStatus polls (with a deadline) for the task to reach state.
func (env *execEnv) waitStatus(id string, state shoalv1.TaskState) *shoalv1.TaskStatus {
	env.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		env.ex.mu.Lock()
		st := env.ex.statuses[id]
		env.ex.mu.Unlock()
		if st.GetState() == state {
			return st
		}
		if time.Now().After(deadline) {
			env.t.Fatalf("task %s: state %s (%s %s), want %s", id, st.GetState(), st.GetMessage(), st.GetErr(), state)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func running(id string) *shoalv1.Task {
	return task(id, "app:1", shoalv1.TaskState_TASK_STATE_RUNNING)
}

func TestExecutorRunsTaskToCompletion(t *testing.T) {
	env := newExecEnv(t)
	env.ex.Assign(true, []*shoalv1.Task{running("t1")}, nil)
	st := env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_RUNNING)
	if st.GetImageDigest() != "sha256:aaa" || len(st.GetAddresses()) != 1 || st.GetAddresses()[0] != "10.0.0.1" {
		t.Errorf("running status = %v", st)
	}
	spec, ok := env.rt.Spec("t1")
	if !ok {
		t.Fatal("runtime has no container")
	}
	if strings.Join(spec.Args, " ") != "/bin/app" || spec.NetNSPath != "/run/netns/t1" {
		t.Errorf("spec args %v netns %q", spec.Args, spec.NetNSPath)
	}
	if got := strings.Join(spec.Env, ","); got != "PATH=/bin,A=spec,HOSTNAME=t1" {
		t.Errorf("env = %s (spec must override the image by key)", got)
	}
	// Every state from ACCEPTED on was reported, in order.
	if err := env.rt.Exit("t1", 0, false); err != nil {
		t.Fatal(err)
	}
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_COMPLETE)
	// Resources are released right after the final status is recorded.
	deadline := time.Now().Add(5 * time.Second)
	for env.net.count() != 0 || env.taskDirExists("t1") {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if env.net.count() != 0 {
		t.Error("network not released after the task ended")
	}
	if _, ok := env.rt.Spec("t1"); ok {
		t.Error("container not removed after the task ended")
	}
	if _, err := os.Stat(env.ex.paths("t1").dir); !os.IsNotExist(err) {
		t.Errorf("task dir left: %v", err)
	}
}

func TestExecutorExitStatuses(t *testing.T) {
	env := newExecEnv(t)
	env.ex.Assign(true, []*shoalv1.Task{running("code"), running("oom"), running("shim")}, nil)
	for _, id := range []string{"code", "oom", "shim"} {
		env.waitStatus(id, shoalv1.TaskState_TASK_STATE_RUNNING)
	}
	env.rt.Exit("code", 3, false)
	env.rt.Exit("oom", 137, true)
	env.rt.KillShim("shim")
	if st := env.waitStatus("code", shoalv1.TaskState_TASK_STATE_FAILED); st.GetExitCode() != 3 || st.GetErr() != "exit code 3" {
		t.Errorf("exit 3: %v", st)
	}
	if st := env.waitStatus("oom", shoalv1.TaskState_TASK_STATE_FAILED); !st.GetOomKilled() || !strings.Contains(st.GetErr(), "OOM") {
		t.Errorf("oom: %v", st)
	}
	if st := env.waitStatus("shim", shoalv1.TaskState_TASK_STATE_FAILED); !strings.Contains(st.GetErr(), "shim died") {
		t.Errorf("shim: %v", st)
	}
}

func TestExecutorShutdown(t *testing.T) {
	env := newExecEnv(t)
	env.ex.Assign(true, []*shoalv1.Task{running("t1")}, nil)
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_RUNNING)
	env.ex.Assign(false, []*shoalv1.Task{task("t1", "app:1", shoalv1.TaskState_TASK_STATE_SHUTDOWN)}, nil)
	st := env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_SHUTDOWN)
	if st.GetExitCode() != 143 {
		t.Errorf("exit code %d, want 143 (SIGTERM)", st.GetExitCode())
	}
}

func TestExecutorShutdownDuringPull(t *testing.T) {
	env := newExecEnv(t)
	env.images.block = make(chan struct{})
	defer close(env.images.block)
	env.ex.Assign(true, []*shoalv1.Task{task("t1", "registry/app:2", shoalv1.TaskState_TASK_STATE_RUNNING)}, nil)
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_PREPARING)
	env.ex.Assign(false, []*shoalv1.Task{task("t1", "registry/app:2", shoalv1.TaskState_TASK_STATE_SHUTDOWN)}, nil)
	if st := env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_SHUTDOWN); st.GetMessage() != "shut down before it started" {
		t.Errorf("status %v", st)
	}
}

func TestExecutorPullsOncePerImage(t *testing.T) {
	env := newExecEnv(t)
	env.images.block = make(chan struct{})
	var ts []*shoalv1.Task
	for i := range 5 {
		ts = append(ts, task(fmt.Sprintf("t%d", i), "registry/app:2", shoalv1.TaskState_TASK_STATE_RUNNING))
	}
	env.ex.Assign(true, ts, nil)
	for i := range 5 {
		env.waitStatus(fmt.Sprintf("t%d", i), shoalv1.TaskState_TASK_STATE_PREPARING)
	}
	close(env.images.block)
	for i := range 5 {
		env.waitStatus(fmt.Sprintf("t%d", i), shoalv1.TaskState_TASK_STATE_RUNNING)
	}
	if env.images.pulls != 1 {
		t.Errorf("%d pulls for 5 tasks of one image, want 1", env.images.pulls)
	}
	spec, _ := env.rt.Spec("t0")
	if strings.Join(spec.Args, " ") != "app --serve" {
		t.Errorf("args %v: the image cmd must be used", spec.Args)
	}
}

func TestExecutorRejects(t *testing.T) {
	env := newExecEnv(t)
	unknown := task("unknown", "nosuch:1", shoalv1.TaskState_TASK_STATE_RUNNING)
	nocmd := task("nocmd", "app:1", shoalv1.TaskState_TASK_STATE_RUNNING)
	nocmd.Spec.Container.Command = []string{"python3"}
	bigmem := task("bigmem", "app:1", shoalv1.TaskState_TASK_STATE_RUNNING)
	bigmem.Spec.Resources = &shoalv1.ResourceRequirements{Limits: &shoalv1.Resources{MemoryBytes: 2 << 30}}
	tinymem := task("tinymem", "app:1", shoalv1.TaskState_TASK_STATE_RUNNING)
	tinymem.Spec.Resources = &shoalv1.ResourceRequirements{Limits: &shoalv1.Resources{MemoryBytes: 4096}}
	env.ex.Assign(true, []*shoalv1.Task{unknown, nocmd, bigmem, tinymem, running("ok")}, nil)
	for id, want := range map[string]string{
		"unknown": `image "nosuch:1" is not on this node and could not be pulled`,
		"nocmd":   `command "python3" not found in the image's PATH`,
		"bigmem":  "more than this node has",
		"tinymem": "spec.task.resources.limits.memory_bytes: must be at least 6MiB",
	} {
		st := env.waitStatus(id, shoalv1.TaskState_TASK_STATE_REJECTED)
		if !strings.Contains(st.GetErr(), want) {
			t.Errorf("%s: err %q, want it to contain %q", id, st.GetErr(), want)
		}
	}
	// Nothing else is disturbed.
	env.waitStatus("ok", shoalv1.TaskState_TASK_STATE_RUNNING)
	if n := env.net.count(); n != 1 {
		t.Errorf("%d network attachments, want only the running task's", n)
	}
}

func TestExecutorStartFailure(t *testing.T) {
	env := newExecEnv(t)
	env.rt.StartErr = errors.New("exec: permission denied")
	env.ex.Assign(true, []*shoalv1.Task{running("t1")}, nil)
	st := env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_FAILED)
	if !strings.Contains(st.GetErr(), "permission denied") {
		t.Errorf("err %q", st.GetErr())
	}
}

func TestExecutorRemoveCleansUp(t *testing.T) {
	env := newExecEnv(t)
	env.ex.Assign(true, []*shoalv1.Task{running("t1"), running("t2")}, nil)
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_RUNNING)
	env.waitStatus("t2", shoalv1.TaskState_TASK_STATE_RUNNING)
	logp := env.ex.LogPath("t1")
	if err := os.WriteFile(logp, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(logp+".1", []byte("{}\n"), 0o600)
	// A full set without t1 removes it, like an explicit removal does t2.
	env.ex.Assign(true, []*shoalv1.Task{running("t2")}, nil)
	env.ex.Assign(false, nil, []string{"t2"})
	deadline := time.Now().Add(5 * time.Second)
	for len(env.ex.Tasks()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("tasks still held: %v", env.ex.Tasks())
		}
		time.Sleep(2 * time.Millisecond)
	}
	if _, err := os.Stat(logp); !os.IsNotExist(err) {
		t.Errorf("log kept: %v", err)
	}
	if _, err := os.Stat(logp + ".1"); !os.IsNotExist(err) {
		t.Errorf("rotated log kept: %v", err)
	}
	if states, _ := env.rt.List(context.Background()); len(states) != 0 {
		t.Errorf("containers left: %v", states)
	}
	if env.net.count() != 0 {
		t.Error("network attachments left")
	}
	all, err := env.ex.db.all()
	if err != nil || len(all) != 0 {
		t.Errorf("records left: %v %v", all, err)
	}
}

func TestExecutorReadoptsAfterRestart(t *testing.T) {
	env := newExecEnv(t)
	env.ex.Assign(true, []*shoalv1.Task{running("keep"), running("ends")}, nil)
	env.waitStatus("keep", shoalv1.TaskState_TASK_STATE_RUNNING)
	env.waitStatus("ends", shoalv1.TaskState_TASK_STATE_RUNNING)
	env.stop()
	// While the agent is away one container exits; the other runs on.
	env.rt.Exit("ends", 7, false)
	if st, _ := env.rt.State(context.Background(), "keep"); st.Status != runtime.StatusRunning {
		t.Fatalf("stopping the agent stopped a container: %v", st)
	}
	env.start()
	if st := env.waitStatus("ends", shoalv1.TaskState_TASK_STATE_FAILED); st.GetExitCode() != 7 {
		t.Errorf("exit while away: %v", st)
	}
	// The survivor is re-adopted: all statuses go to a new session, and a
	// later exit is still seen.
	ups := env.ex.TakeUpdates(true)
	if len(ups) != 2 {
		t.Errorf("%d statuses for a new session, want 2", len(ups))
	}
	env.ex.Assign(true, []*shoalv1.Task{running("keep"), running("ends")}, nil)
	env.rt.Exit("keep", 0, false)
	env.waitStatus("keep", shoalv1.TaskState_TASK_STATE_COMPLETE)
}

func TestExecutorUnknownRunningTask(t *testing.T) {
	env := newExecEnv(t)
	lost := running("lost")
	lost.Status.State = shoalv1.TaskState_TASK_STATE_RUNNING
	env.ex.Assign(true, []*shoalv1.Task{lost}, nil)
	st := env.waitStatus("lost", shoalv1.TaskState_TASK_STATE_FAILED)
	if !strings.Contains(st.GetErr(), "no record") {
		t.Errorf("err %q", st.GetErr())
	}
	if _, ok := env.rt.Spec("lost"); ok {
		t.Error("a second copy was started")
	}
}

func TestStopSignal(t *testing.T) {
	for in, want := range map[string]string{"": "terminated", "SIGINT": "interrupt", "KILL": "killed", "1": "hangup"} {
		sig, err := stopSignal(in, "")
		if err != nil || sig.String() != want {
			t.Errorf("stopSignal(%q) = %v, %v; want %s", in, sig, err, want)
		}
	}
	for _, bad := range []string{"SIGNOPE", "0", "99"} {
		if _, err := stopSignal(bad, ""); err == nil {
			t.Errorf("stopSignal(%q): no error", bad)
		}
	}
}

// flakyRuntime fails Remove a given number of times.
type flakyRuntime struct {
	*runtime.Fake
	mu          sync.Mutex // guards removeFails
	removeFails int
}

func (f *flakyRuntime) Remove(ctx context.Context, id string) error {
	f.mu.Lock()
	fail := f.removeFails > 0
	if fail {
		f.removeFails--
	}
	f.mu.Unlock()
	if fail {
		return errors.New("device or resource busy")
	}
	return f.Fake.Remove(ctx, id)
}

func TestExecutorRetriesFailedRelease(t *testing.T) {
	env := newExecEnv(t)
	env.stop()
	flaky := &flakyRuntime{Fake: env.rt}
	ex, err := NewExecutor(ExecutorConfig{Dir: env.dir, Runtime: flaky, Images: env.images, Network: env.net,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ex.mount = func(_ []string, _, _, target string) error {
		os.MkdirAll(filepath.Join(target, "bin"), 0o755)
		return os.WriteFile(filepath.Join(target, "bin", "app"), []byte("#!"), 0o755)
	}
	ex.unmount = func(string) error { return nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx) }()
	defer func() { cancel(); <-done }()
	env.ex = ex
	for ex.baseCtx() == context.Background() {
		time.Sleep(time.Millisecond)
	}
	ex.Assign(true, []*shoalv1.Task{running("t1")}, nil)
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_RUNNING)
	flaky.mu.Lock()
	flaky.removeFails = 2
	flaky.mu.Unlock()
	ex.Assign(false, nil, []string{"t1"})
	deadline := time.Now().Add(10 * time.Second)
	for len(ex.Tasks()) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("task never removed after Remove failed twice")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if states, _ := env.rt.List(context.Background()); len(states) != 0 {
		t.Errorf("container left behind: %v", states)
	}
	if flaky.removeFails != 0 {
		t.Errorf("Remove not retried (%d failures left)", flaky.removeFails)
	}
}

func TestExecutorReadoptsStartingAsRunning(t *testing.T) {
	env := newExecEnv(t)
	env.ex.Assign(true, []*shoalv1.Task{running("t1")}, nil)
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_RUNNING)
	env.stop()
	// A crash after the container started, before RUNNING was recorded.
	db, err := openTaskDB(env.dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.put("t1", nil, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_STARTING, Addresses: []string{"10.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	env.start()
	st := env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_RUNNING)
	if st.GetPid() == 0 || len(st.GetAddresses()) != 1 {
		t.Errorf("re-adopted status %v: want the pid and addresses", st)
	}
}

func TestExecutorRemovalStopsGracefully(t *testing.T) {
	env := newExecEnv(t)
	env.ex.Assign(true, []*shoalv1.Task{running("t1")}, nil)
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_RUNNING)
	env.ex.Assign(false, nil, []string{"t1"})
	// The fake's Stop records SIGTERM: removal went through Stop, not a
	// bare kill; the SHUTDOWN report precedes the removal.
	deadline := time.Now().Add(5 * time.Second)
	for len(env.ex.Tasks()) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("not removed")
		}
		time.Sleep(2 * time.Millisecond)
	}
	ups := env.ex.TakeUpdates(true)
	if len(ups) != 0 {
		t.Errorf("statuses of a removed task still queued: %v", ups)
	}
}

func TestExecutorStopsTaskTheManagersEnded(t *testing.T) {
	env := newExecEnv(t)
	env.ex.Assign(true, []*shoalv1.Task{running("t1")}, nil)
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_RUNNING)
	// The node was cut off; the managers orphaned the task (desired state
	// unchanged) and replaced it elsewhere.
	orphan := running("t1")
	orphan.Meta.Version = 9
	orphan.Status.State = shoalv1.TaskState_TASK_STATE_ORPHANED
	env.ex.Assign(true, []*shoalv1.Task{orphan}, nil)
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_SHUTDOWN)
	if st, err := env.rt.State(context.Background(), "t1"); err == nil && st.Status == runtime.StatusRunning {
		t.Error("orphaned task's container still running")
	}
}

func TestExecutorAssignBeforeRun(t *testing.T) {
	dir := t.TempDir()
	rt := runtime.NewFake()
	ex, err := NewExecutor(ExecutorConfig{Dir: dir, Runtime: rt, Images: newFakeImages(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ex.mount = func(_ []string, _, _, target string) error {
		os.MkdirAll(filepath.Join(target, "bin"), 0o755)
		return os.WriteFile(filepath.Join(target, "bin", "app"), []byte("#!"), 0o755)
	}
	ex.unmount = func(string) error { return nil }
	// The session may hand over the first full set before Run started.
	ex.Assign(true, []*shoalv1.Task{running("early")}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if st, err := rt.State(context.Background(), "early"); err == nil && st.Status == runtime.StatusRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an assignment made before Run was never started")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestActionable(t *testing.T) {
	base := running("t1")
	echo := running("t1") // the echo of our own report: new version, new status
	echo.Meta.Version = 7
	echo.Status.State = shoalv1.TaskState_TASK_STATE_RUNNING
	stop := running("t1")
	stop.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN
	orphan := running("t1")
	orphan.Status.State = shoalv1.TaskState_TASK_STATE_ORPHANED
	respec := running("t1")
	respec.Spec.Container.Env = []string{"A=other"}
	for name, tt := range map[string]struct {
		cur  *shoalv1.Task
		want bool
	}{
		"status echo": {echo, false}, "desired shutdown": {stop, true}, "orphaned": {orphan, true},
		"spec change": {respec, true}, "same": {running("t1"), false},
	} {
		if got := actionable(base, tt.cur); got != tt.want {
			t.Errorf("%s: actionable = %v, want %v", name, got, tt.want)
		}
	}
}

func TestExecutorRemoveAll(t *testing.T) {
	env := newExecEnv(t)
	env.ex.Assign(true, []*shoalv1.Task{running("a"), running("b")}, nil)
	env.waitStatus("a", shoalv1.TaskState_TASK_STATE_RUNNING)
	env.waitStatus("b", shoalv1.TaskState_TASK_STATE_RUNNING)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := env.ex.RemoveAll(ctx); err != nil {
		t.Fatal(err)
	}
	if states, _ := env.rt.List(context.Background()); len(states) != 0 {
		t.Errorf("containers left after RemoveAll: %v", states)
	}
	if env.net.count() != 0 {
		t.Error("network attachments left")
	}
}
