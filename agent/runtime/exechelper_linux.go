package runtime

import (
	"bytes"
	"context"
	"encoding/json"
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

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// An exec (Exec, ExecInteractive) runs through an exec helper: shoal-shim
// started with ExecVerb from the runtime's sealed copy, which joins the
// container with libcontainer. libcontainer re-executes the binary that
// calls it as the exec'd process's init (/proc/self/exe, argv "init"):
// called from the agent that was the 40 MB shoal binary, sealed afresh
// (an overlayfs mount or a memfd copy) for every exec; called from the
// helper it is shoal-shim, from the memfd already sealed. The exec'd
// process is the helper's child; the helper is the agent's.
//
// The agent hands the helper the process's stdio as fds 5 and up (pipes, a
// memfd, or the console socket through which libcontainer passes a
// terminal's master straight to the agent) and talks to it over a stream
// socketpair, its fd 3, one JSON object a line:
//
//	agent → helper  execRequest          what to run, which fd is what
//	helper → agent  {"pid":N} or {"error":…}
//	agent → helper  {"kill":true}        kill the process and its descendants
//	helper → agent  {"exited":true,"code":…,"signal":…}
//
// The helper closes its copies of the stdio fds once the process runs, so
// the agent's readers see EOF when the process (and what it left behind)
// closes them. When the agent goes away (its end closes) the helper kills
// the process tree as if told to: an exec ends with the agent that serves
// it. The helper is the one that reaps the process, so it is also the one
// that kills it: no pid it signals can have been reused.

// ExecVerb is os.Args[1] of an exec helper (see ShimMain).
const ExecVerb = "runtime-exec"

// execReqMax bounds the request the helper reads (args and environment:
// execve's own limit is lower).
const execReqMax = 8 << 20

// execRequest is the agent's one message to a helper. Stdin, Stdout,
// Stderr and ConsoleSocket are fds in the helper, -1 for none.
type execRequest struct {
	Dir              string   `json:"dir"` // libcontainer's state: <root>/<id>/<id>'s parent
	ID               string   `json:"id"`
	Args             []string `json:"args"`
	Env              []string `json:"env"`
	Cwd              string   `json:"cwd"`
	UID              int      `json:"uid"`
	GID              int      `json:"gid"`
	AdditionalGroups []int    `json:"groups,omitempty"`
	Stdin            int      `json:"stdin"`
	Stdout           int      `json:"stdout"`
	Stderr           int      `json:"stderr"`
	ConsoleSocket    int      `json:"console_socket"`
	Rows             uint16   `json:"rows,omitempty"`
	Cols             uint16   `json:"cols,omitempty"`
}

// execMsg is every message after the request, both ways.
type execMsg struct {
	Pid    int    `json:"pid,omitempty"`
	Error  string `json:"error,omitempty"`
	Kill   bool   `json:"kill,omitempty"`
	Exited bool   `json:"exited,omitempty"`
	Code   int    `json:"code,omitempty"`
	Signal int    `json:"signal,omitempty"`
}

// execHelperFirstFd is the helper's first stdio fd (after shimConnFd and
// shimExeFd).
const execHelperFirstFd = 5

// execHelper is the agent's side of one running helper.
type execHelper struct {
	cmd  *exec.Cmd
	conn *os.File
	pid  int // the exec'd process (host pid namespace)
	// pidfd pins the exec'd process (pinChild), -1 if it could not be:
	// should the helper die without reporting the exit, the process is
	// orphaned, and the agent kills it and its descendants through it.
	pidfd int

	done   chan struct{} // closed once the exit is known
	code   int
	signal int
	err    error

	killOnce sync.Once
}

// execHelperGrace is how long a helper whose start was abandoned (ctx
// ended) has to exit on its own once its connection closes: one past
// libcontainer's Run kills what it started and exits; one still inside Run
// (joining a frozen cgroup, say, where the joining process stops) is
// killed, which ends the joining process too (its init pipe closes).
const execHelperGrace = time.Second

// startExecHelper starts a helper for req, giving it files as fds 5, 6, …
// (req names them by those numbers), and waits until the process runs, the
// helper says why it could not start it, or ctx ends (ctx.Err() then, and
// no helper left behind). The caller closes its copies of files
// afterwards.
func (r *Libcontainer) startExecHelper(ctx context.Context, req execRequest, files []*os.File) (*execHelper, error) {
	wrap := func(err error) error { return fmt.Errorf("task %q: exec %q: %w", req.ID, req.Args[0], err) }
	b, err := json.Marshal(req)
	if err != nil {
		return nil, wrap(err)
	}
	if len(b) >= execReqMax {
		return nil, wrap(fmt.Errorf("%w: arguments and environment take %d bytes, over the limit of %d", ErrInvalidArgument, len(b), execReqMax))
	}
	exe, err := r.sealedShim()
	if err != nil {
		return nil, wrap(err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, wrap(fmt.Errorf("socketpair: %w", err))
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, wrap(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "exec-conn"), os.NewFile(uintptr(fds[1]), "exec-conn")
	defer theirs.Close()
	cmd := exec.Command("/proc/self/fd/"+strconv.Itoa(shimExeFd), ExecVerb)
	cmd.Args[0] = ShimBinaryName
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), shimEnv...)
	cmd.ExtraFiles = append([]*os.File{theirs, exe}, files...)
	if err := cmd.Start(); err != nil {
		ours.Close()
		return nil, wrap(fmt.Errorf("start exec helper: %w", err))
	}
	h := &execHelper{cmd: cmd, conn: ours, pidfd: -1, done: make(chan struct{})}
	// Until the helper answers, ctx ending cuts the wait short (a deadline
	// on our end); abandoned is set under mu so that an answer read as ctx
	// ends is not taken with a deadline left on the connection.
	var (
		mu        sync.Mutex
		answered  bool
		abandoned bool
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !answered {
			abandoned = true
			_ = ours.SetDeadline(time.Now())
		}
	})
	defer stop()
	fail := func(err error) (*execHelper, error) {
		ours.Close() // the helper exits (killing what it started, if anything)
		waited := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(waited)
		}()
		if abandoned {
			select {
			case <-waited:
			case <-time.After(execHelperGrace):
				_ = cmd.Process.Kill() // not reaped yet: still the helper
				<-waited
			}
		} else {
			<-waited
		}
		h.killOrphan()
		if h.pidfd >= 0 {
			unix.Close(h.pidfd)
		}
		return nil, err
	}
	abandon := func(err error) (*execHelper, error) {
		mu.Lock()
		gone := abandoned
		mu.Unlock()
		if gone {
			return fail(wrap(ctx.Err()))
		}
		return fail(err)
	}
	if _, err := ours.Write(append(b, '\n')); err != nil {
		return abandon(wrap(fmt.Errorf("exec helper: %w", err)))
	}
	dec := json.NewDecoder(ours)
	var m execMsg
	if err := dec.Decode(&m); err != nil {
		if ctx.Err() == nil {
			// The helper ended without a word: say how.
			ours.Close()
			_ = cmd.Wait()
			return abandon(wrap(fmt.Errorf("exec helper exited before starting the process (%v; %s)", err, cmd.ProcessState)))
		}
		return abandon(wrap(fmt.Errorf("exec helper exited before starting the process (%v)", err)))
	}
	mu.Lock()
	answered = true
	late := abandoned
	mu.Unlock()
	if m.Error != "" {
		return fail(errors.New(m.Error))
	}
	h.pid = m.Pid
	h.pidfd = pinChild(m.Pid, cmd.Process.Pid)
	if late {
		// ctx ended as the answer came: the process runs, so the
		// helper kills it (the connection closing says so).
		return fail(wrap(ctx.Err()))
	}
	go h.readExit(dec)
	return h, nil
}

