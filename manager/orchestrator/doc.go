// Package orchestrator makes the cluster's tasks match its services. It
// runs on the raft leader only: Orchestrator.Run is started when this
// manager becomes leader and its context is cancelled when leadership is
// lost.
//
// The rules are pure functions over objects read from the store
// (ReconcileReplicated, ReconcileGlobal, ReconcileReplicatedJob,
// ReconcileGlobalJob, PlanJobRun, ReconcileRemoved, OrphanOnDownNodes,
// DrainedNodeTasks, Reapable). They never change their inputs;
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
//     ORPHANED, NONE never; not before its delay after it ended (the
//     plan asks to be run again then: RetryAfter) — delay_ms, doubled for
//     each earlier end of the slot's streak up to max_delay_ms
//     (exponential back-off; 0: none), the streak being the newest tasks
//     of the current spec that ended on their own, up to one that stayed
//     up for max_delay_ms (restartpolicy.Streak); and not once max_attempts
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
//   - each slot keeps the cluster's task_history_limit (default
//     HistoryLimit, 5) newest terminal tasks, by the time they ended, and
//     reaps older ones (see History) — keeping more while they count
//     towards max_attempts, which could never be reached otherwise. Slots
//     beyond replicas keep their history too.
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
//   - a global service's task on a paused node is left alone (as in
//     swarm mode: the node takes no new task) and its node is not counted;
//     once the node is active again, its outdated task is rolled out;
//   - stop-first stops the outdated task and creates its replacement in
//     one plan; start-first creates the replacement and keeps the best
//     outdated RUNNING task until it runs healthy — unless the scheduler
//     could not place the replacement for room the old task holds (max
//     replicas per node, memory, CPU): that slot falls back to stop-first
//     (where swarm mode waits for ever, moby#40797); either way the update
//     status message carries the scheduler's reason;
//   - a slot is updated once its current task ran healthy for monitor_ms
//     (a RetryAfter until then), counted for a task with a health check
//     from the check's latest news (its turning healthy), not from its
//     start (readySince; delay likewise); all updated: COMPLETED
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
// service rolls out, or while a drain waits for parallelism. So is a
// service update that changes only its spec's labels (and, outside a
// rollout, its previous_spec: `service update --label-add`, a PatchService
// of labels): no plan reads them (labelsOnly).
//
// # Global services
//
// Every eligible node — not DOWN, not draining, matching the constraints —
// needs one live task, created with its node_id preset and slot 0; live
// tasks on other nodes are stopped. Restarts, updates and history work as
// for slots, keyed by node id.
//
// # Jobs
//
// A job-mode service runs its tasks to COMPLETE, run after run;
// job_status.iteration (in raft) is the current run, and each task
// carries the run it belongs to (job_iteration). Replicated-job: slots
// 1..job.completions (default 1) each need one COMPLETE task of the run,
// with at most job.max_concurrent (default: completions) of the run's
// tasks live at once, slots in order. Global-job: every eligible node (as
// for a global service) needs one COMPLETE task of the run; a node that
// joins during or after the run gets one too, once per run; a paused node
// gets none (it takes no new task; it keeps one it runs) until it is
// active again, and the run does not wait for it. In both:
//
//   - a slot (node) with a COMPLETE task of the run is done: nothing there
//     is ever restarted, whatever the restart condition;
//   - a slot whose task of the run ended otherwise gets a new one per the
//     restart policy (restartpolicy.Decide over the run's tasks; the API's
//     default for jobs is on-failure, with the back-off as above); a slot
//     the policy gives up on stays failed, and the run cannot complete;
//   - live tasks of an earlier run are stopped (a new run replaces the
//     old), except under the cron policy allow; so are live tasks of slots
//     beyond completions and on nodes no longer eligible;
//   - history is reaped per slot (node) across runs, but the run's own
//     completions are always kept: they are what says the slot is done.
//
// Runs start in PlanJobRun. A one-off job's first run starts once it is
// created; `service update` starts the next (the Control API bumps the
// iteration, so the orchestrator sees a run without tasks). A cron job
// (job.schedule, UTC; robfig/cron's syntax through specrules) keeps its
// next firing in job_status.next_execution, computed when the job is
// created or its schedule changes — nothing runs at creation — and the
// reconciler's timer (the RetryAfter of the job's plan, owned by its one
// goroutine like every retry) wakes it then. A due firing under forbid
// (the default) is skipped while the previous run is going (a task of
// the service is live, or a slot of the run will get one); allow starts
// a run beside it; replace starts one and stops the old run's tasks.
// Either way next_execution becomes the schedule's first time after now.
// The new job status is written in the same raft entry as the run's first
// tasks, so after a failover the new leader finds both or neither: it
// never fires twice nor loses a firing. A firing missed while there was
// no leader (or several) runs once, when a leader is back and its first
// pass finds next_execution in the past — not once per missed firing.
// `service update` of a cron job does not start a run: its new spec
// applies from the next firing.
//
// # History
//
// Ended tasks are kept per slot (per node of a global service) up to the
// cluster setting task_history_limit (default 5) and the older ones are
// deleted; lowering the setting makes a pass over every service at once. Agents keep every task they are assigned — its log, and its
// container's leftovers until released — until the managers delete it;
// they never tell the managers what they still hold (the hello carries no
// task list, and reports about ended tasks are dropped as news, see the
// dispatcher). So deleting a task is what makes its agent remove it, and
// the reaper deletes a task only when nothing still needs it there
// (Reapable):
//
//   - its end was reported by its agent (COMPLETE, FAILED, REJECTED, or
//     SHUTDOWN from the agent): the container has exited, and the agent
//     removes what is left and the log once the task is gone; or no
//     agent ever held it (closed by the manager while PENDING);
//   - an ORPHANED task — ended by the managers because its node went DOWN
//     or was removed, without any word from its agent — is kept beyond
//     the limit while its node is still in the cluster and not READY: a
//     node that was only cut off may still run the container, and on its
//     return its agent must still find the task in its assignment set to
//     know to stop it (and its log to be read). Once the node is READY
//     again (its agent has the ended task and stops it) or removed (it
//     removes every task itself), it is reaped like the others.
//
// A log being followed when its task is reaped ends with the task: only
// the oldest ends beyond the limit are reaped.
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
// # Rebalancing
//
// PlanRebalance (rebalance.go, pure) spreads a replicated service's live
// tasks evenly again over the eligible nodes (ready, active, matching the
// constraints): while the most and the least loaded differ by more than
// one, a running (and healthy) task of the most loaded moves to the least
// loaded, at most spec.update.parallelism moves in flight (0: all at
// once), never above max_replicas_per_node. A move is start-first: a new
// task for the same slot with node_id preset to the target; the reconciler
// keeps a slot's two current tasks while the newer, on another node, is on
// its way and the older runs (moveInFlight), and the rebalance loop stops
// the older once the newer runs. A move the scheduler cannot place (its
// reason written) is cancelled and its node avoided for the settle period,
// as is a node where a move's task ended on its own (failed to start); a
// rebalance that cannot go on looks again after that period.
// Services placed by binpack are not rebalanced. The rebalance loop runs
// it for services with rebalance_requested (`service rebalance`, cleared
// once even) and, with spec.auto_rebalance, when a node becomes ready and
// active (joins or returns) — counting a node only once it has stayed so
// for RebalanceSettle (30 s, from the leader's first sight of it): a
// flapping node starts its period again at each return and is never given
// tasks to lose again.
//
// # Loops
//
// Run starts three event-driven loops, each owned by one goroutine:
//
//   - the service reconciler watches services, tasks and nodes. It starts
//     with a full pass (every service, the tasks of services that no longer
//     exist, every node), then marks services dirty from events (a node
//     change marks the global services, and has the tasks on that node
//     checked for DOWN or DRAIN, as does a live task placed or created on
//     a node already down or draining), waits ~10 ms for the burst to end and
//     writes the pass — every dirty service's plan — in one
//     store.Update, bounded to 8,000 objects and 4 MiB (chunk.go). The
//     tasks a pass creates are placed in that same entry (placement.go):
//     all of them in one scheduler.SchedulePlaced call against what the
//     tasks on nodes take (first brought level with the pass's own read of
//     those services' tasks: the scheduler loop's events, which feed it,
//     may lag the entry the pass read, and a task that ended would still
//     count on its node and push the replacement's spread elsewhere;
//     catchUp), so a task that can run at once is written once,
//     created ASSIGNED on its node, instead of created PENDING and then
//     assigned by the scheduler loop in a second entry; those it cannot
//     place (no node fits, or on networks, waiting for the allocator's
//     addresses) are created PENDING for the scheduler loop, which records
//     why. The two loops share that record (placement): each holds it from
//     its read to the record of its commit, so neither places on capacity
//     the other has just taken. Its placements are logged and timed as
//     the scheduler loop's ("tasks assigned"; the placement histogram
//     from the start of placing to the commit). A pass
//     with more to do stops at a slot, node or task boundary and the next
//     pass follows at once, recomputing from the store (so a new leader
//     also carries on from the store, never repeating a giant entry). What
//     the loop keeps across passes only lets it skip work, never decide
//     differently: per replicated service, how far its slots are known
//     settled (slots 1..n each hold one live task of the current spec),
//     found by a committed pass and dropped by any event that could change
//     a slot (the service changed, but for its labels; one of its tasks
//     created by another writer, deleted or no longer live; a watch cut; a
//     write of unknown outcome), so a service created in 8,000-task passes
//     costs each pass the slots it adds, not every slot before them (the
//     plan is the one made from slot 1: TestReconcileReplicatedFromSettled,
//     TestSettledSlotsRandomEvents); a rollout under way or an outdated
//     task found makes the pass count every slot. Whether a task's node is
//     down or draining and its service rolling out is likewise kept from
//     the node and service events, not looked up per task event. A
//     service update that changes only its labels (and, outside a
//     rollout, its previous spec) makes no pass: no plan reads them
//     (labelsOnly; its settled slots follow it to the new version). A
//     version conflict re-reads and retries (bounded);
//     RetryAfter (a restart delay, a max_attempts window, a cron
//     firing) becomes a timer.
//
//   - the scheduler loop watches tasks and nodes. When tasks become pending
//     or nodes change (or, if some tasks could not be placed, when tasks
//     end), it runs scheduler.SchedulePlaced over the pending tasks (as
//     many as one bounded entry holds; the next batch starts after the last
//     task of this one, at once) against what the tasks on nodes take — a
//     scheduler.Placed the loop keeps from its task events and the two
//     placing loops' commits (recorded with the entry's index as their version, so the
//     late events of older states do not undo them), read from the store again only at the start of a term,
//     after a watch cut or after a write of unknown outcome — and writes the batch in one store.Update: node_id and status ASSIGNED for those
//     placed (WriteTx.AssignTask: the entry carries the id, the version read, the node and the status, a STORE_OP_KIND_TASK_ASSIGN op),
//     and for the others the failure reason in status.message (WriteTx.UpdateTaskStatus) —
//     only when it changed, so that an unschedulable task costs no writes. Tasks are created sharing
//     their service's TaskSpec (newTask), which the store writes as a compact STORE_OP_KIND_TASK_CREATE
//     op without the spec (raftstore/taskbulk.go); an op refused because the service's spec moved
//     is a version conflict, and the pass plans again. A pass's budget (chunk.go) sizes the spec the
//     tasks share once, not once per task.
//
//   - the rebalance loop watches services, nodes, and the tasks of
//     services being rebalanced, and writes PlanRebalance's moves.
//
// A loop's events are read off its subscription by a goroutine of their
// own into a queue coalesced by object (eventq.go), and the loop takes
// them between passes: a pass over 100,000 tasks no longer leaves the
// store's ring (16,384 events) to overflow and cut the watch, which had
// forced full passes long enough to be cut again and stalled scheduling.
// A watch that ends anyway (the store was restored from a snapshot, the
// index was compacted, the queue's reader fell a whole ring behind) is
// replaced by a new one and a full pass. Passes that fail are retried
// with backoff.
package orchestrator
