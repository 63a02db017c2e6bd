package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/agent/runtime/hostclean"
)

// checkLeftovers runs after all tests: no shim of ours may still run, no
// mount may remain under baseDir, and this run's cgroup parent must be
// removable in every hierarchy (which fails while any task cgroup, and so
// any container process, is left). What it finds is cleaned up as well as
// possible and reported.
func checkLeftovers() error {
	var errs []error
	for _, pid := range shimsUnder(baseDir) {
		errs = append(errs, fmt.Errorf("shim process %d", pid))
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	mounts, err := hostclean.MountsUnder(baseDir)
	if err != nil {
		errs = append(errs, err)
	}
	for _, m := range mounts {
		errs = append(errs, fmt.Errorf("mount %s", m))
		_ = unix.Unmount(m, unix.MNT_DETACH)
	}
	if err := RemoveCgroupParent(testCgroupParent); err != nil {
		errs = append(errs, err)
	}
	if len(mounts) == 0 {
		// Never RemoveAll through a mount: a bind of a host dir would be
		// emptied.
		if err := os.RemoveAll(baseDir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// shimsUnder lists live shim processes (Go shims and the supervisors
// they became) whose state root is under dir.
func shimsUnder(dir string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		argv := bytes.Split(b, []byte{0})
		verb := string(argv[min(1, len(argv)-1)])
		if len(argv) > 2 && (verb == ShimVerb || verb == superviseVerb) && strings.HasPrefix(string(argv[2]), dir+"/") && alive(pid, 0) {
			out = append(out, pid)
		}
	}
	return out
}

// procsInCgroup lists processes whose cgroup (in any hierarchy) is path
// or below it, path being relative to the hierarchy roots.
func procsInCgroup(path string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cgroup")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			// "4:memory:/shoal-test-1/t1"
			parts := strings.SplitN(line, ":", 3)
			if len(parts) == 3 && (parts[2] == path || strings.HasPrefix(parts[2], path+"/")) && alive(pid, 0) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// TestRemoveLeavesNothing: whatever state a task is in, Remove leaves
// none of its processes, cgroup dirs (in any hierarchy) or state.
func TestRemoveLeavesNothing(t *testing.T) {
	cases := []struct {
		name string
		args []string
		// prepare runs after Start, with the task's state as it runs.
		prepare func(t *testing.T, rt *Libcontainer, st State)
	}{
		{"exited", []string{"/bin/probe", "exit", "0"}, func(t *testing.T, rt *Libcontainer, st State) {
			if _, err := rt.Wait(context.Background(), st.ID); err != nil {
				t.Fatal(err)
			}
		}},
		{"running", []string{"/bin/probe", "sleep"}, nil},
		{"shim killed", []string{"/bin/probe", "sleep"}, func(t *testing.T, rt *Libcontainer, st State) {
			killAndWait(t, st.ShimPid)
		}},
		{"container killed", []string{"/bin/probe", "sleep"}, func(t *testing.T, rt *Libcontainer, st State) {
			killAndWait(t, st.Pid)
		}},
		// Only the cgroup knows the container: the shim is dead and both
		// its record and libcontainer's state are lost.
		{"state lost", []string{"/bin/probe", "sleep"}, func(t *testing.T, rt *Libcontainer, st State) {
			killAndWait(t, st.ShimPid)
			for _, f := range []string{shimFile, st.ID} {
				if err := os.RemoveAll(filepath.Join(rt.dir(st.ID), f)); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rt := newRuntime(t)
			spec, _ := start(t, rt, Spec{Args: c.args})
			st, err := rt.State(context.Background(), spec.ID)
			if err != nil {
				t.Fatal(err)
			}
			if st.ShimPid == 0 || st.Pid == 0 {
				t.Fatalf("no pids: %+v", st)
			}
			if c.prepare != nil {
				c.prepare(t, rt, st)
			}
			if err := rt.Remove(context.Background(), spec.ID); err != nil {
				t.Fatal(err)
			}
			if left := cgroupDirsLeft(spec.ID); len(left) > 0 {
				t.Errorf("cgroup dirs left: %v", left)
			}
			if procs := procsInCgroup(cgroupPath(testCgroupParent, spec.ID)); len(procs) > 0 {
				t.Errorf("processes left in the task's cgroup: %v", procs)
			}
			for _, pid := range []int{st.ShimPid, st.Pid} {
				if alive(pid, 0) {
					t.Errorf("process %d survived Remove", pid)
				}
			}
			if _, err := os.Stat(rt.dir(spec.ID)); !os.IsNotExist(err) {
				t.Errorf("state dir left: %v", err)
			}
			// Removing again is fine.
			if err := rt.Remove(context.Background(), spec.ID); err != nil {
				t.Errorf("second Remove: %v", err)
			}
		})
	}
}

// killAndWait SIGKILLs pid and waits for it to exit.
func killAndWait(t *testing.T, pid int) {
	t.Helper()
	f, err := openPidfd(pid, 0)
	if err != nil || f == nil {
		t.Fatalf("pidfd %d: %v", pid, err)
	}
	defer f.Close()
	if err := pidfdKill(f); err != nil {
		t.Fatal(err)
	}
	if err := waitReadable(context.Background(), f); err != nil {
		t.Fatal(err)
	}
}

func TestCgroupParentOption(t *testing.T) {
	for _, p := range []string{"", "shoal", "/", "/a/../b", "/a/"} {
		if _, err := NewLibcontainer(t.TempDir(), nil, WithCgroupParent(p)); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("parent %q: %v", p, err)
		}
		if err := RemoveCgroupParent(p); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("RemoveCgroupParent(%q): %v", p, err)
		}
	}
	rt, err := NewLibcontainer(t.TempDir(), nil)
	if err != nil || rt.cgroupParent != DefaultCgroupParent {
		t.Fatalf("default parent: %v %v", rt, err)
	}
}

// TestRemoveCgroupParentRefusesNonEmpty: while a task's cgroup exists
// under it, the parent stays (and the error says so).
func TestRemoveCgroupParentRefusesNonEmpty(t *testing.T) {
	parent := fmt.Sprintf("%s-busy", testCgroupParent)
	rt, err := NewLibcontainer(filepath.Join(t.TempDir(), "state"), nil, WithCgroupParent(parent))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	t.Cleanup(func() {
		if err := RemoveCgroupParent(parent); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	if err := RemoveCgroupParent(parent); err == nil {
		t.Fatal("parent removed under a live task")
	}
	if left := procsInCgroup(cgroupPath(parent, spec.ID)); len(left) == 0 {
		t.Errorf("task's process not in its cgroup any more")
	}
	if err := rt.Remove(context.Background(), spec.ID); err != nil {
		t.Fatal(err)
	}
}

// TestRemoveKillsStuckShim: a shim that does not leave once its container
// is gone is killed, so that it cannot write into the removed state dir.
func TestRemoveKillsStuckShim(t *testing.T) {
	rt := newRuntime(t)
	id := newID()
	if err := os.Mkdir(rt.dir(id), 0o700); err != nil {
		t.Fatal(err)
	}
	// A process that ignores SIGTERM and never exits stands for the shim.
	stuck := exec.Command(probeBin, "sleep")
	if err := stuck.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- stuck.Wait() }()
	start, _, err := procStat(stuck.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(filepath.Join(rt.dir(id), shimFile), shimOnDisk{ShimPid: stuck.Process.Pid, ShimStart: start}); err != nil {
		t.Fatal(err)
	}
	if err := rt.Remove(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("stuck shim: %v, want killed", err)
	}
	if _, err := os.Stat(rt.dir(id)); !os.IsNotExist(err) {
		t.Errorf("state dir left: %v", err)
	}
}

// TestExitedTaskFreesCgroups: once the container has exited (Wait
// returned), its cgroups and libcontainer state are gone already; only
// the task's own files wait for Remove.
func TestExitedTaskFreesCgroups(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "exit", "0"}})
	if _, err := rt.Wait(context.Background(), spec.ID); err != nil {
		t.Fatal(err)
	}
	if left := cgroupDirsLeft(spec.ID); len(left) > 0 {
		t.Errorf("cgroups of an exited task: %v", left)
	}
	if _, err := os.Stat(filepath.Join(rt.dir(spec.ID), spec.ID)); !os.IsNotExist(err) {
		t.Errorf("libcontainer state of an exited task: %v", err)
	}
	if _, err := os.Stat(filepath.Join(rt.dir(spec.ID), exitFile)); err != nil {
		t.Errorf("exit not recorded: %v", err)
	}
}
