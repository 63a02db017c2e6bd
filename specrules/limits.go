package specrules

import "time"

// Limits on a spec. They bound what one service costs the cluster (every
// task carries a copy of its spec through raft, the watch and the agent's
// assignment stream) and keep every value inside what the kernel and the
// runtime accept, so that nothing is silently clamped on a node.
const (
	MaxEnv          = 1000      // entries in env
	MaxEnvEntry     = 32 << 10  // bytes of one KEY=VALUE
	MaxArgv         = 1000      // entries in command + args
	MaxArgEntry     = 32 << 10  // bytes of one command or args entry
	MaxProcessBytes = 256 << 10 // command, args and env together (the kernel allows ~2 MiB)
	MaxLabels       = 64        // entries in one labels map
	MaxLabelKey     = 128       // bytes
	MaxLabelValue   = 4 << 10   // bytes
	MaxMounts       = 64
	MaxCaps         = 64 // entries in cap_add, in cap_drop
	MaxConstraints  = 32
	MaxConstraint   = 256 // bytes of one placement constraint
	MaxImageRef     = 1024
	MaxPath         = 4096 // a workdir, mount target or source
	MaxHostname     = 63   // bytes; a container hostname is one UTS name
	MaxUserName     = 32
	MaxUID          = 1<<32 - 2 // (uid_t)-1 means "no change" to the kernel

	// MinMemoryBytes is the smallest memory limit: below it the kernel
	// OOM-kills the container's init before the command runs, which would
	// look like a crash of the application.
	MinMemoryBytes = 6 << 20
	// MaxMemoryBytes (1 PiB) keeps sums of limits and reservations far
	// from overflowing.
	MaxMemoryBytes = 1 << 50

	// CPUPeriodMicros is the CFS period the runtime uses; a limit of
	// nano_cpus becomes a quota of nano_cpus * period / 1e9 µs.
	CPUPeriodMicros = 100_000
	// MinNanoCPUs (0.01 CPU) is the smallest limit whose quota is at
	// least the kernel's minimum of 1 ms.
	MinNanoCPUs = 1_000 * 1e9 / CPUPeriodMicros
	// MaxNanoCPUs (4096 CPUs) keeps nano_cpus * period and the CPU shares
	// of a reservation far from overflowing an int64.
	MaxNanoCPUs = 4096 * 1e9

	// MaxPids is the kernel's largest pids.max (PID_MAX_LIMIT on 64 bits).
	MaxPids = 4 << 20

	// DefaultStopGrace is how long a container gets between its stop
	// signal and SIGKILL when the spec says nothing (docker's 10 s).
	DefaultStopGrace = 10 * time.Second
	// MaxStopGrace and MaxDuration bound the durations of a spec.
	MaxStopGrace = time.Hour
	MaxDuration  = 30 * 24 * time.Hour // restart delay and window

	// MaxRestartAttempts bounds restart.max_attempts: the orchestrator
	// keeps every counted task of a slot in the store (N+1 per slot), so
	// the bound is what one slot's history may cost. 0 still means
	// unlimited, with history trimmed as usual.
	MaxRestartAttempts = 1000

	// Cluster settings' defaults (a 0 in ClusterSettings means these).
	DefaultNodeCertExpiry = 90 * 24 * time.Hour
	DefaultMaxReplicas    = 100_000
	DefaultRestartGrace   = 60 * time.Second

	// MaxTaskID is the longest task id (the runtime's limit on a
	// container id).
	MaxTaskID = 128
)

// StopGrace is the grace period for stop_grace_ms: the default when 0.
func StopGrace(ms int64) time.Duration {
	if ms <= 0 {
		return DefaultStopGrace
	}
	return time.Duration(ms) * time.Millisecond
}

// CPUQuotaMicros is the CFS quota for a limit of nanoCPUs (valid per
// these rules) in a period of CPUPeriodMicros.
func CPUQuotaMicros(nanoCPUs int64) int64 {
	return nanoCPUs * CPUPeriodMicros / 1e9
}

// CPUShares is the cgroup weight of a CPU reservation: 1 CPU = 1024, at
// least 2 (the kernel's minimum).
func CPUShares(nanoCPUs int64) uint64 {
	return uint64(max(2, nanoCPUs*1024/1e9))
}

// TaskID checks the format of a task id before any path is built from it:
// 1 to MaxTaskID of [A-Za-z0-9_.-], starting with a letter or digit (so
// never "." or "..").
func TaskID(id string) error {
	if id == "" {
		return errorf("task id is empty")
	}
	if len(id) > MaxTaskID {
		return errorf("task id is %d bytes long, at most %d", len(id), MaxTaskID)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if isAlnum(c) || i > 0 && (c == '_' || c == '.' || c == '-') {
			continue
		}
		return errorf("task id %q: only letters, digits, '_', '.', '-', starting with a letter or digit", id)
	}
	return nil
}
