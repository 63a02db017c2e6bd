package runtime

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cgroupProcs lists the live (not zombie) processes in the task's
// cgroups (every hierarchy).
func cgroupProcs(t *testing.T, id string) []int {
	t.Helper()
	dirs, err := taskCgroupDirs(testCgroupParent, id)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			p, err := strconv.Atoi(f)
			if err != nil || slices.Contains(pids, p) {
				continue
			}
			if _, state, err := procStat(p); err == nil && state != 'Z' && state != 'X' {
				pids = append(pids, p)
			}
		}
	}
	return pids
}

func TestExecProbe(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}, Env: []string{"HEALTH_TOKEN=t1"}, User: "app"})
	st := running(t, rt, spec.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	code, out, err := rt.Exec(ctx, spec.ID, []string{"/bin/probe", "exit", "0"})
	if err != nil || code != 0 {
		t.Fatalf("healthy: code %d err %v out %q", code, err, out)
	}
	code, out, err = rt.Exec(ctx, spec.ID, []string{"/bin/probe", "echo"})
	if err != nil || code != 0 || !strings.Contains(string(out), "hello stdout") || !strings.Contains(string(out), "hello stderr") {
		t.Fatalf("output: code %d err %v out %q", code, err, out)
	}
	code, _, err = rt.Exec(ctx, spec.ID, []string{"/bin/probe", "exit", "3"})
	if err != nil || code != 3 {
		t.Fatalf("unhealthy: code %d err %v", code, err)
	}
	// It runs as the container's process does: its user, environment
	// and namespaces.
	code, out, err = rt.Exec(ctx, spec.ID, []string{"/bin/probe", "env"})
	if err != nil || code != 0 || !strings.Contains(string(out), "HEALTH_TOKEN=t1") {
		t.Fatalf("env: code %d err %v out %q", code, err, out)
	}
	if _, _, err := rt.Exec(ctx, spec.ID, []string{"/bin/nope"}); err == nil {
		t.Fatal("a missing binary must fail")
	}

	// A probe that outlives its deadline is killed with what it started.
	before := cgroupProcs(t, spec.ID)
	if !slices.Equal(before, []int{st.Pid}) {
		t.Fatalf("before the probe the cgroup holds %v, want only init %d", before, st.Pid)
	}
	pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	code, out, err = rt.Exec(pctx, spec.ID, []string{"/bin/probe", "sleeptree"})
	pcancel()
	if err != context.DeadlineExceeded || code != -1 || !strings.Contains(string(out), "tree started") {
		t.Fatalf("timeout: code %d err %v out %q", code, err, out)
	}
	if left := cgroupProcs(t, spec.ID); !slices.Equal(left, []int{st.Pid}) {
		t.Fatalf("after the timed-out probe the cgroup holds %v, want only init %d", left, st.Pid)
	}
	running(t, rt, spec.ID) // the container itself is untouched
}

func TestExecNotRunning(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	if _, _, err := rt.Exec(ctx, "rt-unknown-task", []string{"/bin/probe", "true"}); err == nil {
		t.Fatal("exec in an unknown task must fail")
	}
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "exit", "0"}})
	waitExit(t, rt, spec.ID)
	if _, _, err := rt.Exec(ctx, spec.ID, []string{"/bin/probe", "true"}); err == nil {
		t.Fatal("exec in an exited container must fail")
	}
}
