// Package controlapi implements the shoal.v1.Control gRPC service: the
// operator API that the CLI and dashboards use.
//
// Every method runs on the leader (the manager's forwarding interceptor sends
// unary calls from followers there), so reads are linearizable: they go
// through raftstore.ReadLinearizable. Writes validate the request first —
// errors name the field path and the reason, e.g.
// `spec.replicas: must be >= 0, got -1` — and then apply one raft entry with
// the version the caller read (optimistic concurrency). With
// ignore_version, UpdateService and UpdateNode overwrite the spec the
// caller sends but still write against the version they read themselves,
// building the object again when another write came in between
// (ignoreversion.go), so that the fields other writers own (VIPs, update
// status, spec_version; a node's status, role and certificate serial) are
// never put back to what they were.
//
// UpdateService checks the task template's rules only when the task
// changed or was not checked here: a task it leaves exactly as stored, at
// a version this process wrote after checking that task
// (checkedtasks.go), is one today's rules accept, so only the rest of the
// spec is checked (specrules.ServiceUpdate). A task stored by another
// leader, an older release or any other writer is checked in full, so an
// update is refused with the same field paths and reasons as before.
// "Exactly as stored" is proto.Equal's answer, reached by comparing the
// two tasks' deterministic encodings first (sametask.go): a reflection
// walk of both on every call was 6 % of the leader at 256 writers. The
// memo also keeps the encoding of the task this process wrote at the
// version it remembers (16 MiB of encodings at most, all services
// together), so an update of that version encodes only the task it was
// sent.
//
// PatchService (patchservice.go) is UpdateService of the stored spec with
// labels added and removed and the replica count set, built and decided
// on the leader (no read-modify-write in the client, version optional);
// it checks only what the patch touches, with the same rules, and its
// raft entry carries the patch, not the spec (raftstore.WriteTx.PatchService).
//
// CreateService, UpdateService and PatchService answer with the whole service unless
// the request's view is SERVICE_VIEW_BRIEF: then the reply leaves out
// spec and previous_spec (replyview.go), which a writer that keeps the
// spec it sent does not need; encoding them was 7–9 % of the leader at
// 256 writers. An unknown view is InvalidArgument on `view` before
// anything is written; the default stays the whole service, for old
// clients.
//
// # Networks (networks.go)
//
// CreateNetwork validates with specrules.Network, defaults the driver to
// overlay and, in the same transaction as the create, allocates: the
// subnet (spec's, else the first free /default_subnet_size (24) of
// ClusterSettings.default_address_pool (10.220.0.0/16)), the gateway
// (spec's, else the subnet's first address) and, for overlay, the VNI (the
// smallest free from 4096, so a removed network's VNI is reused). A subnet
// overlapping another network's or the nodes' default bridge pool
// (10.213.0.0/16), or holding a known node's underlay address
// (NodeStatus.addr; an automatic subnet skips those), is InvalidArgument
// naming the other network or the node; an
// exhausted pool ResourceExhausted; a name clash AlreadyExists. bridge
// networks get a subnet (from the same pool, never overlapping) and no
// VNI; host networks neither. Two bridge networks may not share a Linux
// bridge name (spec.bridge_name, else shbr-<id>): AlreadyExists.
//
// Services name networks by name, id or id prefix; Create/UpdateService
// store the network id (resolveTaskNetworks), so renames cannot change an
// attachment. An unknown network is InvalidArgument on
// spec.task.networks[i].target. What the drivers allow is checked there
// too (specrules.NetworkDrivers): a host network is a service's only
// network and publishes no port and takes no alias; an ingress-mode port
// needs an overlay network among the service's (bridge networks are
// node-local); and a service with an internal network publishes no port
// (specrules.InternalPorts: its task has no default route).
// RemoveNetwork refuses (FailedPrecondition)
// a network that a service's spec or previous spec uses, naming them, or
// that a task that has not ended is still attached to; PruneNetworks
// removes every other network in one entry and returns their names.
//
// # Jobs (jobs.go)
//
// Job-mode services get their defaults here (one completion,
// max_concurrent = completions, restart on-failure, cron policy forbid).
// UpdateService keeps a job's job_status: an update of a one-off job bumps
// its iteration (a new run, which the orchestrator starts), a cron job's
// schedule change clears next_execution (the orchestrator computes it from
// now). A job has no rollout: its updates and rollbacks set no
// update_status (nothing would ever complete it), and a rollback of a
// job is an update to the previous spec. ListServices counts a job's REPLICAS as the COMPLETE tasks of its
// current run out of the completions wanted. The cluster setting
// task_history_limit is 0 (default 5) or 1 to MaxTaskHistoryLimit.
//
// # Rollouts (rollback.go)
//
// An UpdateService that changes the task spec bumps spec_version and sets
// update_status UPDATING (started now): the orchestrator rolls it out and
// moves the status on (a paused update restarts this way); a new update
// or rollback config resumes a paused rollout (UPDATING, same
// spec_version). Other changes (a scale) leave the status; made while a
// rollout is under way, they keep the task it started from as
// previous_spec's task (keepRolloutStart), so a rollback still undoes the
// rollout. update_status,
// job_status and rebalance_requested carry over every update.
// RollbackService swaps spec and previous_spec (FailedPrecondition "service
// x has no previous spec" for a service never updated), checks networks
// and ports again, bumps spec_version if the task spec differs and sets
// ROLLBACK_STARTED. Services get swarm's update and rollback configs
// when they name none (parallelism 1, pause, stop-first, monitor 5 s).
//
// # API tokens and pages (tokens.go, pagination.go)
//
// CreateToken stores an ApiToken (id, name, role, SHA-256 of the secret,
// expiry) in the cluster object and returns the bearer token once;
// names are unique, at most MaxAPITokens are kept (revoked and expired
// ones make room). ListTokens and GetCluster never show hashes; GetCluster
// shows join tokens to admins only (a viewer or operator token sees none),
// and UpdateNode refuses a role change to tokens below admin (and a
// promotion of a node not reporting raftstore.StoreFormat). A viewer
// token reads environment variable names, not values (redact.go:
// services, tasks and their Watch events), and RollbackService checks the
// restored spec against the caller's role as UpdateService does
// (checkHostAccess). Watch sends its headers as soon as it is accepted, so
// a quiet stream is open for its caller at once. ListNodes,
// ListServices and ListTasks page in id order (an opaque token naming the
// last id; page_size 0: DefaultPageSize, over MaxPageSize: refused;
// client.ListTasks etc. read every page for the CLI) and report
// the total matching the filters. A page costs a seek and the page
// (raftstore.Page in the narrowest index the filters allow: a service's or
// node's tasks, one task state, a name, an id prefix); the total is counted
// on a walk's first page and carried in the token, so a later page of a
// list over RecountMax reports the total as the walk began (pagination.go).
// A token names its walk (the list and its non-empty filters): used on
// another list or with other filters, or longer than pageTokenMax, it is
// refused with InvalidArgument on page.page_token. A page's walk visits at
// most PageVisitMax objects (raftstore.PageBounded): filters that refuse
// most of a big range get a short, even empty, page and a token.
//
// Handlers return errdefs classes (validation: InvalidArgument with field
// paths); the server's errdefs interceptor maps them to gRPC codes.
package controlapi
