package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"golang.org/x/sys/unix"

	// The cgroup manager can only set device rules with this imported.
	_ "github.com/opencontainers/cgroups/devices"
	// nsenter's C constructor runs the early part of the container init.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

// ShimVerb is os.Args[1] of a shim process (see MaybeInit).
const ShimVerb = "runtime-shim"

// Files in a task's state dir <root>/<id>/. libcontainer's own state is
// in <root>/<id>/<id>/.
const (
	specFile = "spec.json" // written by the agent: what to run
	shimFile = "shim.json" // written by the shim: pids
	exitFile = "exit.json" // written by the shim: how it ended
	shimLog  = "shim.log"  // the shim's own stderr
)

// MaybeInit must be the first thing main does. If this process is
// libcontainer's container init (re-exec with _LIBCONTAINER_INITPIPE set
// and argv[1] "init") it hands over to libcontainer and never returns; if
// it is a shim (argv[1] == ShimVerb) it runs the shim and exits. Otherwise
// it returns at once. The environment variable, not argv alone, tells the
// re-exec apart, so that "shoal init" remains a normal verb.
func MaybeInit() {
	if len(os.Args) > 1 && os.Args[1] == "init" && os.Getenv("_LIBCONTAINER_INITPIPE") != "" {
		libcontainer.Init() // does not return
	}
	if len(os.Args) > 3 && os.Args[1] == ShimVerb {
		os.Exit(runShim(os.Args[2], os.Args[3]))
	}
}

// Libcontainer is the Runtime on top of libcontainer and per-task shims.
type Libcontainer struct {
	root string
	log  *slog.Logger
	poll time.Duration // how often Stop and Remove look for an exit
}

var _ Runtime = (*Libcontainer)(nil)

// NewLibcontainer returns a runtime keeping its state under root (created
// if needed, mode 0700).
func NewLibcontainer(root string, log *slog.Logger) (*Libcontainer, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("%w: state root %q must be absolute", ErrInvalidArgument, root)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Libcontainer{root: root, log: log.With("component", "runtime"), poll: 5 * time.Millisecond}, nil
}

type specOnDisk struct {
	Spec    Spec   `json:"spec"`
	LogPath string `json:"log_path"`
}

