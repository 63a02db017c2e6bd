package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// collector gathers what a reader yields until EOF.
type collector struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
}

func collect(r io.Reader) *collector {
	c := &collector{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		b := make([]byte, 1024)
		for {
			n, err := r.Read(b)
			c.mu.Lock()
			c.buf.Write(b[:n])
			c.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return c
}

func (c *collector) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// waitFor polls until the output contains want.
func (c *collector) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(c.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the output within 20s: %q", want, c.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// all waits for EOF and returns everything.
func (c *collector) all(t *testing.T) string {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("no EOF within 20s; so far %q", c.String())
	}
	return c.String()
}

func execRun(t *testing.T, rt *Libcontainer, id string, opts ExecOptions) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := rt.ExecInteractive(ctx, id, opts)
	if err != nil {
		t.Fatalf("exec %q: %v", opts.Args, err)
	}
	defer p.Close()
	out := collect(p.Stdout)
	var errc *collector
	if p.Stderr != nil {
		errc = collect(p.Stderr)
	}
	code, _, err = p.Wait()
	if err != nil {
		t.Fatalf("exec %q: wait: %v", opts.Args, err)
	}
	stdout = out.all(t)
	if errc != nil {
		stderr = errc.all(t)
	}
	return code, stdout, stderr
}

// TestExecInteractive: stdin reaches the process and its output comes
// back on separate streams; the exit code is returned; it runs as the
// task's user, in its working directory, with its environment plus what
// the caller adds, unless the caller overrides user and directory.
func TestExecInteractive(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}, Env: []string{"APP=1", "MODE=a"}, User: "app", Cwd: "/bin"})
	running(t, rt, spec.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// stdin round trip, closing stdin for EOF.
	p, err := rt.ExecInteractive(ctx, spec.ID, ExecOptions{Args: []string{"/bin/probe", "cat"}, Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	out := collect(p.Stdout)
	if _, err := p.Stdin.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "ping\n")
	if _, err := p.Stdin.Write([]byte("pong\n")); err != nil {
		t.Fatal(err)
	}
	p.Stdin.Close()
	if code, _, err := p.Wait(); err != nil || code != 0 {
		t.Fatalf("cat: code %d err %v", code, err)
	}
	if got := out.all(t); got != "ping\npong\n" {
		t.Fatalf("cat echoed %q", got)
	}
	p.Close()

	if code, _, _ := execRun(t, rt, spec.ID, ExecOptions{Args: []string{"/bin/probe", "exit", "3"}}); code != 3 {
		t.Fatalf("exit 3: code %d", code)
	}
	code, stdout, stderr := execRun(t, rt, spec.ID, ExecOptions{Args: []string{"/bin/probe", "echo"}})
	if code != 0 || stdout != "hello stdout\n" || stderr != "hello stderr\n" {
		t.Fatalf("echo: code %d stdout %q stderr %q", code, stdout, stderr)
	}
	if _, stdout, _ := execRun(t, rt, spec.ID, ExecOptions{Args: []string{"/bin/probe", "whoami"}}); stdout != "uid=1000 gid=1000 cwd=/bin\n" {
		t.Fatalf("as the task: %q", stdout)
	}
	if _, stdout, _ := execRun(t, rt, spec.ID, ExecOptions{Args: []string{"/bin/probe", "whoami"}, User: "0", Cwd: "/tmp"}); stdout != "uid=0 gid=0 cwd=/tmp\n" {
		t.Fatalf("-u 0 -w /tmp: %q", stdout)
	}
	_, stdout, _ = execRun(t, rt, spec.ID, ExecOptions{Args: []string{"/bin/probe", "env"}, Env: []string{"MODE=b", "EXTRA=x"}})
	env := strings.Split(strings.TrimSpace(stdout), "\n")
	for _, want := range []string{"APP=1", "MODE=b", "EXTRA=x", "HOME=/home/app"} {
		if !slices.Contains(env, want) {
			t.Errorf("env lacks %s: %q", want, env)
		}
	}
	if slices.Contains(env, "MODE=a") {
		t.Errorf("env kept the replaced MODE=a: %q", env)
	}
	if _, err := rt.ExecInteractive(ctx, spec.ID, ExecOptions{Args: []string{"/bin/probe"}, Env: []string{"=x"}}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("env without a key: %v", err)
	}
}

// TestExecTTY: with TTY the process runs on a terminal of the container's
// own devpts, of the size asked for; a resize reaches it; typed input
// arrives through the terminal; output uses terminal line endings.
func TestExecTTY(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	running(t, rt, spec.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := rt.ExecInteractive(ctx, spec.ID, ExecOptions{Args: []string{"/bin/probe", "ttywatch"}, TTY: true, Stdin: true, Rows: 24, Cols: 80})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Stderr != nil {
		t.Error("a terminal exec has a separate stderr")
	}
	out := collect(p.Stdout)
	out.waitFor(t, "size=24x80\r\n")
	if !strings.Contains(out.String(), "tty=/dev/pts/") {
		t.Fatalf("not on a terminal of the container's devpts: %q", out.String())
	}
	if err := p.Resize(40, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Stdin.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "size=40x100\r\n")
	if _, err := p.Stdin.Write([]byte("q\n")); err != nil {
		t.Fatal(err)
	}
	if code, _, err := p.Wait(); err != nil || code != 0 {
		t.Fatalf("ttywatch: code %d err %v", code, err)
	}

	// Closing a terminal's input is an EOF to the reader, not a hang-up:
	// cat ends by itself, its output complete.
	p, err = rt.ExecInteractive(ctx, spec.ID, ExecOptions{Args: []string{"/bin/probe", "cat"}, TTY: true, Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out = collect(p.Stdout)
	if _, err := p.Stdin.Write([]byte("abc\n")); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "abc\r\nabc\r\n") // the terminal's echo, then cat's
	if err := p.Stdin.Close(); err != nil {
		t.Fatal(err)
	}
	if code, sig, err := p.Wait(); err != nil || code != 0 || sig != 0 {
		t.Fatalf("cat on a terminal after ^D: code %d signal %d err %v", code, sig, err)
	}
}

// TestExecKilledWithContext: when the caller goes away the process and
// what it started are killed; the container stays.
func TestExecKilledWithContext(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	st := running(t, rt, spec.ID)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := rt.ExecInteractive(ctx, spec.ID, ExecOptions{Args: []string{"/bin/probe", "sleeptree"}, TTY: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out := collect(p.Stdout)
	out.waitFor(t, "tree started")
	cancel()
	if code, sig, err := p.Wait(); err != nil || code != 137 || sig != 9 {
		t.Fatalf("killed exec: code %d signal %d err %v", code, sig, err)
	}
	// A killed process leaves the cgroup once it is reaped, which may be a
	// moment after Wait returns (a grandchild is its own parent's to reap):
	// poll with a deadline rather than look once.
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := cgroupProcs(t, spec.ID)
		if slices.Equal(left, []int{st.Pid}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the killed exec the cgroup holds %v, want only init %d", left, st.Pid)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	running(t, rt, spec.ID)
}

func TestExecInteractiveNotRunning(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	if _, err := rt.ExecInteractive(ctx, "rt-unknown-task", ExecOptions{Args: []string{"/bin/probe", "true"}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown task: %v", err)
	}
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "exit", "0"}})
	waitExit(t, rt, spec.ID)
	if _, err := rt.ExecInteractive(ctx, spec.ID, ExecOptions{Args: []string{"/bin/probe", "true"}}); err == nil {
		t.Fatal("exec in an exited container must fail")
	}
}

// TestExecThroughShim: an exec'd process is the child of an exec helper
// that is shoal-shim run from the runtime's sealed memfd (so shoal-shim,
// not the caller's binary, was its libcontainer init), and the helper is
// the caller's child; Exec (health checks) goes the same way. A missing or
// foreign shim binary refuses the exec with the reason.
func TestExecThroughShim(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	running(t, rt, spec.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := rt.ExecInteractive(ctx, spec.ID, ExecOptions{Args: []string{"/bin/probe", "sleep"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	helper, _ := strconv.Atoi(procStatus(t, p.Pid(), "PPid"))
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", helper))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(exe, "/memfd:") || !strings.Contains(exe, ShimBinaryName) {
		t.Errorf("the exec's parent %d runs %q, want the sealed %s memfd", helper, exe, ShimBinaryName)
	}
	if comm := readTrim(t, fmt.Sprintf("/proc/%d/comm", helper)); comm != ShimBinaryName {
		t.Errorf("the exec's parent is %q, want %s", comm, ShimBinaryName)
	}
	if pp, _ := strconv.Atoi(procStatus(t, helper, "PPid")); pp != os.Getpid() {
		t.Errorf("the helper's parent is %d, want the caller %d", pp, os.Getpid())
	}
	p.Close()
	if code, sig, err := p.Wait(); err != nil || sig != 9 || code != 137 {
		t.Fatalf("closed exec: code %d signal %d err %v", code, sig, err)
	}

	// A probe (Exec) has a helper for its parent too.
	st := running(t, rt, spec.ID)
	pctx, pcancel := context.WithCancel(ctx)
	probeErr := make(chan error, 1)
	go func() {
		_, _, err := rt.Exec(pctx, spec.ID, []string{"/bin/probe", "sleep"})
		probeErr <- err
	}()
	probe := 0
	deadline := time.Now().Add(20 * time.Second)
	for probe == 0 {
		for _, pid := range cgroupProcs(t, spec.ID) {
			if pid != st.Pid {
				probe = pid
			}
		}
		if probe == 0 && time.Now().After(deadline) {
			t.Fatal("the probe never appeared in the task's cgroup")
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	helper, _ = strconv.Atoi(procStatus(t, probe, "PPid"))
	if comm := readTrim(t, fmt.Sprintf("/proc/%d/comm", helper)); comm != ShimBinaryName {
		t.Errorf("the probe's parent is %q, want %s", comm, ShimBinaryName)
	}
	pcancel()
	if err := <-probeErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled probe: %v", err)
	}

	// The helper's refusal comes back with libcontainer's reason.
	if _, err := rt.ExecInteractive(ctx, spec.ID, ExecOptions{Args: []string{"/bin/nope"}}); err == nil ||
		!strings.Contains(err.Error(), `exec "/bin/nope"`) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing command: %v", err)
	}

	for _, tc := range []struct {
		bin, want string
	}{
		{"/nonexistent/" + ShimBinaryName, "missing or not executable"},
		{probeBin, "not of " + shimPackage},
	} {
		other, err := NewLibcontainer(rt.root, nil, WithShimBinary(tc.bin), WithSpareShim(false), WithCgroupParent(testCgroupParent))
		if err != nil {
			t.Fatal(err)
		}
		_, err = other.ExecInteractive(ctx, spec.ID, ExecOptions{Args: []string{"/bin/probe", "true"}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("shim %s: %v, want an error saying %q", tc.bin, err, tc.want)
		}
		if _, _, err := other.Exec(ctx, spec.ID, []string{"/bin/probe", "true"}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("probe with shim %s: %v, want an error saying %q", tc.bin, err, tc.want)
		}
		other.Close()
	}
}

// TestExecEndsWithItsAgent: when the agent's end of the helper's
// connection closes without a word (the agent died), the helper kills the
// process and what it started: the container's cgroup holds its init
// alone again, and the helper exits.
func TestExecEndsWithItsAgent(t *testing.T) {
	p, wantTreeGone := startTreeExec(t)
	p.helper.conn.Close() // as the agent's death closes it
	if code, _, err := p.Wait(); err == nil || code != -1 {
		t.Fatalf("a helper cut off reports code %d, err %v; want -1 and an error", code, err)
	}
	wantTreeGone(10*time.Second, "its agent left")
}

// startTreeExec starts a container and, in it, an exec of a process tree
// (`probe sleeptree`) through the exec helper, and waits until the tree
// runs. wantTreeGone(within, after) fails the test unless, within that
// time, the container's cgroup holds its init alone again.
func startTreeExec(t *testing.T) (p *ExecProcess, wantTreeGone func(within time.Duration, after string)) {
	t.Helper()
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	st := running(t, rt, spec.ID)
	p, err := rt.ExecInteractive(context.Background(), spec.ID, ExecOptions{Args: []string{"/bin/probe", "sleeptree"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	collect(p.Stdout).waitFor(t, "tree started")
	return p, func(within time.Duration, after string) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !slices.Equal(cgroupProcs(t, spec.ID), []int{st.Pid}) {
			if time.Now().After(deadline) {
				t.Fatalf("%v after %s the exec's tree is still there: %v", within, after, cgroupProcs(t, spec.ID))
			}
			time.Sleep(20 * time.Millisecond) // poll interval
		}
	}
}

// BenchmarkExecInteractive: start, run and reap `probe true` in a running
// container with pipes (the cost of a `task exec` on the node).
func BenchmarkExecInteractive(b *testing.B) {
	rt := newRuntime(b)
	spec, _ := start(b, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	running(b, rt, spec.ID)
	ctx := context.Background()
	for b.Loop() {
		p, err := rt.ExecInteractive(ctx, spec.ID, ExecOptions{Args: []string{"/bin/probe", "true"}})
		if err != nil {
			b.Fatal(err)
		}
		if code, _, err := p.Wait(); err != nil || code != 0 {
			b.Fatalf("code %d err %v", code, err)
		}
		p.Close()
	}
}

// BenchmarkExecLatency: `probe echo` in a running container, 50 runs a
// round: from the call to ExecInteractive to its return (created), to the
// first byte of output, and to the exit (Wait); medians in ms. The
// figures of the README's exec row come from it.
func BenchmarkExecLatency(b *testing.B) {
	rt := newRuntime(b)
	spec, _ := start(b, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	running(b, rt, spec.ID)
	ctx := context.Background()
	const runs = 50
	var created, first, exited []time.Duration
	for b.Loop() {
		for range runs {
			t0 := time.Now()
			p, err := rt.ExecInteractive(ctx, spec.ID, ExecOptions{Args: []string{"/bin/probe", "echo"}})
			if err != nil {
				b.Fatal(err)
			}
			created = append(created, time.Since(t0))
			one := make([]byte, 1)
			if _, err := io.ReadFull(p.Stdout, one); err != nil {
				b.Fatal(err)
			}
			first = append(first, time.Since(t0))
			if code, _, err := p.Wait(); err != nil || code != 0 {
				b.Fatalf("code %d err %v", code, err)
			}
			exited = append(exited, time.Since(t0))
			p.Close()
		}
	}
	median := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2]) / float64(time.Millisecond)
	}
	b.ReportMetric(median(created), "ms-created")
	b.ReportMetric(median(first), "ms-first-output")
	b.ReportMetric(median(exited), "ms-exited")
}
