// Package agent is everything that runs on a worker (every node runs one).
//
// Two parts, wired together by the daemon:
//
//   - Agent (session.go) keeps the node's session with the leader's
//     dispatcher: it sends a hello and heartbeats (at the welcome's period,
//     or the one a later acknowledgement names; each heartbeat names the
//     period in use, so the manager judges the node by a shorter one only
//     once it is; while statuses go out and messages come in the heartbeat
//     is skipped, the manager counting any message as a sign of life,
//     but the node is never silent longer than a period and a changed
//     period is named at once), receives the node's
//     assignment set (full, then diffs, possibly in chunks) and reports task
//     statuses in batches. It reconnects by itself, following the leader
//     address a follower answers with (errdefs.NotLeader) and rotating
//     through the known managers, so an agent survives leader failover
//     without help. Its connection has a fixed flow-control window
//     (sessionWindow): gRPC's dynamic one pinged the manager after nearly
//     every message received, a write and a flush more on the leader per
//     message. It uses its executor only through TaskExecutor.
//   - Executor (executor.go, taskctl.go, prepare.go) runs the assigned
//     tasks as containers: one controller goroutine per task resolves the
//     image (agent/image), mounts the rootfs, attaches the node network
//     (agent/network), starts the container through the runtime
//     (agent/runtime: libcontainer under a per-task shim) and records every
//     observed status in the local task database (taskdb.go) before it is
//     reported, so a restarted agent re-adopts running containers.
//
// Overlay networks: the session hands every Networks message, gathered
// from its chunks (more) and bounded like assignment sets, to a
// NetworkReconciler (the daemon: overlay.Node, then overlay.Discovery's
// view and VIPs). A task with Task.networks is attached by Overlay after
// the node network; then Discovery.Start runs its DNS server and VIPs and
// the executor writes <task dir>/resolv.conf (nameserver 127.0.0.11) and
// bind-mounts it read-only on /etc/resolv.conf (unless the spec mounts
// its own). Release calls Discovery.Stop before Overlay.Detach. A task
// re-adopted after an agent restart is attached again (idempotent) and
// gets its DNS server and VIPs back. A task on overlay networks asked to
// stop keeps running for EndpointDrain (1 s, at most half its stop grace)
// before it is signalled (endpointdrain.go): its endpoints are already
// delivered as SHUTDOWN, and the other hosts' VIPs must stop balancing new
// connections to it before its listener closes.
// Bridge networks are attached the same way (overlay.Manager puts them on
// their node-local bridge).
//
// Host networks: a task whose one attachment has no address (only host
// networks have no subnet; where the node holds network states, the
// network's driver is confirmed as host first, or the task is rejected)
// runs in the node's network namespace: no
// node-local namespace, no Overlay or Discovery, runtime.Spec.HostNetwork
// (libcontainer creates no net namespace) and the node's resolv.conf
// bind-mounted read-only.
//
// Health checks (health.go, agent/health): while a task runs, its
// controller runs the check the spec or the image's HEALTHCHECK defines
// (exec through the runtime's Exec, HTTP/TCP dialled inside the task's
// network namespace). RUNNING is first reported with health STARTING
// (also when a task re-adopted in STARTING is found running);
// then only changes of health or of the failing streak are reported. An
// UNHEALTHY task is stopped like a shutdown and reported FAILED with
// "unhealthy: <last output>", and the restart policy replaces it.
//
// A node started with --no-executor runs agent/nullexec instead of
// Executor: assignments are taken and reported, nothing runs.
package agent