// readExit waits for the helper's exit message, then reaps it.
func (h *execHelper) readExit(dec *json.Decoder) {
	var m execMsg
	err := dec.Decode(&m)
	switch {
	case err != nil || !m.Exited:
		h.code, h.err = -1, fmt.Errorf("exec helper ended without the process's exit status (%v)", err)
	default:
		h.code, h.signal = m.Code, m.Signal
	}
	h.conn.Close()
	_ = h.cmd.Wait()
	if h.err != nil {
		// Say how the helper ended (a signal: killed from outside).
		h.err = fmt.Errorf("%w (helper: %s)", h.err, h.cmd.ProcessState)
		h.killOrphan()
	}
	if h.pidfd >= 0 {
		unix.Close(h.pidfd)
		h.pidfd = -1
	}
	close(h.done)
}

// pinChild returns a pidfd on pid if pid is parent's child, else -1.
// parent (the helper) is the caller's child, not yet reaped, so no other
// process has its pid: a process whose parent it is, read while the pidfd's
// process still exists (the signal 0 after the read), is the pidfd's.
func pinChild(pid, parent int) int {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1
	}
	if pp, err := ppidOf(pid); err != nil || pp != parent || unix.PidfdSendSignal(fd, 0, nil, 0) != nil {
		unix.Close(fd)
		return -1
	}
	return fd
}

// ppidOf reads pid's parent from /proc/<pid>/stat.
func ppidOf(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// comm may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad stat for %d", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, fmt.Errorf("bad stat for %d", pid)
	}
	return strconv.Atoi(f[1])
}

// killOrphan kills the exec'd process and its descendants when its helper,
// now reaped, left it running (killed before it could: kill -9, the OOM
// killer). The pidfd names the process whatever became of its pid; stopped
// through it, it can neither exit nor reap its children while killTree
// walks and kills them.
func (h *execHelper) killOrphan() {
	if h.pidfd < 0 || unix.PidfdSendSignal(h.pidfd, unix.SIGSTOP, nil, 0) != nil {
		return // not pinned, or gone
	}
	killTree(h.pid)
	_ = unix.PidfdSendSignal(h.pidfd, unix.SIGKILL, nil, 0)
}

