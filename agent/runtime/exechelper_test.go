package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// helperChildren lists this process's children running the exec helper.
func helperChildren(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), ExecVerb) {
			continue
		}
		if _, state, err := procStat(pid); err != nil || state == 'Z' || state == 'X' {
			continue
		}
		if pp, _ := strconv.Atoi(procStatusOrEmpty(pid, "PPid")); pp == os.Getpid() {
			out = append(out, pid)
		}
	}
	return out
}

func procStatusOrEmpty(pid int, field string) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestExecStartHonoursContext: an exec into a container whose cgroup is
// frozen cannot start (the joining process stops in the cgroup). A probe's
// deadline must still end it: Exec returns the context's error, and no
// helper is left behind; once thawed, nothing of the exec runs in the
// container and execs work again. Before, the agent waited for the
// helper's answer without regard to ctx: a probe hung as long as the
// freeze lasted.
func TestExecStartHonoursContext(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	st := running(t, rt, spec.ID)
	dirs, err := taskCgroupDirs(testCgroupParent, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	var freeze, thaw func() error
	for _, d := range dirs {
		if strings.Contains(d, "/freezer/") {
			f := filepath.Join(d, "freezer.state")
			freeze = func() error { return os.WriteFile(f, []byte("FROZEN"), 0) }
			thaw = func() error { return os.WriteFile(f, []byte("THAWED"), 0) }
		} else if _, err := os.Stat(filepath.Join(d, "cgroup.freeze")); err == nil && freeze == nil {
			f := filepath.Join(d, "cgroup.freeze")
			freeze = func() error { return os.WriteFile(f, []byte("1"), 0) }
			thaw = func() error { return os.WriteFile(f, []byte("0"), 0) }
		}
	}
	if freeze == nil {
		t.Fatalf("no freezer for the task's cgroups %v", dirs)
	}
	before := helperChildren(t)
	if err := freeze(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = thaw() })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, _, err := rt.Exec(ctx, spec.ID, []string{"/bin/probe", "exit", "0"})
		done <- result{code, err}
	}()
	select {
	case r := <-done:
		if !errors.Is(r.err, context.DeadlineExceeded) || r.code != -1 {
			t.Fatalf("exec into a frozen container: code %d err %v; want -1 and the deadline's error", r.code, r.err)
		}
	case <-time.After(60 * time.Second):
		_ = thaw()
		t.Fatal("exec into a frozen container ignored its context's deadline")
	}
	if left := helperChildren(t); !slices.Equal(left, before) {
		t.Fatalf("exec helpers left behind: %v (before %v)", left, before)
	}

	if err := thaw(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Equal(cgroupProcs(t, spec.ID), []int{st.Pid}) {
		if time.Now().After(deadline) {
			t.Fatalf("after the thaw the cgroup holds %v, want only init %d", cgroupProcs(t, spec.ID), st.Pid)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	octx, ocancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ocancel()
	if code, out, err := rt.Exec(octx, spec.ID, []string{"/bin/probe", "exit", "0"}); err != nil || code != 0 {
		t.Fatalf("exec after the thaw: code %d err %v out %q", code, err, out)
	}
}

// TestExecRequestTooBig: arguments and environment over what the helper
// reads are refused before anything starts, saying so (before, the
// helper's refusal was lost and the exec failed with a broken pipe).
func TestExecRequestTooBig(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	running(t, rt, spec.ID)
	before := helperChildren(t)
	big := "BIG=" + strings.Repeat("x", execReqMax)
	_, err := rt.ExecInteractive(context.Background(), spec.ID, ExecOptions{Args: []string{"/bin/probe", "true"}, Env: []string{big}})
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("a %d-byte environment: %v", len(big), err)
	}
	if len(err.Error()) > 300 {
		t.Fatalf("the error carries the request: %d bytes", len(err.Error()))
	}
	if left := helperChildren(t); !slices.Equal(left, before) {
		t.Fatalf("exec helpers left behind: %v", left)
	}
}

// TestExecCloseKillsFirst: Close kills the process before it closes the
// streams, as it did before execs went through the helper: a process
// reading its stdin (cat) is reported killed (137, SIGKILL), not as having
// seen EOF and exited 0 (or died of SIGPIPE writing to a closed stdout).
// Kill returns once the process is dead.
func TestExecCloseKillsFirst(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	running(t, rt, spec.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 5 {
		p, err := rt.ExecInteractive(ctx, spec.ID, ExecOptions{Args: []string{"/bin/probe", "cat"}, Stdin: true})
		if err != nil {
			t.Fatal(err)
		}
		p.Close()
		if code, sig, err := p.Wait(); err != nil || sig != 9 || code != 137 {
			t.Fatalf("exec %d closed: code %d signal %d err %v; want 137, SIGKILL", i, code, sig, err)
		}
		q, err := rt.ExecInteractive(ctx, spec.ID, ExecOptions{Args: []string{"/bin/probe", "sleep"}})
		if err != nil {
			t.Fatal(err)
		}
		q.Kill()
		select {
		case <-q.Done():
		default:
			t.Fatalf("exec %d: Kill returned before the process was dead", i)
		}
		q.Close()
	}
}

// TestExecHelperKilled: a helper killed mid-exec (kill -9, the OOM killer)
// cannot kill what it started; the agent does: the exec reports -1 and
// why, and the process and what it started are gone from the container
// (they were left running, reparented, for as long as the container ran).
func TestExecHelperKilled(t *testing.T) {
	p, wantTreeGone := startTreeExec(t)
	if err := p.helper.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if code, _, err := p.Wait(); err == nil || code != -1 || !strings.Contains(err.Error(), "exec helper") || !strings.Contains(err.Error(), "signal: killed") {
		t.Fatalf("a killed helper reports code %d, err %v; want -1 and an error naming the helper and its signal", code, err)
	}
	wantTreeGone(20*time.Second, "its helper was killed")
}
