package orchestrator

import (
	"cmp"
	"iter"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/restartpolicy"
	"github.com/shoal-dev/shoal/scheduler"
)

// Plan is what a reconcile wants written: every task in it is a clone
// (inputs are never changed); updates and deletes carry the meta.version
// they were read at, so a concurrent change fails the write instead of
// being overwritten.
type Plan struct {
	Create []*shoalv1.Task
	Update []*shoalv1.Task
	Delete []*shoalv1.Task
	// RetryAfter > 0: reconcile this service again after this long (a
	// restart delay or a max_attempts window is pending).
	RetryAfter time.Duration
	// More: the plan stopped at its entry's budget; reconcile again at
	// once for the rest.
	More bool
	// Service, if set, is the service to write back (its update status
	// changed, or a failed update rolls back), at the version read.
	Service *shoalv1.Service
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool {
	return len(p.Create) == 0 && len(p.Update) == 0 && len(p.Delete) == 0 && p.Service == nil
}

func (p *Plan) merge(q Plan) {
	p.Create = append(p.Create, q.Create...)
	p.Update = append(p.Update, q.Update...)
	p.Delete = append(p.Delete, q.Delete...)
	p.RetryAfter = minRetry(p.RetryAfter, q.RetryAfter)
	p.More = p.More || q.More
}

// minRetry is the earlier of two retries, 0 meaning none.
func minRetry(a, b time.Duration) time.Duration {
	switch {
	case a <= 0:
		return max(b, 0)
	case b <= 0:
		return a
	}
	return min(a, b)
}

// ReconcileReplicated plans the tasks of a replicated service: slots
// 1..spec.replicas each get exactly one live task; see the package
// documentation for the rules. tasks are the service's tasks (others are
// ignored).
func ReconcileReplicated(svc *shoalv1.Service, tasks []*shoalv1.Task, now time.Time) Plan {
	return reconcileReplicated(svc, tasks, now, nil)
}

// reconcileReplicated is ReconcileReplicated within a budget: slots are
// reconciled in order until it is spent. Groups are made one at a time, so
// a pass over a huge service costs memory for its tasks, not its replicas.
func reconcileReplicated(svc *shoalv1.Service, tasks []*shoalv1.Task, now time.Time, b *budget) Plan {
	p, _ := reconcileReplicatedFrom(svc, tasks, now, b, 0)
	return p
}

// reconcileReplicatedFrom is reconcileReplicated told that slots
// 1..settled are known to be settled (each holds exactly one task, live
// and of the current spec: group.settled), so it neither groups their
// tasks nor visits them — a service being created in chunks of a few
// thousand slots costs each pass the slots it adds, not all before them.
// The caller vouches for settled (the reconciler's settledSlots, kept from
// the watch events); the plan is the same as with 0, which is used
// instead when the skipped slots could matter: a rollout under way (they
// count in its tally) or outdated tasks found (one would start).
//
// It also returns how far the slots are settled once the plan is written:
// the longest prefix of slots each settled already or, being empty, given
// one new task by this plan.
func reconcileReplicatedFrom(svc *shoalv1.Service, tasks []*shoalv1.Task, now time.Time, b *budget, settled uint64) (Plan, uint64) {
	id := svc.GetMeta().GetId()
	replicas := uint64(max(svc.GetSpec().GetReplicas(), 0))
	if settled > replicas || rollsOut(svc) {
		settled = 0
	}
	var saved budget
	if b != nil {
		saved = *b
	}
	bySlot := map[uint64][]*shoalv1.Task{}
	for _, t := range tasks {
		if t != nil && t.GetServiceId() == id && (t.GetSlot() > settled || t.GetSlot() == 0) {
			bySlot[t.GetSlot()] = append(bySlot[t.GetSlot()], t)
		}
	}
	// Slots beyond the replica count (and slot 0, which no replicated task
	// should have) only have tasks to stop and history to trim.
	var extra []uint64
	for slot := range bySlot {
		if slot == 0 || slot > replicas {
			extra = append(extra, slot)
		}
	}
	slices.Sort(extra)
	through, contiguous := settled, true
	groups := func(yield func(*group) bool) {
		for slot := settled + 1; slot <= replicas; slot++ {
			g := &group{svc: svc, now: now, wanted: true, tasks: bySlot[slot], slot: slot, hist: b.histRule()}
			if !yield(g) {
				return
			}
			// Yielded: reconciled, its plan merged. Empty slots get
			// exactly one task (or none, if held back by a restart
			// policy: then the slot is not settled).
			if contiguous && (g.settled() || (len(g.tasks) == 0 && g.created == 1)) {
				through = slot
			} else {
				contiguous = false
			}
		}
		for _, slot := range extra {
			if !yield(&group{svc: svc, now: now, tasks: bySlot[slot], slot: slot, hist: b.histRule()}) {
				return
			}
		}
	}
	p, outdated := reconcileGroupsOutdated(svc, now, groups, b)
	if settled > 0 && outdated {
		// The rollout that would start counts every slot.
		if b != nil {
			*b = saved
		}
		return reconcileReplicatedFrom(svc, tasks, now, b, 0)
	}
	if outdated || p.Service != nil {
		through = 0
	}
	return p, through
}

// rollsOut: an update or rollback is under way (not paused), so every
// slot counts in its tally.
func rollsOut(svc *shoalv1.Service) bool {
	s := svc.GetUpdateStatus().GetState()
	return s == updUpdating || s == updRollbackStarted
}

// ReconcileGlobal plans the tasks of a global service: every eligible node
// (not DOWN, not draining, matching the constraints) gets exactly one live
// task; live tasks on other nodes are stopped. Restarts, updates and
// history work as for replicated services, keyed by node instead of slot.
// Constraints that do not parse (the control API rejects them) match no
// node.
func ReconcileGlobal(svc *shoalv1.Service, tasks []*shoalv1.Task, nodes []*shoalv1.Node, now time.Time) Plan {
	return reconcileGlobal(svc, tasks, nodes, now, nil)
}

// reconcileGlobal is ReconcileGlobal within a budget: nodes are reconciled
// in order until it is spent.
func reconcileGlobal(svc *shoalv1.Service, tasks []*shoalv1.Task, nodes []*shoalv1.Node, now time.Time, b *budget) Plan {
	id := svc.GetMeta().GetId()
	constraints, err := scheduler.ParseConstraints(svc.GetSpec().GetTask().GetPlacement().GetConstraints())
	eligible := map[string]bool{}
	for _, n := range nodes {
		if n != nil && err == nil && globalEligible(n, constraints) {
			eligible[n.GetMeta().GetId()] = true
		}
	}
	byNode := map[string][]*shoalv1.Task{}
	for _, t := range tasks {
		if t != nil && t.GetServiceId() == id {
			byNode[t.GetNodeId()] = append(byNode[t.GetNodeId()], t)
		}
	}
	keys := make([]string, 0, len(eligible)+len(byNode))
	for k := range eligible {
		keys = append(keys, k)
	}
	for k := range byNode {
		if !eligible[k] {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	paused := map[string]bool{}
	for _, n := range nodes {
		if n != nil && n.GetSpec().GetAvailability() == shoalv1.NodeAvailability_NODE_AVAILABILITY_PAUSE {
			paused[n.GetMeta().GetId()] = true
		}
	}
	groups := make([]*group, 0, len(keys))
	for _, k := range keys {
		groups = append(groups, &group{svc: svc, now: now, wanted: eligible[k], tasks: byNode[k], nodeID: k, hist: b.histRule(), paused: paused[k]})
	}
	return reconcileGroups(svc, now, slices.Values(groups), b)
}

// globalEligible: a global service runs on every node that is not down,
// not draining and matches its constraints. Paused or not-yet-ready nodes
// get their task too; the scheduler assigns it once they can take it.
func globalEligible(n *shoalv1.Node, cs []scheduler.Constraint) bool {
	if n.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_DOWN ||
		n.GetSpec().GetAvailability() == shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN {
		return false
	}
	for _, c := range cs {
		if !c.Match(n) {
			return false
		}
	}
	return true
}

// ReconcileRemoved plans the tasks of a deleted service: every task gets
// desired state REMOVE; tasks that ended, or that no agent holds, are
// deleted now; the others wait for their agent to report them stopped (or
// for their node to be declared down).
func ReconcileRemoved(tasks []*shoalv1.Task) Plan {
	return reconcileRemoved(tasks, nil)
}

// reconcileRemoved is ReconcileRemoved within a budget: tasks are handled
// in id order until it is spent.
func reconcileRemoved(tasks []*shoalv1.Task, b *budget) Plan {
	var p Plan
	tasks = slices.Clone(tasks)
	sortByID(tasks)
	for _, t := range tasks {
		if t == nil {
			continue
		}
		if b.spent() {
			p.More = true
			break
		}
		switch {
		case isTerminal(t) || neverReachedAgent(t):
			p.Delete = append(p.Delete, cloneTask(t))
			b.chargePlan(Plan{Delete: []*shoalv1.Task{t}})
		case t.GetDesiredState() != stateRemove:
			u := cloneTask(t)
			u.DesiredState = stateRemove
			p.Update = append(p.Update, u)
			b.charge(u)
		}
	}
	return p
}

// reconcileGroups reconciles every slot (or node) of a service and then
// replaces the outdated tasks the rollout lets through (update.go). With a
// budget, it stops (More) once the budget is spent, after a whole group or
// a whole replacement; a pass cut short makes no rollout decision (it
// would see only part of the slots).
func reconcileGroups(svc *shoalv1.Service, now time.Time, groups iter.Seq[*group], b *budget) Plan {
	p, _ := reconcileGroupsOutdated(svc, now, groups, b)
	return p
}

// reconcileGroupsOutdated is reconcileGroups also saying whether a wanted
// slot (node) has an outdated live task.
func reconcileGroupsOutdated(svc *shoalv1.Service, now time.Time, groups iter.Seq[*group], b *budget) (Plan, bool) {
	var p Plan
	ty := newTally(svc, now)
	rolledBack := isRollingBack(svc)
	startFirst := policyOf(svc, rollingBackNow(svc)).startFirst
	for g := range groups {
		if b.spent() {
			p.More = true
			break
		}
		g.startFirst, g.rolledBack = startFirst, rolledBack
		gp, st := g.reconcile()
		g.created = len(gp.Create)
		b.chargePlan(gp)
		p.merge(gp)
		if g.wanted && !g.paused {
			ty.add(st)
		}
		for _, t := range g.tasks {
			if t.GetSpecVersion() == svc.GetSpecVersion() && isTerminal(t) && endedBadly(svc, t) {
				ty.failed = append(ty.failed, t)
			}
		}
	}
	outdated := len(ty.outdated) > 0
	if p.More {
		return p, outdated
	}
	ro := planRollout(svc, ty, now)
	p.RetryAfter = minRetry(p.RetryAfter, ro.retry)
	switch {
	case ro.rollback:
		// Restarts of the abandoned spec's tasks are dropped: the next
		// pass fills their slots from the spec rolled back to.
		p.Service = RolledBack(svc, now, ro.status.GetMessage())
		p.Create = nil
		return p, outdated
	case ro.status != nil:
		p.Service = proto.Clone(svc).(*shoalv1.Service)
		p.Service.UpdateStatus = ro.status
	}
	for _, s := range ro.replace {
		if b.spent() {
			p.More = true
			break
		}
		g := s.g
		n := g.newTask()
		if startFirst {
			// The old task serves until the new one runs (and is
			// healthy); the slot's reconcile stops it then.
			b.charge(n)
			p.Create = append(p.Create, n)
			continue
		}
		u := cloneTask(s.outdated)
		shutDown(u, g.now)
		b.charge(u, n)
		p.Update = append(p.Update, u)
		p.Create = append(p.Create, n)
	}
	return p, outdated
}

// group is the tasks competing for one slot of a replicated service, or
// one node of a global service.
type group struct {
	svc   *shoalv1.Service
	tasks []*shoalv1.Task
	// wanted: the slot is within the replica count, or the node eligible.
	wanted bool
	slot   uint64 // replicated services
	nodeID string // global services
	now    time.Time
	// hist: the pass's history limit and reaping rule (nil: defaults).
	hist *histRule
	// startFirst: the rollout's order is start-first, so an outdated
	// running task stays while its replacement is not yet running.
	startFirst bool
	// rolledBack: the service went back to its previous spec; a task
	// still built from that very spec is current, whatever its version.
	rolledBack bool
	// paused: a global service's node whose availability is pause. It
	// takes no new task, so rollouts leave its task alone (as swarm mode
	// does): replaced, it would have none, and the replacement, pending
	// for ever, would hold the rollout's window. Once active again, the
	// node's outdated task is rolled out.
	paused bool
	// created: how many tasks the group's reconcile created (set by
	// reconcileGroups, for the settled prefix).
	created int
}

func (g *group) newTask() *shoalv1.Task { return newTask(g.svc, g.slot, g.nodeID, g.now) }

// reconcile plans the group, except for the replacement of an outdated
// live task, which it returns (in st) for the rollout to decide on.
func (g *group) reconcile() (p Plan, st slotState) {
	st.g = g
	if g.settled() {
		st.current = g.tasks[0]
		return Plan{}, st
	}
	// edits collects the changes to each task so that two rules touching
	// the same task produce one update.
	edits := map[string]*shoalv1.Task{}
	var order []string
	edit := func(t *shoalv1.Task) *shoalv1.Task {
		id := t.GetMeta().GetId()
		if e, ok := edits[id]; ok {
			return e
		}
		e := cloneTask(t)
		edits[id] = e
		order = append(order, id)
		return e
	}

	var live []*shoalv1.Task
	for _, t := range g.tasks {
		switch {
		case isLive(t):
			live = append(live, t)
		case t.GetDesiredState() >= shoalv1.TaskState_TASK_STATE_SHUTDOWN && neverReachedAgent(t):
			// Asked to stop before any agent got it: nobody else will
			// ever report on it, so the manager closes it.
			closeTask(edit(t), g.now)
		}
	}

	switch {
	case !g.wanted:
		for _, t := range live {
			shutDown(edit(t), g.now)
		}
	case len(live) > 0:
		slices.SortFunc(live, g.preferLive)
		keep, rest := live[0], live[1:]
		cur := g.svc.GetSpecVersion()
		if keep.GetSpecVersion() != cur && !g.sameSpec(keep) {
			st.outdated = keep
		} else {
			st.current = keep
			if g.startFirst && !runningHealthy(keep) {
				// Start-first: the best outdated running task keeps
				// serving until its replacement runs — unless the
				// replacement cannot be placed for want of room the old
				// task holds (max replicas per node, memory, CPU): then
				// the slot falls back to stop-first, or the rollout would
				// wait for ever (swarm mode's behaviour, moby#40797).
				if i := slices.IndexFunc(rest, func(t *shoalv1.Task) bool {
					return t.GetSpecVersion() != cur && t.GetStatus().GetState() == stateRunning
				}); i >= 0 {
					reason := unschedulable(keep)
					if reason != "" && freedByStopping(reason) {
						st.fellBack = reason // rest[i] is shut down below
					} else {
						st.blocked = reason
						rest = slices.Delete(slices.Clone(rest), i, i+1)
					}
				}
			}
		}
		for _, t := range rest {
			if moveInFlight(g.svc, keep, t) {
				continue // a rebalance move: both until the new one runs
			}
			shutDown(edit(t), g.now)
		}
	default:
		create, retry := g.restart()
		if create {
			p.Create = append(p.Create, g.newTask())
		}
		p.RetryAfter = retry
	}

	p.Delete = g.trimHistory()
	for _, id := range order {
		p.Update = append(p.Update, edits[id])
	}
	return p, st
}

// sameSpec: after a rollback, a task the failed update had not replaced
// yet runs the spec rolled back to; it stays (a rollback replaces only
// what the update changed).
func (g *group) sameSpec(t *shoalv1.Task) bool {
	return g.rolledBack && proto.Equal(t.GetSpec(), g.svc.GetSpec().GetTask())
}

// settled is the common case of a big service, answered without the
// allocations of a full reconcile: a wanted slot or node whose one task is
// live and of the current spec needs nothing.
func (g *group) settled() bool {
	return g.wanted && len(g.tasks) == 1 && isLive(g.tasks[0]) && g.tasks[0].GetSpecVersion() == g.svc.GetSpecVersion()
}

// preferLive orders live tasks best first: built from the current spec,
// then further along (a running task beats a pending one), then newer.
func (g *group) preferLive(a, b *shoalv1.Task) int {
	cur := g.svc.GetSpecVersion()
	aCur, bCur := a.GetSpecVersion() == cur, b.GetSpecVersion() == cur
	if aCur != bCur {
		if aCur {
			return -1
		}
		return 1
	}
	return cmp.Or(
		cmp.Compare(b.GetStatus().GetState(), a.GetStatus().GetState()),
		compareAge(b, a),
	)
}

// restart decides whether a group without a live task gets a new one now,
// and if not whether to look again later: the restart policy's rules, in
// restartpolicy (shared with the CLI, which tells a service that can no
// longer converge by them).
func (g *group) restart() (create bool, retry time.Duration) {
	create, retry, _ = restartpolicy.Decide(g.svc, g.tasks, g.now)
	return create, retry
}

// attempts returns, newest first, the group's tasks that count towards
// restart_policy.max_attempts (restartpolicy.Attempts).
func (g *group) attempts() []*shoalv1.Task {
	return restartpolicy.Attempts(g.svc, g.tasks, g.now)
}

// trimHistory returns clones of the terminal tasks to delete: all but the
// cluster's task history limit (the newest), except that tasks counting
// towards max_attempts are kept too (up to max_attempts+1 of them: the
// first run and its restarts), or a limit at or above the history limit
// could never be reached; and only those Reapable lets go (history.go).
func (g *group) trimHistory() []*shoalv1.Task {
	keep := map[string]bool{}
	if limit := g.svc.GetSpec().GetTask().GetRestart().GetMaxAttempts(); limit+1 > int64(g.hist.keep()) {
		for i, t := range g.attempts() {
			if int64(i) > limit {
				break
			}
			keep[t.GetMeta().GetId()] = true
		}
	}
	return g.hist.reapHistory(g.tasks, func(t *shoalv1.Task) bool { return keep[t.GetMeta().GetId()] })
}
