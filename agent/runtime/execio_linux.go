package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
	"golang.org/x/sys/unix"
)

// ExecOptions describe an interactive exec (`shoal task exec`).
type ExecOptions struct {
	Args []string
	// Env is added to the task's environment (KEY=VALUE; a key already
	// set is replaced).
	Env []string
	// User and Cwd: empty means the task's.
	User string
	Cwd  string
	// TTY runs the process on a new terminal of the container's devpts
	// (stdout and stderr both on it); Rows and Cols are its first size.
	TTY        bool
	Rows, Cols uint16
	// Stdin gives the process a stdin the caller writes to; without it
	// the process reads /dev/null (or, with TTY, a terminal nobody types
	// on).
	Stdin bool
}

// ExecProcess is a process started by ExecInteractive. The caller reads
// Stdout (and Stderr) until EOF, writes Stdin, and calls Wait; Close
// releases everything and kills the process if it still runs.
type ExecProcess struct {
	// Stdin is nil unless ExecOptions.Stdin. Close it for EOF (with TTY:
	// the terminal's EOF character, ^D).
	Stdin io.WriteCloser
	// Stdout is the terminal with TTY. Both reach EOF when the process
	// and whatever it left behind have closed them, or once Close was
	// called (then an os.ErrClosed or deadline error).
	Stdout io.Reader
	// Stderr is nil with TTY.
	Stderr io.Reader

	pid     int
	helper  *execHelper // the process's parent (exechelper_linux.go)
	console *os.File    // TTY master
	files   []*os.File
	done    chan struct{}
	close   sync.Once
}

// ExecInteractive runs opts.Args inside task id's running container as
// Exec does (namespaces, cgroup, capabilities, no-new-privileges, the
// task's user, environment and working directory unless overridden), with
// streams the caller drives. The process is a child of an exec helper
// (shoal-shim, exechelper_linux.go) that is the caller's child, not the
// task shim's: it ends when its caller goes away, as an exec should. When
// ctx ends the process and its descendants are killed.
func (r *Libcontainer) ExecInteractive(ctx context.Context, id string, opts ExecOptions) (_ *ExecProcess, err error) {
	if !validID(id) {
		return nil, fmt.Errorf("%w: task id %q", ErrInvalidArgument, id)
	}
	if len(opts.Args) == 0 || opts.Args[0] == "" {
		return nil, fmt.Errorf("%w: task %q: exec without a command", ErrInvalidArgument, id)
	}
	for _, e := range opts.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return nil, fmt.Errorf("%w: env %q: want KEY=VALUE", ErrInvalidArgument, e)
		}
	}
	dir := r.dir(id)
	var sd specOnDisk
	if err := readJSON(filepath.Join(dir, specFile), &sd); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("task %q: %w", id, ErrNotFound)
		}
		return nil, fmt.Errorf("task %q: %w", id, err)
	}
	c, err := libcontainer.Load(dir, id)
	if err != nil {
		return nil, fmt.Errorf("task %q: load: %w", id, err)
	}
	if st, err := c.Status(); err != nil || st != libcontainer.Running {
		return nil, fmt.Errorf("%w: task %q: its container is not running (%v)", ErrNotRunning, id, st)
	}
	spec := sd.Spec
	userSpec := spec.User
	if opts.User != "" {
		userSpec = opts.User
	}
	u, err := resolveUser(spec.Rootfs, userSpec)
	if err != nil {
		return nil, err
	}
	env := mergeEnv(containerEnv(spec.Env, u.Home), opts.Env)
	if opts.TTY {
		env = mergeEnv([]string{"TERM=xterm"}, env)
	}
	cwd := spec.Cwd
	if opts.Cwd != "" {
		cwd = opts.Cwd
	}
	if cwd == "" {
		cwd = "/"
	}
	req := execRequest{
		Dir: dir, ID: id, Args: opts.Args, Env: env, Cwd: cwd,
		UID: u.Uid, GID: u.Gid, AdditionalGroups: u.Sgids,
		Stdin: -1, Stdout: -1, Stderr: -1, ConsoleSocket: -1,
	}
	p := &ExecProcess{}
	defer func() {
		if err != nil {
			p.closeFiles()
		}
	}()
	// ours are kept by p (closed by Close); theirs are the process's
	// ends, handed to the helper as fds 5, 6, … and closed here once it
	// has them.
	var theirs []*os.File
	defer func() {
		for _, f := range theirs {
			f.Close()
		}
	}()
	give := func(f *os.File) int {
		theirs = append(theirs, f)
		return execHelperFirstFd + len(theirs) - 1
	}
	if opts.Stdin && !opts.TTY {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		p.files = append(p.files, w)
		req.Stdin, p.Stdin = give(r), w
	}
	var sock *os.File
	if opts.TTY {
		parent, child, err := utils.NewSockPair("console")
		if err != nil {
			return nil, err
		}
		sock = parent
		p.files = append(p.files, parent)
		req.ConsoleSocket = give(child)
		req.Cols, req.Rows = opts.Cols, opts.Rows
	} else {
		or, ow, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		p.files = append(p.files, or)
		req.Stdout, p.Stdout = give(ow), or
		er, ew, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		p.files = append(p.files, er)
		req.Stderr, p.Stderr = give(ew), er
	}
	h, err := r.startExecHelper(ctx, req, theirs)
	if err != nil {
		return nil, err
	}
	p.helper, p.pid, p.done = h, h.pid, h.done
	if opts.TTY {
		m, err := recvConsole(sock)
		if err != nil {
			h.kill()
			_, _, _ = h.wait()
			return nil, fmt.Errorf("task %q: exec %q: terminal: %w", id, opts.Args[0], err)
		}
		p.console = m
		p.files = append(p.files, m)
		p.Stdout = m
		if opts.Stdin {
			// Typed input goes to the terminal (libcontainer gave the
			// process the terminal as 0, 1 and 2).
			p.Stdin = ttyInput{m}
		}
	}
	go func() {
		select {
		case <-ctx.Done():
			p.Kill()
		case <-p.done:
		}
	}()
	return p, nil
}

