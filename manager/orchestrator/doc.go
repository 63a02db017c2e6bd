// Package orchestrator makes the cluster's tasks match its services. It
// runs on the raft leader only: Orchestrator.Run is started when this
// manager becomes leader and its context is cancelled when leadership is
// lost.
//
// The rules are pure functions over objects read from the store
// (ReconcileReplicated, ReconcileGlobal, ReconcileRemoved,
// OrphanOnDownNodes, DrainedNodeTasks). They never change their inputs;
// they return a Plan of cloned tasks to create, update and delete, so they
// are table-tested without raft. The loops (orchestrator.go,
// reconciler.go, schedloop.go) only feed them and write their plans.
//
// # Task lifecycle
//
// A task is live while desired_state <= RUNNING and status.state <
// COMPLETE; terminal once status.state >= COMPLETE (COMPLETE, SHUTDOWN,
// FAILED, REJECTED, ORPHANED). Managers move a task up to ASSIGNED, agents
// from ACCEPTED on (docs/task-states.md). The orchestrator stops a task by
// raising its desired state to SHUTDOWN (REMOVE once its service is
// deleted) and lets the agent report the end — except for a task no agent
// holds yet (status <= PENDING), which it closes itself (status SHUTDOWN).
//
// # Replicated services
//
// Slots 1..spec.replicas each need exactly one live task:
//
//   - a slot without one gets a new task (status PENDING, the service's
//     current task spec and spec_version), subject to the restart policy
//     when the slot's latest task ended on its own (desired still RUNNING):
//     condition ANY restarts, ON_FAILURE only after FAILED, REJECTED or
//     ORPHANED, NONE never; not before delay_ms after it ended (the plan
//     asks to be run again then: RetryAfter); and not once max_attempts
//     restarts have been made, that is once max_attempts+1 tasks of the
//     current spec ended on their own within window_ms (0: ever) — with a
//     window, the slot is looked at again when the oldest counted end
//     leaves it. A latest task we stopped ourselves (scale
//     down then up, drain) or built from an older spec is replaced at once:
//     that is not a restart.
//   - live tasks in slots beyond replicas are stopped; two live tasks in a
//     slot keep the best (current spec, then further along, then newer).
//   - live tasks built from an older spec_version are replaced in their
//     slot as the rollout lets them (below).
//   - each slot keeps the HistoryLimit (5) newest terminal tasks, by the
//     time they ended, and deletes older ones — keeping more only while
//     they count towards max_attempts, which could never be reached
//     otherwise. Slots beyond replicas keep their history too.
//
// # Rolling updates (update.go)
//
// A spec change rolls out under spec.update (a rollback under the
// rollback config of the spec rolled back from), with swarm's defaults:
// parallelism 1 (0: all at once), stop-first, failure action pause,
// monitor 5 s. The state is the service's update_status in raft — the
// control API writes UPDATING (ROLLBACK_STARTED) with the spec; the
// orchestrator moves it on — and the tasks themselves, never memory, so a
// new leader continues where the old one was:
//
//   - a slot is in flight while it has no outdated live task and its
//     current task is not yet running-and-healthy (runningHealthy: RUNNING
//     with health NONE or HEALTHY); at most parallelism are in flight;
//     the next slot starts no sooner than delay_ms after the newest new
//     task began running (a RetryAfter);
//   - stop-first stops the outdated task and creates its replacement in
//     one plan; start-first creates the replacement and keeps the best
//     outdated RUNNING task until it runs healthy;
//   - a slot is updated once its current task ran healthy for monitor_ms
//     (a RetryAfter until then); all updated: COMPLETED
//     (ROLLBACK_COMPLETED);
//   - every task of the new spec_version that ended on its own (FAILED,
//     REJECTED, or COMPLETE while meant to run) is a failure; more than
//     max_failure_ratio of the slots: pause (PAUSED: no more replacements
//     until the next update), continue, or rollback (previous spec back,
//     spec_version bumped, ROLLBACK_STARTED; a rollback that fails pauses).
//     A slot whose new task failed waits for the restart policy before it
//     is tried again.
//   - a rollback keeps the live tasks still built from the spec it goes
//     back to: it replaces only what the update reached.
//
// Task updates are otherwise ignored by the reconciler (a live task's
// progress changes no plan), except a task becoming RUNNING while its
// service rolls out, or while a drain waits for parallelism.
//
// # Global services
//
// Every eligible node — not DOWN, not draining, matching the constraints —
// needs one live task, created with its node_id preset and slot 0; live
// tasks on other nodes are stopped. Restarts, updates and history work as
// for slots, keyed by node id.
//
// # Nodes and removal
//
// Tasks that have not ended on a DOWN or removed node are ORPHANED (no
// agent will report on them); their slots are then refilled elsewhere per
// the restart policy. Live tasks of replicated services on a draining node
// get desired state SHUTDOWN, so the slot gets a new task elsewhere at
// once — at most update.parallelism of a service at a time (LimitDrain:
// a move is in flight until the slot's new task runs healthy). A deleted service's tasks get desired state REMOVE and are deleted
// once terminal (or at once if no agent holds them).
//
// # Loops
//
// Run starts two event-driven loops, each owned by one goroutine:
//
//   - the service reconciler watches services, tasks and nodes. It starts
//     with a full pass (every service, the tasks of services that no longer
//     exist, every node), then marks services dirty from events (a node
//     change marks the global services, and has the tasks on that node
//     checked for DOWN or DRAIN), waits ~10 ms for the burst to end and
//     writes the pass — every dirty service's plan — in one
//     store.Update, bounded to 1,000 objects and 1 MiB (chunk.go): a pass
//     with more to do stops at a slot, node or task boundary and the next
//     pass follows at once, recomputing from the store (so a new leader
//     also carries on from the store, never repeating a giant entry). A version conflict re-reads and retries (bounded);
//     RetryAfter becomes a timer.
//   - the scheduler loop watches tasks and nodes. When tasks become pending
//     or nodes change (or, if some tasks could not be placed, when tasks
//     end), it runs scheduler.Schedule over the pending tasks (as many as
//     one bounded entry holds; the next batch starts after the last task of
//     this one, at once) and writes the batch in one store.Update: node_id and status ASSIGNED for those
//     placed, and for the others the failure reason in status.message —
//     only when it changed, so that an unschedulable task costs no writes.
//
// A watch that ends because the loop fell behind, the store was restored
// from a snapshot or the index was compacted is replaced by a new one and
// a full pass. Passes that fail are retried with backoff.
package orchestrator
