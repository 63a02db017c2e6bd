// Package runtime runs a task's container on a worker: runc's libcontainer
// used as a library (no runc binary) behind a per-task shim process.
//
// # Why a shim
//
// A container started by libcontainer is a child of the process that
// started it and its stdio pipes break when that process dies. So each
// task gets a shim: the shoal binary re-executed with the verb [ShimVerb]
// in its own session. The shim creates the container, owns its stdout and
// stderr (written to a size-rotated JSON-lines log file), waits for the
// exit and records the exit status atomically in the task's state dir.
// The agent can restart or be upgraded meanwhile; [Runtime.List] re-adopts
// everything found under the state root.
//
// If a shim is killed, State reports StatusFailed ("shim died") with
// ContainerAlive telling whether the container still runs; Stop and Remove
// still work (they act through libcontainer's state, not the shim). Such a
// container has lost its stdout and stderr: its next write to them fails
// with EPIPE, which usually ends it.
//
// # Spare shim
//
// A shim's own start-up (the Go runtime and package initialisation of the
// whole shoal binary) was the largest part of Start. So the runtime keeps
// one spare shim, already started and waiting on a socket for a task id;
// Start hands the task to it and spawns the next spare in the background.
// The spare holds nothing of a task, runs in its own session like every
// shim, and exits when [Libcontainer.Close] dismisses it or the agent dies
// (its socket closes). [Libcontainer.Prepare] makes one ready ahead of the
// first Start; [WithSpareShim](false) turns spares off.
//
// # State dir
//
// <root>/<id>/spec.json (written by Start), shim.json (shim and container
// pids with their start times, against pid reuse), exit.json (written by
// the shim, atomically, when the container exits), shim.log (the shim's
// own stderr) and <root>/<id>/<id>/ (libcontainer's state).
//
// # Wiring
//
// main must call [MaybeInit] before anything else: it turns the process
// into libcontainer's container init (the re-exec libcontainer does with
// _LIBCONTAINER_INITPIPE set) or into a shim, and never returns in those
// cases. The binary needs cgo (the nsenter constructor) and the build tag
// "seccomp" with Debian libseccomp-dev installed; without the tag
// [Runtime.Start] refuses to run (the default seccomp profile could not
// be applied).
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
// Close unblocks its readers. The process is the caller's child, not the
// shim's: an exec ends with the agent that serves it.
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
