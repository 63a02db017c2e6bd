package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// Runtime runs containers for the executor. Implementations: the
// libcontainer one ([NewLibcontainer]) and [Fake] for unit tests.
type Runtime interface {
	// Start creates and starts the container described by spec under a
	// new shim and returns once its process runs (or failed to start).
	// stdout and stderr go to logPath (rotated per spec.Log).
	Start(ctx context.Context, spec Spec, logPath string) error
	// State reports what is known about task id.
	State(ctx context.Context, id string) (State, error)
	// Wait blocks until the task's shim has exited (the container exited
	// and its exit was recorded, or the shim died) and returns the final
	// State: StatusExited with Exit, or StatusFailed. It returns at once if
	// that already happened, works for shims started by an earlier agent
	// process, and returns ctx.Err() if ctx ends first.
	Wait(ctx context.Context, id string) (State, error)
	// Stop sends sig, then SIGKILL if the container still runs after
	// grace, and waits until it has exited (or ctx ends).
	Stop(ctx context.Context, id string, sig os.Signal, grace time.Duration) error
	// Remove kills what is left, destroys the container and its cgroup
	// and deletes the task's state dir. Removing an unknown id is not an
	// error.
	Remove(ctx context.Context, id string) error
	// List returns the state of every task found in the state root,
	// so that a restarted agent can re-adopt them.
	List(ctx context.Context) ([]State, error)
}

// Spec describes one container. It is ours, not the OCI spec: only what
// shoal tasks can ask for.
type Spec struct {
	ID     string   `json:"id"`
	Rootfs string   `json:"rootfs"` // prepared by the caller, absolute
	Args   []string `json:"args"`
	Env    []string `json:"env,omitempty"` // KEY=VALUE; PATH and HOME defaulted
	Cwd    string   `json:"cwd,omitempty"` // default "/"
	// User is "uid", "uid:gid" or a name ("name", "name:group") resolved
	// from the rootfs' /etc/passwd and /etc/group. Empty means root.
	User           string  `json:"user,omitempty"`
	Hostname       string  `json:"hostname,omitempty"`
	ReadOnlyRootfs bool    `json:"read_only_rootfs,omitempty"`
	Mounts         []Mount `json:"mounts,omitempty"`
	NetNSPath      string  `json:"netns_path,omitempty"` // empty: new private netns
	// HostNetwork runs the container in the caller's (the node's)
	// network namespace: no net namespace is created or joined (a task
	// on a "host" network). Excludes NetNSPath.
	HostNetwork bool       `json:"host_network,omitempty"`
	Resources   Resources  `json:"resources"`
	CapAdd      []string   `json:"cap_add,omitempty"` // "NET_ADMIN" or "CAP_NET_ADMIN", "ALL"
	CapDrop     []string   `json:"cap_drop,omitempty"`
	Log         LogOptions `json:"log"`
	// Init runs Args under a tiny init as PID 1 (see package tinyinit),
	// bind-mounted read-only at InitPath from the runtime's init binary
	// (WithInitBinary).
	Init bool `json:"init,omitempty"`
}

// Mount is a bind mount (Source set) or a tmpfs (Tmpfs true).
type Mount struct {
	Source      string `json:"source,omitempty"`
	Destination string `json:"destination"`
	ReadOnly    bool   `json:"read_only,omitempty"`
	Tmpfs       bool   `json:"tmpfs,omitempty"`
	TmpfsSize   int64  `json:"tmpfs_size,omitempty"` // bytes; 0 = kernel default
}

// Resources are cgroup limits; zero means unlimited / default.
type Resources struct {
	MemoryBytes int64  `json:"memory_bytes,omitempty"` // swap is forbidden: memsw = memory
	NanoCPUs    int64  `json:"nano_cpus,omitempty"`    // 1e9 = one CPU, becomes quota/period
	CPUShares   uint64 `json:"cpu_shares,omitempty"`
	PidsLimit   int64  `json:"pids_limit,omitempty"`
}

