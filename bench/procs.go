package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one child process started by the benchmark (a shoal node or an
// etcd member). It runs in its own process group, so that killing it never
// reaches anything the benchmark did not start, and its stdout and stderr go
// to a log file (appended to across restarts).
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	err     error         // exit status; valid after done is closed
	started time.Time
}

// exited reports whether the process has ended, with its exit error.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// supervisor keeps track of every process the benchmark started so that
// all of them are killed however the benchmark ends.
type supervisor struct {
	mu    sync.Mutex // guards procs
	procs map[*proc]struct{}
}

func newSupervisor() *supervisor {
	return &supervisor{procs: map[*proc]struct{}{}}
}

// start runs bin with args. Output goes to logPath; when capture is not nil
// stdout is copied there too (shoal init prints its join tokens).
func (s *supervisor) start(name, logPath string, capture io.Writer, bin string, args ...string) (*proc, error) {
	return s.startEnv(name, logPath, capture, nil, bin, args...)
}

// startEnv is start with extra environment variables (KEY=VALUE).
func (s *supervisor) startEnv(name, logPath string, capture io.Writer, extraEnv []string, bin string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "==== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = append(childEnv(), extraEnv...)
	cmd.Stderr = logf
	cmd.Stdout = logf
	if capture != nil {
		cmd.Stdout = io.MultiWriter(logf, capture)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// Best effort for the case where the benchmark itself is killed
		// with SIGKILL and cannot clean up.
		Pdeathsig: syscall.SIGKILL,
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.procs == nil {
		logf.Close()
		return nil, errors.New("supervisor is shut down")
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p.started = time.Now()
	s.procs[p] = struct{}{}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
		s.mu.Lock()
		if s.procs != nil {
			delete(s.procs, p)
		}
		s.mu.Unlock()
	}()
	return p, nil
}

// kill sends SIGKILL to the process's group (the group was created for
// this process alone) and waits for it to be reaped.
func (s *supervisor) kill(p *proc) error {
	if p == nil {
		return nil
	}
	if done, _ := p.exited(); done {
		return nil
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill -9 %s (pid %d): %w", p.name, p.cmd.Process.Pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) did not exit 10s after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// killAll kills every process still running and refuses new ones.
func (s *supervisor) killAll() {
	s.mu.Lock()
	var ps []*proc
	for p := range s.procs {
		ps = append(ps, p)
	}
	s.procs = nil
	s.mu.Unlock()
	for _, p := range ps {
		if err := s.kill(p); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
	}
}

// childEnv is the benchmark's environment without SHOAL_* variables, so
// that an operator's exported SHOAL_HOST or SHOAL_DATA_DIR cannot point a
// benchmark node at another cluster.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SHOAL_") || strings.HasPrefix(kv, "SHOAL_DEBUG_ADDR=") || strings.HasPrefix(kv, "SHOAL_METRICS=") {
			env = append(env, kv)
		}
	}
	return env
}

// tail returns the last n lines of a file (for error reports).
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	b = bytes.TrimRight(b, "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// syncBuffer is a bytes.Buffer safe for one writer (exec's copy goroutine)
// and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// clockTicks is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const clockTicks = 100

// procsCPU returns the CPU time (user + system) the processes have used so
// far; a process that is gone counts 0.
// procsCPUEach is procsCPU process by process, in the order given.
func procsCPUEach(ps ...*proc) []time.Duration {
	out := make([]time.Duration, len(ps))
	for i, p := range ps {
		out[i] = procsCPU(p)
	}
	return out
}

func procsCPU(ps ...*proc) time.Duration {
	var total time.Duration
	for _, p := range ps {
		if p == nil || p.cmd == nil || p.cmd.Process == nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
		if err != nil {
			continue
		}
		total += statCPU(string(b))
	}
	return total
}

// statCPU parses utime + stime out of a /proc/PID/stat line. The command
// name (field 2) is in parentheses and may hold spaces, so fields are
// counted from the last ')'.
func statCPU(stat string) time.Duration {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(ut+st) * time.Second / clockTicks
}
