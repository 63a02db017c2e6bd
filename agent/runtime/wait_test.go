package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Environment of a helper process standing for an agent that starts a
// task and then goes away (see startDetachedHelper).
const (
	helperEnv = "SHOAL_RUNTIME_TEST_START" // JSON helperJob
)

type helperJob struct {
	Root    string `json:"root"`
	Spec    Spec   `json:"spec"`
	LogPath string `json:"log_path"`

	CgroupParent string `json:"cgroup_parent"`
	// SpareOnly: make a spare shim (Prepare), print its pid, exit.
	SpareOnly bool `json:"spare_only,omitempty"`
}

// maybeHelper runs in TestMain: if this process is the helper, start the
// task and exit without waiting, so that its shim is orphaned.
func maybeHelper() {
	v := os.Getenv(helperEnv)
	if v == "" {
		return
	}
	var job helperJob
	if err := json.Unmarshal([]byte(v), &job); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	rt, err := NewLibcontainer(job.Root, nil, WithCgroupParent(job.CgroupParent), WithSpareShim(job.SpareOnly))
	if err == nil && job.SpareOnly {
		if err = rt.Prepare(context.Background()); err == nil {
			fmt.Println(spareOf(rt).cmd.Process.Pid)
		}
	} else if err == nil {
		err = rt.Start(context.Background(), job.Spec, job.LogPath)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// startDetached starts spec from a separate process that exits at once:
// the shim is then not a child of the test process, as after an agent
// restart.
func startDetached(t *testing.T, rt *Libcontainer, spec Spec) Spec {
	t.Helper()
	if spec.ID == "" {
		spec.ID = newID()
	}
	if spec.Rootfs == "" {
		spec.Rootfs = newRootfs(t)
	}
	job, _ := json.Marshal(helperJob{Root: rt.root, Spec: spec, LogPath: filepath.Join(t.TempDir(), "log"), CgroupParent: rt.cgroupParent})
	t.Cleanup(func() {
		if err := rt.Remove(context.Background(), spec.ID); err != nil {
			t.Errorf("cleanup remove: %v", err)
		}
	})
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(job))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	return spec
}

// waitAsync runs Wait in a goroutine.
func waitAsync(rt Runtime, ctx context.Context, id string) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		st, err := rt.Wait(ctx, id)
		ch <- waitResult{st, err}
	}()
	return ch
}

type waitResult struct {
	st  State
	err error
}

func recv(t *testing.T, ch <-chan waitResult) waitResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return")
		return waitResult{}
	}
}

func TestWaitExit(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "exit", "7"}})
	st, err := rt.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusExited || st.Exit == nil || st.Exit.Code != 7 {
		t.Fatalf("got %+v", st)
	}
	// The shim is gone by the time Wait returns.
	if alive(st.ShimPid, 0) {
		t.Errorf("shim %d still alive after Wait", st.ShimPid)
	}
	// Already exited: returns the same at once.
	st2, err := rt.Wait(ctx, spec.ID)
	if err != nil || st2.Status != StatusExited || st2.Exit.Code != 7 {
		t.Errorf("second Wait: %+v, %v", st2, err)
	}
}

