// Package scheduler is Shoal's pure placement: nodes, the tasks already on
// them and a batch of pending tasks go in; assignments (task → node) and
// failures (task → why no node fits) come out. It does no I/O, knows nothing
// of raft and starts no goroutines, so it can be table-tested and
// benchmarked on its own. The manager's scheduler loop
// (manager/orchestrator) feeds it from the store and writes its answer back
// in one raft entry per batch.
//
// # Constraints
//
// Placement constraints are expressions "KEY==VALUE" or "KEY!=VALUE" over
// node.id, node.name (spec.name, else the hostname), node.hostname,
// node.role (manager|worker, from the node's certificate role),
// node.platform.os, node.platform.arch and node.labels.<label>.
// ParseConstraint validates one (the control API uses it to reject bad
// specs with field paths); Constraint.Match evaluates it against a node.
// Ids and label values compare exactly; names, hostnames, roles, OS and
// architecture case-insensitively (x86_64 is amd64 and aarch64 is arm64, as
// engines report them differently). A "!=" on a label the node does not
// have matches, as in swarm mode.
//
// # Eligibility
//
// A node can take a task when
//
//   - its status is READY (not DOWN, not otherwise not ready) and its
//     availability ACTIVE (PAUSE: no new task, existing ones keep
//     running; DRAIN: none),
//   - every constraint of the task matches it,
//   - fewer than placement.max_replicas_per_node tasks of the same service
//     are on it (0: no limit),
//   - the task's reservations (nano_cpus, memory_bytes) fit in the node's
//     capacity minus the reservations of the tasks on it — existing ones and
//     the ones assigned earlier in the same batch; a capacity of 0 means the
//     node did not report it and is treated as unlimited.
//
// A task whose node_id is already set (a global service's task, a
// rebalance move) may only go to that node.
//
// # Choice
//
// Spread preferences (placement.spread, "node.labels.<label>", outermost
// first) make a tree: the candidates are grouped by the value of the first
// label, each group by the value of the second, and so on. A task descends
// it, at every level taking the group with the fewest tasks of the
// service (then the smaller value): tasks are spread evenly over the
// values, not over the nodes — three nodes in zone a and one in zone b get
// half the tasks each side. Nodes without a label form their own group
// (value ""), as in swarm mode, so a preference on a label no node has
// changes nothing (the Control API refuses a new preference on a label no
// node has; nodes may lose it later). A group
// whose nodes can take no more leaves its parent, and the tasks go to the
// others.
//
// Within a group (the whole cluster without preferences) placement.strategy
// picks the node:
//
//   - spread (default, ""): the fewest tasks of the same service, then the
//     fewest tasks overall, then the smallest node id.
//   - binpack: the fullest node that still fits — the least free memory
//     (capacity minus reservations), then the least free CPU, comparing
//     only the resources the task reserves (a node that reported no
//     capacity counts as emptier than any that did), then the most tasks
//     overall, then the smallest node id. Without reservations that is the
//     node with the most tasks: a service piles onto one node until
//     max_replicas_per_node (or a resource) stops it, then the next.
//
// Every choice is deterministic.
//
// # Batches and cost
//
// Pending tasks are sorted by (service id, slot, task id) and grouped by
// service and placement (constraints, preferences, strategy,
// reservations, max per node). Assignments update the accounting for the
// rest of the batch.
//
// The tasks already on nodes come in as a Placed: per node, the task
// count, the reservations and the count per service. The scheduler loop
// keeps one across batches (from its task events and the assignments it
// commits), so a batch costs the nodes and the services on them, not a
// read of every placed task; Schedule builds one from a task list. A
// Placed keeps the newest state it was shown of each task it counts
// (meta.version): events that arrive after a newer state are ignored.
//
// Spread without preferences — the common case — shares one heap (the
// pool) across every group of the call: nodes without a task of the
// service always come first and are ordered by (tasks, id) for every
// service alike, so only the nodes holding tasks of the current service
// leave the pool while it is scheduled, into a small heap of their own. A
// task costs O(log nodes) amortised plus the nodes a group skips
// (constraints, resources), each skipped once per group; a group costs
// O(its service's nodes × log nodes), not O(nodes). The pool places
// exactly as a heap per group would (tested on random clusters).
//
// Binpack and preferences build, per group, the tree of heaps once
// (O(nodes), constraints evaluated once per node); each task then costs
// O(depth × log branching + log nodes): a walk down the tree, a heap fix
// per level.
// A node that fails a group's resource or max-per-node check is dropped
// from that group's heap for good, which is sound because usage only grows
// within a batch and all tasks of a group ask for the same.
//
// # Failures
//
// A task that finds no node gets a Failure whose reason says what the task
// asked for and counts the nodes by cause, the most common first:
// "no node has 2 GiB free: 3 lack memory, 1 is drained, 1 is down";
// without reservations "no suitable node: 2 do not satisfy the
// constraints, 1 is paused"; "…: the cluster has no nodes". A task bound
// to a node gets `node "n1" is not suitable: drained`. The scheduler loop
// writes the reason into status.message only when it changed, and places
// the task as soon as something changes (a node, a task ending).
package scheduler
