// Package runtime runs a task's container on a worker: runc's libcontainer
// used as a library (no runc binary) behind a per-task shim process.
//
// # Why a shim
//
// A container started by libcontainer is a child of the process that
// started it and its stdio pipes break when that process dies. So each
// task gets a shim: the separate binary shoal-shim (cmd/shoal-shim, found
// beside the shoal binary, else in PATH, or given by [WithShimBinary];
// refused unless it is a build of cmd/shoal-shim of the same release and
// VCS revision as the runtime, where the binaries record them) in its own
// session. The Go shim creates and starts the container with
// libcontainer, then execve()s itself into a small C supervisor
// (agent/runtime/supervisor) that keeps its pid, so the container stays
// its child: the supervisor tells the agent the task runs, owns the
// container's stdout and stderr (written to a size-rotated JSON-lines log
// file, record for record what log.go writes; a test holds the two
// writers to one format; on a full disk or at a file size limit the
// records that do not fit are dropped whole and the output is still
// read), waits for the exit, checks the memory cgroup for an OOM kill,
// removes the container's cgroups and libcontainer's state, and records
// the exit status atomically and durably (fsync, rename, fsync of the
// directory) in the task's state dir.
// The agent can restart or be upgraded meanwhile; [Runtime.List]
// re-adopts everything found under the state root (shim.json's pid and
// start time are the supervisor's, since execve keeps both).
//
// The C supervisor is a constructor linked into shoal-shim that takes
// over when argv[1] is "__shoal-supervise", before the Go runtime starts:
// what stays alive per task is a few pages of C (0.14 MiB PSS measured,
// against 3.5 MiB for the Go shim it replaced).
//
// If a shim is killed, State reports StatusFailed ("shim died") with
// ContainerAlive telling whether the container still runs; Stop and Remove
// still work (they act through libcontainer's state, not the shim). Such a
// container has lost its stdout and stderr: its next write to them fails
// with EPIPE, which usually ends it.
//
// # Small init
//
// libcontainer starts a container's init by re-executing the binary that
// calls it (/proc/self/exe, argv "init"): that is the Go shim (or, for an
// exec, the exec helper), so the init is shoal-shim too — 6 MB and ~80 package initialisers (0.8 ms),
// where the shoal binary is 40 MB and ~260 (5.6 ms; protobuf and gRPC
// mostly). The runtime does not import specrules for that reason (it
// keeps copies of the few limits it checks again, pinned by a test).
//
// libcontainer protects the host's binary from the container
// (CVE-2019-5736) by running the init from a sealed copy of
// /proc/self/exe, made per container: a read-only overlayfs mount of the
// binary's directory (or, where that fails, a copy of the whole binary
// into a memfd) — unless /proc/self/exe already is a sealed memfd. So the
// runtime copies shoal-shim once into a sealed memfd and executes every
// shim from it: no mount per container, and the pages are shared.
//
// Shims run with GOMAXPROCS=1 and GOGC=off (libcontainer passes
// GOMAXPROCS on to the init, which then starts fewer threads).
//
// Where a container start's time goes, from kernel tracepoints
// (perf record -a: fork, exec, mount, pivot_root, seccomp) over 60 starts
// of /bin/true by `shoal debug runtime-bench` on this 2-core VM at load
// average 39 (other jobs: absolute times are inflated several-fold; the
// shares are the point): the shim's fork and exec of the init 0.2%,
// nsexec (the C stages: clone, unshare of the namespaces, clone into the
// pid namespace) 17%, Go start of the init's stage 2 and its handshake
// with the parent (which applies the cgroups meanwhile) 24%, mounts
// (rootfs, /proc, /dev, /sys, devices, masked paths) 11%, pivot_root to
// the seccomp load (capabilities, uid/gids, rlimits, the "run" handshake)
// 22%, the seccomp(2) load itself 0.1%, then the exec of the command 6%.
// Before the init the shim spends ~1.6 ms (spec, config, Create). The
// per-container sealing it no longer does costs 0.2–1.3 ms as an
// overlayfs and 16 ms as the fallback's memfd copy of a 21 MB binary
// (BenchmarkSealPerContainer; the shoal binary is 40 MB).
//
// # Spare shim
//
// A shim's own start-up (the Go runtime and package initialisation of
// shoal-shim) is still a cost of Start. So the runtime keeps one spare
// shim, already started and waiting on a socket for a task id; Start
// hands the task to it and spawns the next spare in the background. The
// spare holds nothing of a task, runs in its own session like every shim,
// and exits when [Libcontainer.Close] dismisses it or the agent dies (its
// socket closes). [Libcontainer.Prepare] makes one ready ahead of the
// first Start; [WithSpareShim](false) turns spares off.
//
// # State dir
//
// <root>/<id>/spec.json (written by Start), shim.json (shim and container
// pids with their start times, against pid reuse), exit.json (written by
// the supervisor, atomically, when the container exits), shim.log (the
// shim's and the supervisor's own stderr) and <root>/<id>/<id>/
// (libcontainer's state, removed by the supervisor after the exit).
//
// # Wiring
//
// `make build` builds bin/shoal-shim beside bin/shoal (cgo, build tag
// "seccomp", Debian libseccomp-dev); without it Start, Prepare, Exec and
// ExecInteractive fail with an error that says so (as they do for a
// shoal-shim of another build). Nothing re-executes the shoal binary any
// more ([MaybeInit] stays a guard at the top of main). Without the seccomp
// tag [Runtime.Start] refuses to run (the default seccomp profile could
// not be applied).
//
// # Use
//
//	rt, err := runtime.NewLibcontainer("/var/lib/shoal/tasks", logger)
//	defer rt.Close()                     // dismisses the spare shim
//	err = rt.Prepare(ctx)                // optional: a spare before the first Start
//	err = rt.Start(ctx, runtime.Spec{ID: "t1", Rootfs: dir, Args: []string{"/app"}}, "/var/log/shoal/t1.log")
//	st, err := rt.State(ctx, "t1")       // Running / Exited / Failed (shim died)
//	st, err = rt.Wait(ctx, "t1")         // blocks until the shim is gone (pidfd)
//	err = rt.Stop(ctx, "t1", syscall.SIGTERM, 10*time.Second)
//	code, out, err := rt.Exec(ctx, "t1", []string{"/check"}) // in the container; killed with its children when ctx ends
//	p, err := rt.ExecInteractive(ctx, "t1", runtime.ExecOptions{Args: []string{"/bin/sh"}, TTY: true, Stdin: true})
//	// p.Stdin / p.Stdout (the terminal) / p.Resize(rows, cols) / p.Wait() / p.Close()
//	err = rt.Remove(ctx, "t1")           // container, cgroup, state dir
//
// ExecInteractive (`shoal task exec`) runs a process as Exec does but with
// streams: pipes, or with TTY a terminal that libcontainer opens inside
// the container's own devpts (so the process sees /dev/pts/N) and passes
// back over a console socket; the master is made non-blocking so that
// Close unblocks its readers.
//
// # Exec helper
//
// Both run the process through an exec helper (exechelper_linux.go):
// shoal-shim started from the sealed memfd with argv "runtime-exec",
// which joins the container with libcontainer, so that the process's
// libcontainer init is shoal-shim, not the agent's 40 MB binary (which
// libcontainer also sealed afresh, a mount or a memfd copy, for every
// exec). The agent passes the process's pipes, output memfd or console
// socket to the helper as fds and the request (args, environment, user,
// directory) over a socketpair; the helper answers with the pid, then the
// exit code and signal. The process is the helper's child and the helper
// the agent's: agent → shoal-shim (helper) → process, where it used to be
// agent → process. The helper kills the process tree when the agent asks
// (Close, ctx) or goes away, so an exec still ends with the agent that
// serves it, and being the parent that reaps it, never signals a reused
// pid. Kill and Close return with the process dead (bounded), so closing
// the streams next cannot turn a kill into an EOF exit or a SIGPIPE. ctx
// also bounds the start: an exec that cannot start (a frozen cgroup holds
// the joining process) ends with ctx.Err(), its helper closed, then killed
// after a grace. A request over the helper's 8 MiB is refused before
// anything starts. Should the helper itself die mid-exec (kill -9, the OOM
// killer), the agent kills the orphaned tree through a pidfd it opened on
// the process when the helper announced it (checked to be the helper's
// child while the helper was unreaped). Measured by BenchmarkExecLatency
// (`probe echo` in a running task, 50 runs, medians; see the README's exec
// figures).
//
// The rootfs is prepared by the caller, for instance with [MountOverlay];
// the runtime never unmounts it. [Fake] is an in-memory [Runtime] for the
// executor's unit tests.
//
// # Security defaults
//
// Namespaces mount, pid, uts, ipc, net (a new one, or NetNSPath joined,
// or none with HostNetwork: the node's) and cgroup; Docker's 14 default capabilities adjusted by CapAdd/CapDrop;
// no_new_privs always; a seccomp denylist ([DefaultSeccomp]) returning
// EPERM for dangerous syscalls; Docker's masked and read-only /proc paths;
// the default device set. Cgroups live at the absolute path /shoal/<id>
// in every hierarchy ([WithCgroupParent] changes /shoal).
//
// # Clean-up
//
// Remove leaves nothing of a task, whatever state it is in (running,
// exited, shim killed, state lost): it kills the container init and the
// shim through pidfds (immune to pid reuse), lets libcontainer destroy
// what it knows, then kills whatever is still in the task's cgroups and
// removes them in every hierarchy listed in mountinfo, and deletes the
// state dir. The parent (/shoal) stays: removing it could race with a
// concurrent Start; [RemoveCgroupParent] is for tests and benchmarks
// that own theirs.
//
// # Usage
//
// [Libcontainer.Usage] reads a running task's counters for metrics and
// `task stats` straight from its cgroup files (cgroup v1 controllers or
// the v2 unified hierarchy: CPU time, memory less inactive file pages and
// the limit, pids and their limit) and its network bytes from
// /proc/<pid>/net/dev of a process in the cgroup (the interfaces of the
// task's network namespace, loopback excluded). Nothing is cached: a
// scrape or a stats sample reads a few small files per task.
package runtime
