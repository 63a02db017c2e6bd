package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"golang.org/x/sys/unix"

	// The cgroup manager can only set device rules with this imported.
	_ "github.com/opencontainers/cgroups/devices"
	// nsenter's C constructor runs the early part of the container init.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

// ShimVerb is os.Args[1] of a shim process (see ShimMain).
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
// libcontainer's init (a re-exec with _LIBCONTAINER_INITPIPE set and
// argv[1] "init") it hands over to libcontainer and never returns.
// Otherwise it returns at once. The runtime no longer calls libcontainer
// from the agent (execs go through shoal-shim's exec helper), so this is
// a guard for a binary that does.
// The environment variable, not argv alone, tells the re-exec apart, so
// that "shoal init" remains a normal verb. Shims and container inits are
// the separate shoal-shim binary (ShimMain).
func MaybeInit() {
	if len(os.Args) > 1 && os.Args[1] == "init" && os.Getenv("_LIBCONTAINER_INITPIPE") != "" {
		libcontainer.Init() // does not return
	}
}

// Libcontainer is the Runtime on top of libcontainer and per-task shims.
// Its fields are set at construction and never change.
type Libcontainer struct {
	root         string
	log          *slog.Logger
	cgroupParent string // see WithCgroupParent
	noSpare      bool   // see WithSpareShim
	initBinary   string // see WithInitBinary; empty: looked up when needed
	shimBinary   string // see WithShimBinary; empty: looked up when needed

	exeMu   sync.Mutex // guards shimExe
	shimExe *os.File   // sealed copy of the shim binary (sealedShim)

	mu         sync.Mutex    // guards the fields below
	spare      *shimProc     // a started shim waiting for a task, or nil
	refillDone chan struct{} // non-nil while a spare is being spawned
	closed     bool          // Close was called: no more spares
}

var _ Runtime = (*Libcontainer)(nil)

// NewLibcontainer returns a runtime keeping its state under root (created
// if needed, mode 0700).
func NewLibcontainer(root string, log *slog.Logger, opts ...Option) (*Libcontainer, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("%w: state root %q must be absolute", ErrInvalidArgument, root)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Libcontainer{root: root, log: log.With("component", "runtime"), cgroupParent: DefaultCgroupParent}
	for _, o := range opts {
		if err := o(r); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	return r, nil
}

// InsideExeDir reports whether path is in the directory holding our own
// binary (or is it). Where libcontainer seals /proc/self/exe per container
// (not for the runtime's shims, which run from a sealed memfd: see
// doc.go), it mounts a read-only overlayfs whose layers are that
// directory and the container's state dir; overlayfs refuses layers
// inside one another, and libcontainer then copies the whole binary into
// a memfd. runtimebench keeps its state elsewhere with it.
func InsideExeDir(path string) (string, bool) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return "", false
	}
	dir := filepath.Dir(exe)
	abs, err := filepath.Abs(path)
	if err != nil {
		return dir, false
	}
	return dir, abs == dir || strings.HasPrefix(abs, dir+"/") || dir == "/"
}

type specOnDisk struct {
	Spec    Spec   `json:"spec"`
	LogPath string `json:"log_path"`
	// CgroupParent is recorded so that the shim, and a Remove by a later
	// agent configured differently, use the parent the task started with.
	CgroupParent string `json:"cgroup_parent,omitempty"`
	// InitBinary is the host path of the init bind-mounted into a
	// container whose spec asks for one (resolved by Start).
	InitBinary string `json:"init_binary,omitempty"`
}