// ttyInput is the input side of a terminal: closing it types the EOF
// character (^D) rather than closing the terminal, which would hang it up
// under the process and lose the rest of its output.
type ttyInput struct{ f *os.File }

func (t ttyInput) Write(b []byte) (int, error) { return t.f.Write(b) }

func (t ttyInput) Close() error {
	_, err := t.f.Write([]byte{4})
	return err
}

// ErrNotRunning is returned by ExecInteractive for a task whose
// container does not run (exited, or not yet started).
var ErrNotRunning = errors.New("not running")

// recvConsole receives the terminal's master end from the container and
// makes it pollable, so that reads can be given deadlines and unblocked
// by Close.
func recvConsole(sock *os.File) (*os.File, error) {
	f, err := utils.RecvFile(sock)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, err
	}
	return os.NewFile(uintptr(nfd), "exec-console"), nil
}

// Pid is the process's pid (host pid namespace).
func (p *ExecProcess) Pid() int { return p.pid }

// Done is closed once the process has exited.
func (p *ExecProcess) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit code (128+n
// when killed by signal n) and the signal (0 if none).
func (p *ExecProcess) Wait() (code, signal int, err error) {
	return p.helper.wait()
}

// Resize sets the terminal's size (TIOCSWINSZ; the process gets a
// SIGWINCH). Without TTY it does nothing.
func (p *ExecProcess) Resize(rows, cols uint16) error {
	if p.console == nil {
		return nil
	}
	rc, err := p.console.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}); err != nil {
		return err
	}
	return ierr
}

// Kill kills the process and its descendants, unless it has exited.
func (p *ExecProcess) Kill() {
	// The helper, its parent, kills it and its descendants (and reaps
	// it): it alone knows the pid is still the process's.
	p.helper.kill()
}

// Close kills the process if it still runs and closes every stream, which
// unblocks readers and writers.
func (p *ExecProcess) Close() error {
	p.close.Do(func() {
		p.Kill()
		p.closeFiles()
	})
	return nil
}

func (p *ExecProcess) closeFiles() {
	for _, f := range p.files {
		f.Close()
	}
}

// mergeEnv returns base with add applied: a key in add replaces base's.
func mergeEnv(base, add []string) []string {
	out := append([]string(nil), base...)
	for _, e := range add {
		k, _, _ := strings.Cut(e, "=")
		replaced := false
		for i, b := range out {
			if bk, _, _ := strings.Cut(b, "="); bk == k {
				out[i] = e
				replaced = true
				break
			}
		}
		if !replaced {
			out = append(out, e)
		}
	}
	return out
}