func TestWaitNotOurChild(t *testing.T) {
	rt := newRuntime(t)
	spec := startDetached(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	st := running(t, rt, spec.ID)
	if ppid := procPPid(t, st.ShimPid); ppid == os.Getpid() {
		t.Fatalf("shim %d is our child; the test needs an orphan", st.ShimPid)
	}
	ch := waitAsync(rt, context.Background(), spec.ID)
	if err := rt.Stop(context.Background(), spec.ID, syscall.SIGKILL, time.Second); err != nil {
		t.Fatal(err)
	}
	r := recv(t, ch)
	if r.err != nil || r.st.Status != StatusExited || r.st.Exit.Signal != int(syscall.SIGKILL) {
		t.Errorf("got %+v exit %+v, %v", r.st, r.st.Exit, r.err)
	}
}

func TestWaitShimKilled(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	st := running(t, rt, spec.ID)
	ch := waitAsync(rt, context.Background(), spec.ID)
	if err := unix.Kill(st.ShimPid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := recv(t, ch)
	if r.err != nil || r.st.Status != StatusFailed || r.st.Exit != nil || r.st.Error == "" {
		t.Errorf("got %+v, %v", r.st, r.err)
	}
}

func TestWaitCancel(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	ctx, cancel := context.WithCancel(context.Background())
	ch := waitAsync(rt, ctx, spec.ID)
	cancel()
	if r := recv(t, ch); !errors.Is(r.err, context.Canceled) {
		t.Errorf("got %+v, %v; want context.Canceled", r.st, r.err)
	}
	// The task is untouched.
	running(t, rt, spec.ID)
}

func TestWaitErrors(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	if _, err := rt.Wait(ctx, "../x"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("bad id: %v", err)
	}
	if _, err := rt.Wait(ctx, "nosuchtask"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	// A task dir without shim.json: Start has not got that far.
	if err := os.Mkdir(rt.dir("pending"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Wait(ctx, "pending"); !errors.Is(err, ErrNotStarted) {
		t.Errorf("no shim: %v", err)
	}
	// A recorded shim pid now used by another process (ours, with another
	// start time): the shim is gone, so Wait returns at once with Failed.
	self, _, err := procStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(rt.dir("reused"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(filepath.Join(rt.dir("reused"), shimFile), shimOnDisk{ShimPid: os.Getpid(), ShimStart: self + 1}); err != nil {
		t.Fatal(err)
	}
	st, err := rt.Wait(ctx, "reused")
	if err != nil || st.Status != StatusFailed {
		t.Errorf("reused pid: %+v, %v", st, err)
	}
}

// procPPid reads the parent pid from /proc/<pid>/status.
func procPPid(t *testing.T, pid int) int {
	t.Helper()
	var ppid int
	fmt.Sscan(procStatus(t, pid, "PPid"), &ppid)
	return ppid
}

func TestFakeWait(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		end    func(f *Fake, id string)
		status Status
		errIs  error
	}{
		{"exit", func(f *Fake, id string) { f.Exit(id, 3, false) }, StatusExited, nil},
		{"kill shim", func(f *Fake, id string) { f.KillShim(id) }, StatusFailed, nil},
		{"stop", func(f *Fake, id string) { f.Stop(ctx, id, syscall.SIGTERM, time.Second) }, StatusExited, nil},
		{"remove", func(f *Fake, id string) { f.Remove(ctx, id) }, "", ErrNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := NewFake()
			if err := f.Start(ctx, Spec{ID: "a", Rootfs: "/r", Args: []string{"x"}}, "/l"); err != nil {
				t.Fatal(err)
			}
			ch := waitAsync(f, ctx, "a")
			select {
			case r := <-ch:
				t.Fatalf("Wait returned while running: %+v, %v", r.st, r.err)
			default:
			}
			c.end(f, "a")
			r := recv(t, ch)
			if c.errIs != nil {
				if !errors.Is(r.err, c.errIs) {
					t.Errorf("err %v, want %v", r.err, c.errIs)
				}
				return
			}
			if r.err != nil || r.st.Status != c.status {
				t.Errorf("got %+v, %v; want %s", r.st, r.err, c.status)
			}
			// Already ended: at once.
			if st, err := f.Wait(ctx, "a"); err != nil || st.Status != c.status {
				t.Errorf("second Wait: %+v, %v", st, err)
			}
		})
	}
	f := NewFake()
	if _, err := f.Wait(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown: %v", err)
	}
	f.Start(ctx, Spec{ID: "a", Rootfs: "/r", Args: []string{"x"}}, "/l")
	cctx, cancel := context.WithCancel(ctx)
	ch := waitAsync(f, cctx, "a")
	cancel()
	if r := recv(t, ch); !errors.Is(r.err, context.Canceled) {
		t.Errorf("cancel: %v", r.err)
	}
}