type shimOnDisk struct {
	ShimPid   int       `json:"shim_pid"`
	ShimStart uint64    `json:"shim_start"` // /proc/<pid>/stat starttime, against pid reuse
	Pid       int       `json:"pid,omitempty"`
	PidStart  uint64    `json:"pid_start,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	MemCgroup string    `json:"mem_cgroup,omitempty"`
}

// readyMsg is what a shim tells the agent (see spawn_linux.go).
type readyMsg struct {
	Up    bool   `json:"up,omitempty"`
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
	var initBinary string
	if spec.Init {
		var err error
		if initBinary, err = r.findInitBinary(); err != nil {
			return fmt.Errorf("task %q: %w", spec.ID, err)
		}
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
	if err := writeJSON(filepath.Join(dir, specFile), specOnDisk{Spec: spec, LogPath: logPath, CgroupParent: r.cgroupParent, InitBinary: initBinary}); err != nil {
		return err
	}
	s, fromSpare := r.takeSpare(), true
	for {
		if s == nil {
			fromSpare = false
			var err error
			if s, err = r.spawnShim(); err != nil {
				return fmt.Errorf("task %q: %w", spec.ID, err)
			}
		}
		err := s.handOver(ctx, spec.ID)
		s.conn.Close()
		if err == nil {
			break
		}
		if errors.Is(err, errShimGone) && fromSpare && !fileExists(filepath.Join(dir, shimFile)) {
			// The spare died (killed, say) before it took the task:
			// nothing was done, so a fresh shim can do it.
			r.log.Warn("spare shim gone, starting another", "task_id", spec.ID)
			s = nil
			continue
		}
		if errors.Is(err, errShimGone) {
			return fmt.Errorf("task %q: %w (see %s)", spec.ID, err, filepath.Join(dir, shimLog))
		}
		if ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("task %q: %w", spec.ID, err)
	}
	r.refillSpare()
	r.log.Debug("task started", "task_id", spec.ID, "shim_pid", s.cmd.Process.Pid, "spare", fromSpare)
	return nil
}

// State implements Runtime.
func (r *Libcontainer) State(_ context.Context, id string) (State, error) {
	if !validID(id) {
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

// taskProcs opens pidfds for the task's shim and container init, each nil
// if that process is gone (or its pid now names another process). The
// caller closes them.
func (r *Libcontainer) taskProcs(id string) (shim, init *os.File) {
	var sh shimOnDisk
	if readJSON(filepath.Join(r.dir(id), shimFile), &sh) != nil {
		return nil, nil
	}
	if sh.ShimPid > 0 {
		shim, _ = openPidfd(sh.ShimPid, sh.ShimStart)
	}
	if sh.Pid > 0 {
		init, _ = openPidfd(sh.Pid, sh.PidStart)
	}
	return shim, init
}

// waitGone waits up to d until the task no longer runs: its container
// init has exited and its shim (which records the exit and then exits)
// is gone. It reports whether that happened; the wait is on pidfds, so
// it ends as soon as the processes do.
func (r *Libcontainer) waitGone(ctx context.Context, id string, d time.Duration) bool {
	shim, init := r.taskProcs(id)
	defer closeFiles(shim, init)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for _, f := range []*os.File{init, shim} {
		if f != nil && waitReadable(ctx, f) != nil {
			return false
		}
	}
	return true
}

func closeFiles(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

// Stop implements Runtime.
func (r *Libcontainer) Stop(ctx context.Context, id string, sig os.Signal, grace time.Duration) error {
	if !validID(id) {
		return fmt.Errorf("%w: task id %q", ErrInvalidArgument, id)
	}
	if _, err := os.Stat(r.dir(id)); err != nil {
		return fmt.Errorf("task %q: %w", id, ErrNotFound)
	}
	if r.waitGone(ctx, id, 0) {
		return nil
	}
	if sig == nil {
		sig = unix.SIGTERM
	}
	if err := r.signalInit(id, sig); err != nil {
		return fmt.Errorf("task %q: signal: %w", id, err)
	}
	if r.waitGone(ctx, id, grace) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.log.Info("grace period over, killing", "task_id", id, "grace", grace)
	if err := r.signalInit(id, unix.SIGKILL); err != nil {
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

// signalInit sends sig to the task's container init through a pidfd (it
// cannot hit a process that reused the pid); an init already gone is not
// an error. Not libcontainer's Container.Signal: for a container it did not
// start, that goes through os.FindProcess, whose pidfd only a finalizer
// closes, so an idle agent held one fd per task it had stopped until the
// next GC (100 after a 100-task service was removed). The container has
// its own PID namespace: SIGKILL to its init ends every process in it.
func (r *Libcontainer) signalInit(id string, sig os.Signal) error {
	s, ok := sig.(unix.Signal)
	if !ok {
		return fmt.Errorf("%w: signal %v", ErrInvalidArgument, sig)
	}
	shim, init := r.taskProcs(id)
	defer closeFiles(shim, init)
	if init == nil {
		return nil
	}
	if err := pidfdSignal(init, s); err != nil && err != unix.ESRCH {
		return err
	}
	return nil
}

// Remove implements Runtime. It leaves nothing of the task: container
// processes, shim, cgroup dirs in every hierarchy, state dir.
func (r *Libcontainer) Remove(ctx context.Context, id string) error {
	if !validID(id) {
		return fmt.Errorf("%w: task id %q", ErrInvalidArgument, id)
	}
	dir := r.dir(id)
	parent := r.cgroupParent
	var sd specOnDisk
	if readJSON(filepath.Join(dir, specFile), &sd) == nil && sd.CgroupParent != "" {
		parent = sd.CgroupParent
	}
	shim, init := r.taskProcs(id)
	defer closeFiles(shim, init)
	if init != nil {
		// Kill through the pidfd: it cannot hit a process that reused the
		// pid. The shim (if alive) then records the exit as a SIGKILL.
		if err := pidfdKill(init); err != nil && err != unix.ESRCH {
			return fmt.Errorf("task %q: kill: %w", id, err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := waitReadable(wctx, init)
		cancel()
		if err != nil {
			return fmt.Errorf("task %q: wait for container init: %w", id, err)
		}
	}
	if c, err := libcontainer.Load(dir, id); err == nil {
		// Its init is dead: Destroy kills what is left in the cgroup and
		// removes the cgroup and libcontainer's state.
		if err := c.Destroy(); err != nil {
			return fmt.Errorf("task %q: %w", id, err)
		}
	}
	if shim != nil {
		// A live shim records the exit and leaves once the container's
		// output pipes close; give it a moment, then end it: it must not
		// write into a dir we are deleting.
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		err := waitReadable(wctx, shim)
		cancel()
		if err != nil {
			if err := pidfdKill(shim); err != nil && err != unix.ESRCH {
				return fmt.Errorf("task %q: kill shim: %w", id, err)
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := waitReadable(wctx, shim)
			cancel()
			if err != nil {
				return fmt.Errorf("task %q: wait for shim: %w", id, err)
			}
		}
	}
	if err := removeTaskCgroups(ctx, parent, id); err != nil {
		return fmt.Errorf("task %q: remove cgroups: %w", id, err)
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
		if !e.IsDir() || !validID(e.Name()) {
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

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
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

// writeJSON writes atomically (temp file, rename), so that a reader sees
// the old or the new content, never a part. There is no fsync (it cost
// 0.3 ms per file here, four files per task): these files describe
// processes, which do not survive the power cut an fsync protects
// against, and after a reboot a task whose files are missing or empty
// reads as failed, which is what it is then.
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
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