// LogOptions bound the log file: it is rotated when it would exceed
// MaxBytes, keeping MaxFiles files in all (path, path.1, ...).
type LogOptions struct {
	MaxBytes int64 `json:"max_bytes,omitempty"` // default 10 MiB
	MaxFiles int   `json:"max_files,omitempty"` // default 3
}

// Status of a task as seen by the runtime.
type Status string

const (
	StatusCreated Status = "created" // shim started, container not yet running
	StatusRunning Status = "running"
	StatusExited  Status = "exited" // Exit is set
	// StatusFailed: the shim died without recording an exit (e.g. kill -9);
	// Error says so and ContainerAlive says whether the process still runs.
	StatusFailed Status = "failed"
)

// State is what State and List report.
type State struct {
	ID             string      `json:"id"`
	Status         Status      `json:"status"`
	Pid            int         `json:"pid,omitempty"`      // container init, host pid namespace
	ShimPid        int         `json:"shim_pid,omitempty"` // 0 for the fake
	StartedAt      time.Time   `json:"started_at,omitempty"`
	Exit           *ExitStatus `json:"exit,omitempty"`
	ContainerAlive bool        `json:"container_alive,omitempty"` // only meaningful when failed
	Error          string      `json:"error,omitempty"`
}

// ExitStatus is recorded by the shim when the container's init exits.
type ExitStatus struct {
	Code       int       `json:"code"`             // 128+signal when killed
	Signal     int       `json:"signal,omitempty"` // 0 unless killed by a signal
	OOMKilled  bool      `json:"oom_killed,omitempty"`
	FinishedAt time.Time `json:"finished_at"`
	Error      string    `json:"error,omitempty"` // start failure, if any
}

// Error classes, wrapped with %w.
var (
	ErrNotFound        = errors.New("not found")
	ErrAlreadyExists   = errors.New("already exists")
	ErrInvalidArgument = errors.New("invalid argument")
)

// validID is the task id format of specrules.TaskID (1 to 128 of
// [A-Za-z0-9_.-], starting with a letter or digit): an id is a directory
// name here.
func validID(id string) bool {
	if id == "" || len(id) > maxTaskID {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}

// Copies of specrules' limits that the runtime checks again. The runtime
// does not import specrules: it would bring the API's protobuf and gRPC
// packages into shoal-shim, whose start-up every container pays
// (TestLimitsMatchSpecrules keeps the copies equal).
const (
	maxTaskID       = 128
	minMemoryBytes  = 6 << 20
	maxMemoryBytes  = 1 << 50
	cpuPeriodMicros = 100_000
	minNanoCPUs     = 1_000 * 1e9 / cpuPeriodMicros
	maxNanoCPUs     = 4096 * 1e9
)

// Validate checks what can be checked without touching the system.
func (s *Spec) Validate() error {
	if !validID(s.ID) {
		return fmt.Errorf("%w: task id %q", ErrInvalidArgument, s.ID)
	}
	if len(s.Args) == 0 {
		return fmt.Errorf("%w: task %q: no args", ErrInvalidArgument, s.ID)
	}
	if s.HostNetwork && s.NetNSPath != "" {
		return fmt.Errorf("%w: task %q: host network and a network namespace path %q", ErrInvalidArgument, s.ID, s.NetNSPath)
	}
	if s.Rootfs == "" || s.Rootfs[0] != '/' {
		return fmt.Errorf("%w: task %q: rootfs %q must be absolute", ErrInvalidArgument, s.ID, s.Rootfs)
	}
	for _, m := range s.Mounts {
		if m.Destination == "" || m.Destination[0] != '/' {
			return fmt.Errorf("%w: task %q: mount destination %q must be absolute", ErrInvalidArgument, s.ID, m.Destination)
		}
		if !m.Tmpfs && (m.Source == "" || m.Source[0] != '/') {
			return fmt.Errorf("%w: task %q: bind source %q must be absolute", ErrInvalidArgument, s.ID, m.Source)
		}
	}
	if s.Resources.MemoryBytes < 0 || s.Resources.NanoCPUs < 0 || s.Resources.PidsLimit < 0 {
		return fmt.Errorf("%w: task %q: negative resource limit", ErrInvalidArgument, s.ID)
	}
	return nil
}
