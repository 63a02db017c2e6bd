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
//   - its status is READY and its availability ACTIVE,
//   - every constraint of the task matches it,
//   - the task's reservations (nano_cpus, memory_bytes) fit in the node's
//     capacity minus the reservations of the tasks on it — existing ones and
//     the ones assigned earlier in the same batch; a capacity of 0 means the
//     node did not report it and is treated as unlimited,
//   - fewer than placement.max_replicas_per_node tasks of the same service
//     are on it (0: no limit).
//
// A task whose node_id is already set (a global service's task) may only
// go to that node.
//
// # Choice
//
// Among eligible nodes the scheduler picks the one with the fewest tasks of
// the same service, then the fewest tasks overall, then the smallest node
// id, so the result is deterministic and a service spreads evenly. Spread
// preferences (placement.spread) are not implemented yet.
//
// # Batches
//
// Pending tasks are sorted by (service id, slot, task id) and grouped by
// service and placement (constraints, reservations, max per node): a group
// evaluates its constraints once per node and keeps a min-heap of candidate
// nodes. Assignments update the accounting for the rest of the batch. A
// node that fails a group's resource or max-per-node check is dropped from
// that group's heap for good, which is sound because usage only grows within
// a batch and all tasks of a group ask for the same. A task that finds no
// node gets a Failure whose reason counts the nodes by cause, e.g.
// "no suitable node (5 nodes: 2 not ready, 1 drained, 2 insufficient
// memory)".
package scheduler