type shimOnDisk struct {
	ShimPid   int       `json:"shim_pid"`
	ShimStart uint64    `json:"shim_start"` // /proc/<pid>/stat starttime, against pid reuse
	Pid       int       `json:"pid,omitempty"`
	PidStart  uint64    `json:"pid_start,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	MemCgroup string    `json:"mem_cgroup,omitempty"`
}

type readyMsg struct {
	Error string `json:"error,omitempty"`
}

func (r *Libcontainer) dir(id string) string { return filepath.Join(r.root, id) }

// Start implements Runtime.
func (r *Libcontainer) Start(ctx context.Context, spec Spec, logPath string) (retErr error) {
	if err := spec.Validate(); err != nil {
		return err
	}
	if !seccomp.Enabled {
		return errors.New("runtime: binary built without the seccomp build tag; refusing to start containers unconfined")
	}
	if !filepath.IsAbs(logPath) {
		return fmt.Errorf("%w: log path %q must be absolute", ErrInvalidArgument, logPath)
	}
	dir := r.dir(spec.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if os.IsExist(err) {
			return fmt.Errorf("task %q: %w", spec.ID, ErrAlreadyExists)
		}
		return err
	}
	defer func() {
		if retErr != nil {
			_ = r.Remove(context.WithoutCancel(ctx), spec.ID)
		}
	}()
	if err := writeJSON(filepath.Join(dir, specFile), specOnDisk{Spec: spec, LogPath: logPath}); err != nil {
		return err
	}
	slog, err := os.OpenFile(filepath.Join(dir, shimLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer slog.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	cmd := exec.Command("/proc/self/exe", ShimVerb, r.root, spec.ID)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = slog, slog
	cmd.ExtraFiles = []*os.File{pw} // fd 3: readiness
	// Own session: no signal from the agent's terminal or process group
	// reaches the shim, and it outlives the agent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("task %q: start shim: %w", spec.ID, err)
	}
	pw.Close()
	// Reap the shim if it exits while we live, so that a dead shim is not
	// a zombie that still looks alive. Nobody waits on the result.
	go func() { _ = cmd.Wait() }()

	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(pr)
		ch <- result{b, err}
	}()
	var res result
	select {
	case res = <-ch:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		return ctx.Err()
	}
	if res.err != nil {
		return res.err
	}
	var msg readyMsg
	if len(bytes.TrimSpace(res.b)) == 0 {
		return fmt.Errorf("task %q: shim exited before starting the container (see %s)", spec.ID, filepath.Join(dir, shimLog))
	}
	if err := json.Unmarshal(res.b, &msg); err != nil {
		return fmt.Errorf("task %q: shim: %w", spec.ID, err)
	}
	if msg.Error != "" {
		return fmt.Errorf("task %q: %s", spec.ID, msg.Error)
	}
	r.log.Debug("task started", "task_id", spec.ID, "shim_pid", cmd.Process.Pid)
	return nil
}

// State implements Runtime.
func (r *Libcontainer) State(_ context.Context, id string) (State, error) {
	if !idRE.MatchString(id) {
		return State{}, fmt.Errorf("%w: task id %q", ErrInvalidArgument, id)
	}
	dir := r.dir(id)
	if _, err := os.Stat(dir); err != nil {
		return State{}, fmt.Errorf("task %q: %w", id, ErrNotFound)
	}
	st := State{ID: id, Status: StatusCreated}
	var sh shimOnDisk
	haveShim := readJSON(filepath.Join(dir, shimFile), &sh) == nil
	st.ShimPid, st.Pid, st.StartedAt = sh.ShimPid, sh.Pid, sh.StartedAt
	if ex, ok := readExit(dir); ok {
		st.Status, st.Exit = StatusExited, ex
		return st, nil
	}
	if haveShim && alive(sh.ShimPid, sh.ShimStart) {
		if sh.Pid > 0 {
			st.Status = StatusRunning
		}
		return st, nil
	}
	// The shim may have written the exit and left since we looked.
	if ex, ok := readExit(dir); ok {
		st.Status, st.Exit = StatusExited, ex
		return st, nil
	}
	if !haveShim {
		// Start has not got that far yet, or the shim died at once.
		return st, nil
	}
	st.Status = StatusFailed
	st.Error = "shim died without recording an exit status"
	st.ContainerAlive = sh.Pid > 0 && alive(sh.Pid, sh.PidStart)
	return st, nil
}

// gone reports whether the task no longer runs: its exit is recorded, or
// both shim and container init are dead.
func (r *Libcontainer) gone(id string) bool {
	dir := r.dir(id)
	if _, ok := readExit(dir); ok {
		return true
	}
	var sh shimOnDisk
	if err := readJSON(filepath.Join(dir, shimFile), &sh); err != nil {
		return true
	}
	return !alive(sh.ShimPid, sh.ShimStart) && !(sh.Pid > 0 && alive(sh.Pid, sh.PidStart))
}

func (r *Libcontainer) waitGone(ctx context.Context, id string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if r.gone(id) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(r.poll)
	}
}

// Stop implements Runtime.
func (r *Libcontainer) Stop(ctx context.Context, id string, sig os.Signal, grace time.Duration) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("%w: task id %q", ErrInvalidArgument, id)
	}
	if _, err := os.Stat(r.dir(id)); err != nil {
		return fmt.Errorf("task %q: %w", id, ErrNotFound)
	}
	if r.gone(id) {
		return nil
	}
	c, err := libcontainer.Load(r.dir(id), id)
	if err != nil {
		if r.gone(id) {
			return nil
		}
		return fmt.Errorf("task %q: load: %w", id, err)
	}
	if sig == nil {
		sig = unix.SIGTERM
	}
	if err := c.Signal(sig); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		return fmt.Errorf("task %q: signal: %w", id, err)
	}
	if r.waitGone(ctx, id, grace) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.log.Info("grace period over, killing", "task_id", id, "grace", grace)
	if err := c.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		return fmt.Errorf("task %q: kill: %w", id, err)
	}
	if !r.waitGone(ctx, id, 30*time.Second) {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("task %q: still running 30s after SIGKILL", id)
	}
	return nil
}

// Remove implements Runtime.
func (r *Libcontainer) Remove(ctx context.Context, id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("%w: task id %q", ErrInvalidArgument, id)
	}
	dir := r.dir(id)
	if c, err := libcontainer.Load(dir, id); err == nil {
		if !r.gone(id) {
			_ = c.Signal(unix.SIGKILL)
			r.waitGone(ctx, id, 10*time.Second)
		}
		if err := c.Destroy(); err != nil {
			return fmt.Errorf("task %q: %w", id, err)
		}
	}
	var sh shimOnDisk
	if readJSON(filepath.Join(dir, shimFile), &sh) == nil && sh.ShimPid > 0 {
		// Give a live shim a moment to record the exit, then end it: it
		// must not write into a dir we are deleting.
		deadline := time.Now().Add(time.Second)
		for alive(sh.ShimPid, sh.ShimStart) && time.Now().Before(deadline) {
			time.Sleep(r.poll)
		}
		if alive(sh.ShimPid, sh.ShimStart) {
			_ = unix.Kill(sh.ShimPid, unix.SIGKILL)
			for i := 0; i < 1000 && alive(sh.ShimPid, sh.ShimStart); i++ {
				time.Sleep(r.poll)
			}
		}
	}
	if err := removeCgroupDirs(id); err != nil {
		return fmt.Errorf("task %q: %w", id, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("task %q: %w", id, err)
	}
	return nil
}

// List implements Runtime.
func (r *Libcontainer) List(ctx context.Context) ([]State, error) {
	ents, err := os.ReadDir(r.root)
	if err != nil {
		return nil, err
	}
	var out []State
	for _, e := range ents {
		if !e.IsDir() || !idRE.MatchString(e.Name()) {
			continue
		}
		st, err := r.State(ctx, e.Name())
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, st)
	}
	return out, nil
}

// removeCgroupDirs removes /shoal/<id> in every v1 hierarchy (and the
// unified one) if libcontainer left it behind.
func removeCgroupDirs(id string) error {
	ents, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join("/sys/fs/cgroup", e.Name(), cgroupPath(id))
		if err := unix.Rmdir(p); err != nil && err != unix.ENOENT && err != unix.ENOTDIR {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", p, err))
		}
	}
	if p := filepath.Join("/sys/fs/cgroup", cgroupPath(id)); true {
		_ = unix.Rmdir(p) // pure cgroup v2 hosts
	}
	return errors.Join(errs...)
}

// procStat returns the start time (clock ticks since boot) and state
// letter of pid.
func procStat(pid int) (uint64, byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// comm may contain spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("bad stat for %d", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("bad stat for %d", pid)
	}
	start, err := strconv.ParseUint(f[19], 10, 64) // field 22 overall
	if err != nil {
		return 0, 0, err
	}
	return start, f[0][0], nil
}

// alive: pid exists, is the same process (start time) and is not a zombie.
func alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	s, state, err := procStat(pid)
	if err != nil || (start != 0 && s != start) {
		return false
	}
	return state != 'Z' && state != 'X' && state != 'x'
}

func readExit(dir string) (*ExitStatus, bool) {
	var ex ExitStatus
	if err := readJSON(filepath.Join(dir, exitFile), &ex); err != nil {
		return nil, false
	}
	return &ex, true
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// writeJSON writes atomically: temp file, fsync, rename.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