// execKillWait bounds how long kill waits for the helper to report the
// exit (killTree itself gives up after 5 s).
const execKillWait = 10 * time.Second

// kill asks the helper to kill the process tree (once; after the exit it
// does nothing) and waits, boundedly, until the exit is known: as killTree
// did when the agent ran execs itself, it returns with the process dead, so
// that a caller closing the streams next (Close) does not let the process
// see EOF or SIGPIPE first and report that instead.
func (h *execHelper) kill() {
	h.killOnce.Do(func() {
		select {
		case <-h.done:
			return
		default:
		}
		b, _ := json.Marshal(execMsg{Kill: true})
		_, _ = h.conn.Write(append(b, '\n'))
	})
	t := time.NewTimer(execKillWait)
	defer t.Stop()
	select {
	case <-h.done:
	case <-t.C:
	}
}

// wait blocks until the exit is known.
func (h *execHelper) wait() (code, signal int, err error) {
	<-h.done
	return h.code, h.signal, h.err
}

// runExecHelper is the helper process (ShimMain with ExecVerb).
func runExecHelper() int {
	conn := os.NewFile(shimConnFd, "agent")
	unix.CloseOnExec(shimConnFd)
	unix.Close(shimExeFd) // we run from it; /proc/self/exe keeps it alive
	_ = os.WriteFile("/proc/self/comm", []byte(ShimBinaryName), 0)
	send := func(m execMsg) {
		b, _ := json.Marshal(m)
		_, _ = conn.Write(append(b, '\n'))
	}
	dec := json.NewDecoder(io.LimitReader(conn, execReqMax))
	var req execRequest
	if err := dec.Decode(&req); err != nil {
		send(execMsg{Error: fmt.Sprintf("exec helper: bad request: %v", err)})
		return 1
	}
	file := func(fd int) *os.File {
		if fd < execHelperFirstFd {
			return nil
		}
		unix.CloseOnExec(fd)
		return os.NewFile(uintptr(fd), "exec-stdio-"+strconv.Itoa(fd))
	}
	nnp := true
	lp := &libcontainer.Process{
		Args:             req.Args,
		Env:              req.Env,
		Cwd:              req.Cwd,
		UID:              req.UID,
		GID:              req.GID,
		AdditionalGroups: req.AdditionalGroups,
		NoNewPrivileges:  &nnp,
		Init:             false,
	}
	stdio := []*os.File{file(req.Stdin), file(req.Stdout), file(req.Stderr), file(req.ConsoleSocket)}
	// Assigned only when present: a nil *os.File in an io.Reader is not a
	// nil interface.
	if stdio[0] != nil {
		lp.Stdin = stdio[0]
	}
	if stdio[1] != nil {
		lp.Stdout = stdio[1]
	}
	if stdio[2] != nil {
		lp.Stderr = stdio[2]
	}
	if stdio[3] != nil {
		lp.ConsoleSocket = stdio[3]
		lp.ConsoleWidth, lp.ConsoleHeight = req.Cols, req.Rows
	}
	closeStdio := func() {
		for _, f := range stdio {
			if f != nil {
				f.Close()
			}
		}
	}
	c, err := libcontainer.Load(req.Dir, req.ID)
	if err != nil {
		closeStdio()
		send(execMsg{Error: fmt.Sprintf("task %q: load: %v", req.ID, err)})
		return 1
	}
	name := ""
	if len(req.Args) > 0 {
		name = req.Args[0]
	}
	if err := c.Run(lp); err != nil {
		closeStdio()
		send(execMsg{Error: fmt.Sprintf("task %q: exec %q: %v", req.ID, name, err)})
		return 1
	}
	// The process has its own copies now; ours would keep the agent's
	// readers from seeing EOF.
	closeStdio()
	pid, _ := lp.Pid()
	send(execMsg{Pid: pid})

	var (
		mu     sync.Mutex
		reaped bool
	)
	killed := make(chan struct{})
	go func() {
		// Any message is a kill; so is the agent's end closing.
		var m execMsg
		_ = dec.Decode(&m)
		mu.Lock()
		if !reaped {
			killTree(pid)
		}
		mu.Unlock()
		close(killed)
	}()
	// Wait for the exit without reaping, then mark it reaped under mu, then
	// reap: a kill holding mu signals a pid that is still ours.
	var si unix.Siginfo
	for {
		if err := unix.Waitid(unix.P_PID, pid, &si, unix.WEXITED|unix.WNOWAIT, nil); err != unix.EINTR {
			break
		}
	}
	mu.Lock()
	reaped = true
	mu.Unlock()
	ps, werr := lp.Wait()
	if ps == nil {
		var ee *exec.ExitError
		if errors.As(werr, &ee) {
			ps = ee.ProcessState
		}
	}
	out := execMsg{Exited: true, Code: -1}
	if ps != nil {
		out.Code = ps.ExitCode()
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			out.Signal = int(ws.Signal())
			out.Code = 128 + out.Signal
		}
	}
	send(out)
	select {
	case <-killed:
	default:
	}
	return 0
}
