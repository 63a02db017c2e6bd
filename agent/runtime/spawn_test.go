package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// spareOf returns the runtime's current spare shim (nil if none).
func spareOf(rt *Libcontainer) *shimProc {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.spare
}

func TestSpareShimServesNextStart(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	if err := rt.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	s := spareOf(rt)
	if s == nil {
		t.Fatal("no spare after Prepare")
	}
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	st := running(t, rt, spec.ID)
	if st.ShimPid != s.cmd.Process.Pid {
		t.Errorf("task's shim is %d, want the spare %d", st.ShimPid, s.cmd.Process.Pid)
	}
	// The spare's output went nowhere until it had a task; now it is the
	// task's shim.log, and it leads its own session like any shim.
	if sid, _ := unix.Getsid(st.ShimPid); sid != st.ShimPid {
		t.Errorf("shim sid %d, want %d", sid, st.ShimPid)
	}
	if l, err := os.Readlink("/proc/" + strconv.Itoa(st.ShimPid) + "/fd/2"); err != nil || l != filepath.Join(rt.dir(spec.ID), shimLog) {
		t.Errorf("shim stderr = %q, %v", l, err)
	}
	// A new spare is made in the background.
	if err := rt.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if n := spareOf(rt); n == nil || n == s {
		t.Errorf("no new spare after Start: %v", n)
	}
}

func TestSpareShimDeadFallsBack(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	if err := rt.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	s := spareOf(rt)
	killAndWait(t, s.cmd.Process.Pid)
	<-s.dead
	// Start must not fail because the spare is gone: it spawns a shim.
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "exit", "4"}})
	st, err := rt.Wait(ctx, spec.ID)
	if err != nil || st.Exit == nil || st.Exit.Code != 4 {
		t.Fatalf("got %+v, %v", st, err)
	}
}

// TestSpareShimGoneUnnoticed: a spare that went away before Start could
// see it (its socket closed, its reaping not yet noticed) is replaced by
// a fresh shim: nothing of the task had been done.
func TestSpareShimGoneUnnoticed(t *testing.T) {
	rt := newRuntime(t)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fds[1]) // the "shim" end: gone
	gone := &shimProc{
		cmd:  exec.Command("/nonexistent"),
		conn: os.NewFile(uintptr(fds[0]), "gone"),
		msgs: make(chan readyMsg), up: make(chan struct{}), dead: make(chan struct{}),
	}
	close(gone.msgs)
	close(gone.up)
	rt.mu.Lock()
	rt.spare = gone
	rt.mu.Unlock()
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "exit", "5"}})
	st, err := rt.Wait(context.Background(), spec.ID)
	if err != nil || st.Exit == nil || st.Exit.Code != 5 {
		t.Fatalf("got %+v, %v", st, err)
	}
}

func TestSpareShimOff(t *testing.T) {
	rt, err := NewLibcontainer(filepath.Join(t.TempDir(), "state"), nil, WithCgroupParent(testCgroupParent), WithSpareShim(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	if err := rt.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "true"}})
	if _, err := rt.Wait(context.Background(), spec.ID); err != nil {
		t.Fatal(err)
	}
	rt.waitRefill()
	if s := spareOf(rt); s != nil {
		t.Errorf("spare made with spares off")
	}
}

func TestCloseDismissesSpare(t *testing.T) {
	rt := newRuntime(t)
	if err := rt.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := spareOf(rt)
	rt.Close()
	select {
	case <-s.dead:
	default:
		t.Fatal("spare still running after Close")
	}
	if ws := s.cmd.ProcessState; ws == nil || ws.ExitCode() != 0 {
		t.Errorf("spare ended with %v, want a clean exit", ws)
	}
	// Closed: no new spares, Prepare is a no-op, Start still works.
	if err := rt.Prepare(context.Background()); err != nil || spareOf(rt) != nil {
		t.Errorf("Prepare after Close: %v, spare %v", err, spareOf(rt))
	}
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "true"}})
	if _, err := rt.Wait(context.Background(), spec.ID); err != nil {
		t.Fatal(err)
	}
}

// TestSpareShimExitsWithAgent: an agent that dies (here: a helper process
// that exits without Close) leaves no spare behind.
func TestSpareShimExitsWithAgent(t *testing.T) {
	rt := newRuntime(t)
	job, _ := json.Marshal(helperJob{Root: rt.root, CgroupParent: rt.cgroupParent, SpareOnly: true})
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(job))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("helper said %q", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitPidExit(ctx, pid, 0); err != nil {
		t.Fatalf("spare %d still there after its agent exited: %v", pid, err)
	}
}

// A bad id from the agent is refused by the shim, and Start reports it.
func TestShimRefusesBadID(t *testing.T) {
	rt := newRuntime(t)
	s, err := rt.spawnShim()
	if err != nil {
		t.Fatal(err)
	}
	err = s.handOver(context.Background(), "../etc")
	s.conn.Close()
	<-s.dead
	if err == nil || !strings.Contains(err.Error(), "bad task id") {
		t.Errorf("got %v", err)
	}
	if errors.Is(err, errShimGone) {
		t.Errorf("want the shim's refusal, got %v", err)
	}
}

// TestStartCancelled: a Start whose context ends while the shim works
// returns the context's error and leaves nothing: no task dir, no shim.
func TestStartCancelled(t *testing.T) {
	for _, spare := range []bool{true, false} {
		rt, err := NewLibcontainer(filepath.Join(t.TempDir(), "state"), nil, WithCgroupParent(testCgroupParent), WithSpareShim(spare))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rt.Close() })
		if err := rt.Prepare(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		spec := Spec{ID: newID(), Rootfs: newRootfs(t), Args: []string{"/bin/probe", "sleep"}}
		if err := rt.Start(ctx, spec, filepath.Join(t.TempDir(), "log")); !errors.Is(err, context.Canceled) {
			t.Errorf("spare %v: got %v, want context.Canceled", spare, err)
			rt.Remove(context.Background(), spec.ID)
		}
		if _, err := os.Stat(rt.dir(spec.ID)); !os.IsNotExist(err) {
			t.Errorf("spare %v: task dir left: %v", spare, err)
		}
		if left := cgroupDirsLeft(spec.ID); len(left) > 0 {
			t.Errorf("spare %v: cgroups left: %v", spare, left)
		}
		rt.Close()
		if pids := shimsUnder(rt.root); len(pids) > 0 {
			t.Errorf("spare %v: shims left: %v", spare, pids)
		}
	}
}
