package orchestrator

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/scheduler"
	"github.com/shoal-dev/shoal/specrules"
)

// reconciler is the service reconciler loop: it keeps every service's
// tasks matching its spec, ends the tasks of down nodes, stops those of
// draining nodes, removes the tasks of deleted services and trims history.
// Its state is owned by the goroutine running Orchestrator.drive.
type reconciler struct {
	o   *Orchestrator
	log *slog.Logger
	// full: the next pass covers every service, task and node.
	full bool
	// services are the ids of services to reconcile (deleted ones too).
	services map[string]bool
	// nodes are node ids whose tasks must be checked for a down or
	// draining node.
	nodes map[string]bool
	// globals: a node changed, so every global service is reconciled.
	globals bool
	// retryAt is when a service asked to be reconciled again (restart
	// delay, max_attempts window).
	retryAt map[string]time.Time
	// drainWaiting: draining nodes with tasks held back by their
	// service's update parallelism (update_drain.go).
	drainWaiting map[string]bool
	// histLimit is the task_history_limit the last pass applied (0: no
	// pass yet): a cluster write that lowers it makes a full pass.
	histLimit int
	// settled keeps, per replicated service, how far its slots are known
	// settled (settledSlots), so that a pass over a service being created
	// in chunks visits only the slots it adds. Set from committed passes,
	// dropped by any event that could unsettle a slot, cleared on resync.
	settled map[string]settledSlots
	// own holds the raft indexes of this loop's latest commits: the
	// creation events of its own tasks (already counted in settled) do
	// not drop a service's settled slots.
	own     [16]uint64
	ownNext int
	// unusable and rolling answer observe's questions about a task's node
	// (gone, down or draining) and service (rolling out) without a store
	// lookup per task event: filled from the store on first need, then
	// kept by the node and service events (which come in commit order, so
	// by the time a task's event is observed, those of earlier node or
	// service changes were), cleared on resync.
	unusable map[string]bool
	rolling  map[string]bool
	// seen holds each service as its last event since the resync had it,
	// so that an update changing only what no plan reads (labelsOnly) is
	// no pass.
	seen map[string]*shoalv1.Service
}

// settledSlots says that slots 1..through of the service, at meta
// version svcVersion, each hold exactly one task, live and of the current
// spec (group.settled). It holds from the pass that found it until an
// event says otherwise: the service changed (a labels-only change moves
// svcVersion on instead: labelsOnly), or one of its tasks was
// created (by another writer), deleted, or stopped being live — a live
// task's progress (assigned, running) keeps it.
type settledSlots struct {
	svcVersion uint64
	through    uint64
}

func newReconciler(o *Orchestrator) *reconciler {
	return &reconciler{
		o: o, log: o.log.With("loop", "reconciler"),
		services: map[string]bool{}, nodes: map[string]bool{}, retryAt: map[string]time.Time{},
		settled: map[string]settledSlots{}, unusable: map[string]bool{}, rolling: map[string]bool{},
		seen: map[string]*shoalv1.Service{},
	}
}

func (r *reconciler) name() string { return "reconciler" }

func (r *reconciler) kinds() []raftstore.Kind {
	return []raftstore.Kind{raftstore.KindService, raftstore.KindTask, raftstore.KindNode, raftstore.KindCluster}
}

func (r *reconciler) resync() {
	r.full = true
	// Events were missed.
	clear(r.settled)
	clear(r.unusable)
	clear(r.rolling)
	clear(r.seen)
}

func (r *reconciler) isOwn(version uint64) bool {
	return version != 0 && slices.Contains(r.own[:], version)
}

// unsettle drops what is known settled of a task's service when the event
// may change a slot: anything but a live task's progress and the creation
// of this loop's own tasks.
func (r *reconciler) unsettle(ev *shoalv1.WatchEvent, t *shoalv1.Task) {
	if len(r.settled) == 0 {
		return
	}
	switch ev.GetAction() {
	case shoalv1.WatchAction_WATCH_ACTION_UPDATE:
		if isLive(t) {
			return
		}
	case shoalv1.WatchAction_WATCH_ACTION_CREATE:
		if r.isOwn(t.GetMeta().GetVersion()) {
			return
		}
	}
	delete(r.settled, t.GetServiceId())
}

func (r *reconciler) observe(ev *shoalv1.WatchEvent) bool {
	switch obj := raftstore.Unwrap(ev.GetObject()).(type) {
	case *shoalv1.Service:
		id := obj.GetMeta().GetId()
		prev, ok := r.seen[id]
		if ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE {
			delete(r.seen, id)
		} else {
			r.seen[id] = obj
		}
		if ok && ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_UPDATE && labelsOnly(prev, obj) {
			// The pass due for prev (or done: it read prev or later)
			// plans obj alike; slots it found settled stay so.
			if s, ok := r.settled[id]; ok && s.svcVersion == prev.GetMeta().GetVersion() {
				s.svcVersion = obj.GetMeta().GetVersion()
				r.settled[id] = s
			}
			return false
		}
		r.services[obj.GetMeta().GetId()] = true
		delete(r.settled, obj.GetMeta().GetId())
		r.rolling[obj.GetMeta().GetId()] = ev.GetAction() != shoalv1.WatchAction_WATCH_ACTION_DELETE && inRollout(obj)
	case *shoalv1.Node:
		r.nodes[obj.GetMeta().GetId()] = true
		r.unusable[obj.GetMeta().GetId()] = ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE || unusableNode(obj)
		r.globals = true
	case *shoalv1.Cluster:
		// A lower history limit reaps every slot's older tasks now, not
		// whenever each service changes next; other settings (or a
		// higher limit) change no plan.
		limit := int(obj.GetSettings().GetTaskHistoryLimit())
		if limit <= 0 {
			limit = HistoryLimit
		}
		if r.histLimit == 0 || limit >= r.histLimit {
			return false
		}
		r.full = true
	case *shoalv1.Task:
		r.unsettle(ev, obj)
		if ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_UPDATE && isLive(obj) {
			// A task can never become live again, so a live task's
			// progress (assigned, accepted, running...) changes no plan:
			// skipping these keeps agent status batches cheap. One case
			// matters: the scheduler may have placed the task on a node
			// that went down or began draining after it read the node,
			// and after that node's own pass.
			if n := obj.GetNodeId(); n != "" && r.nodeUnusable(n) {
				r.nodes[n] = true
				return true
			}
			// Rollouts and drains move on when a new task runs.
			if obj.GetStatus().GetState() == stateRunning {
				return r.progressed(obj)
			}
			return false
		}
		if ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_CREATE && isLive(obj) {
			// Likewise a task another writer creates with its node
			// preset (a rebalance move) on a node that began draining
			// or went down after that writer read it: the service's
			// pass keeps it, the node's pass drains (orphans) it.
			if n := obj.GetNodeId(); n != "" && r.nodeUnusable(n) {
				r.nodes[n] = true
			}
		}
		r.services[obj.GetServiceId()] = true
	default:
		return false
	}
	return true
}

// nodeUnusable: the node is gone, down or draining, so its tasks need the
// orphan / drain rules.
func (r *reconciler) nodeUnusable(id string) bool {
	if u, ok := r.unusable[id]; ok {
		return u
	}
	n, ok := raftstore.Get[*shoalv1.Node](r.o.store.View(), id)
	u := !ok || unusableNode(n)
	r.unusable[id] = u
	return u
}

func unusableNode(n *shoalv1.Node) bool {
	return n.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_DOWN ||
		n.GetSpec().GetAvailability() == shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN
}

// rollingOut: the service is rolling out (inRollout).
func (r *reconciler) rollingOut(id string) bool {
	if v, ok := r.rolling[id]; ok {
		return v
	}
	svc, ok := raftstore.Get[*shoalv1.Service](r.o.store.View(), id)
	v := ok && inRollout(svc)
	r.rolling[id] = v
	return v
}

// passResult is what a pass did, for logging once it is committed.
type passResult struct {
	services int
	orphaned []*shoalv1.Task
	drained  []*shoalv1.Task
	// drainWaiting: nodes with drained tasks held back by parallelism.
	drainWaiting map[string]bool
	changes      []serviceChange
	retry        map[string]time.Duration
	jobs         []jobPass
	// more: the pass stopped at its entry's budget.
	more bool
	// histLimit: the history limit the pass applied.
	histLimit int
	// settled: how far each replicated service reconciled is settled once
	// the pass is committed (absent: not known).
	settled map[string]settledSlots
	// placed are the created tasks the pass placed (placeCreated), and
	// placeStart when it began placing them: the placement is timed from
	// there to the commit, as the scheduler loop times its batches.
	placed     []*shoalv1.Task
	placeStart time.Time
	// rebuilt is the placed set the pass read from the store, when the
	// placement had none.
	rebuilt *scheduler.Placed
}

type serviceChange struct {
	id                        string
	removed                   bool
	created, updated, deleted int
	// rollout: the update status written, if it changed state.
	rollout *shoalv1.UpdateStatus
}

func (r *reconciler) pass(ctx context.Context, now time.Time) (time.Time, error) {
	for id, at := range r.retryAt {
		if !at.After(now) {
			r.services[id] = true
			delete(r.retryAt, id)
		}
	}
	if !r.full && len(r.services) == 0 && len(r.nodes) == 0 && !r.globals {
		return r.nextWake(), nil
	}
	var res passResult
	// The pass places the tasks it creates (placeCreated): it holds the
	// placement from its read to the record of its commit, as the
	// scheduler loop does for its batches.
	place := r.o.place
	place.lock()
	defer place.unlock()
	index, err := r.o.conflictRetryIndex(ctx, func(tx raftstore.WriteTx, now time.Time) error {
		res = passResult{retry: map[string]time.Duration{}, settled: map[string]settledSlots{}}
		return r.reconcileTx(tx, now, &res, r.o.budget())
	})
	if err != nil {
		// Committed or not, we cannot tell: forget the services' settled
		// slots (a pass from 0 finds them again), and what the tasks on
		// nodes take.
		clear(r.settled)
		place.placed = nil
		return r.nextWake(), fmt.Errorf("reconciling services: %w", err)
	}
	if res.rebuilt != nil {
		place.placed = res.rebuilt
	}
	place.record(res.placed, index)
	if len(res.placed) > 0 {
		r.o.metrics.ObservePlacement(r.o.now().Sub(res.placeStart), len(res.placed))
	}
	if index != 0 {
		r.own[r.ownNext] = index
		r.ownNext = (r.ownNext + 1) % len(r.own)
	}
	for id, s := range res.settled {
		if s.through == 0 {
			delete(r.settled, id)
		} else {
			r.settled[id] = s
		}
	}
	done := r.o.now()
	r.histLimit = res.histLimit
	for id, d := range res.retry {
		r.retryAt[id] = done.Add(d)
	}
	r.report(&res)
	r.noteDrainWaiting(res.drainWaiting)
	if res.more {
		// The stale marks stay: the next pass recomputes everything they
		// cover from the store, finds the part written here done, and
		// goes on with the rest.
		return done, nil
	}
	r.full, r.globals = false, false
	clear(r.services)
	clear(r.nodes)
	return r.nextWake(), nil
}

// nextWake is the earliest pending retry, or zero.
func (r *reconciler) nextWake() time.Time {
	var next time.Time
	for _, at := range r.retryAt {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// reconcileTx computes and writes one pass, within b: once b is spent it
// stops at a consistent point and sets res.more. It runs inside
// store.Update and may run again on a version conflict, so it changes
// nothing but res.
func (r *reconciler) reconcileTx(tx raftstore.WriteTx, now time.Time, res *passResult, b *budget) error {
	nodes := raftstore.List[*shoalv1.Node](tx)
	b.hist = histRuleOf(tx, nodes)
	res.histLimit = b.hist.keep()
	dirty := maps.Clone(r.services)

	// Node-driven changes first, so that the services' pass below sees
	// their tasks orphaned or stopping and replaces them in the same entry.
	var all, scope []*shoalv1.Task
	if r.full {
		all = raftstore.List[*shoalv1.Task](tx)
		scope = all
	} else {
		for _, id := range slices.Sorted(maps.Keys(r.nodes)) {
			scope = append(scope, raftstore.Find[*shoalv1.Task](tx, raftstore.IndexNodeID, id)...)
		}
	}
	res.orphaned = OrphanOnDownNodes(nodes, scope, now)
	if len(res.orphaned) > 0 {
		byID := map[string]*shoalv1.Task{}
		for _, t := range res.orphaned {
			byID[t.GetMeta().GetId()] = t
		}
		for i, t := range scope {
			if o, ok := byID[t.GetMeta().GetId()]; ok {
				scope[i] = o
			}
		}
	}
	for _, t := range scope {
		if t.GetStatus().GetState() == stateOrphaned {
			dirty[t.GetServiceId()] = true // its node came back or left: reapable now?
		}
	}
	res.drained, res.drainWaiting = limitDrain(tx, DrainedNodeTasks(nodes, scope, now))
	var cut, cutDrained bool
	res.orphaned, cut = b.takeWithin(res.orphaned)
	res.drained, cutDrained = b.takeWithin(res.drained)
	res.more = cut || cutDrained
	// Services whose tasks this pass changed above are reconciled from
	// slot 1: a slot known settled may have just lost its task.
	touched := map[string]bool{}
	for _, t := range slices.Concat(res.orphaned, res.drained) {
		if err := tx.Update(t); err != nil {
			return fmt.Errorf("task %q on node %q: %w", t.GetMeta().GetId(), t.GetNodeId(), err)
		}
		dirty[t.GetServiceId()] = true
		touched[t.GetServiceId()] = true
	}

	if r.full || r.globals {
		for _, svc := range raftstore.List[*shoalv1.Service](tx) {
			if r.full || svc.GetSpec().GetMode() == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL ||
				svc.GetSpec().GetMode() == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL_JOB {
				dirty[svc.GetMeta().GetId()] = true
			}
		}
	}
	// Tasks whose service is gone are found through their service id.
	for _, t := range all {
		dirty[t.GetServiceId()] = true
	}

	var plans []servicePlan
	for _, id := range slices.Sorted(maps.Keys(dirty)) {
		if b.spent() {
			res.more = true
			break
		}
		tasks := raftstore.Find[*shoalv1.Task](tx, raftstore.IndexServiceID, id)
		svc, ok := raftstore.Get[*shoalv1.Service](tx, id)
		var p Plan
		switch {
		case !ok:
			p = reconcileRemoved(tasks, b)
		case svc.GetSpec().GetMode() == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL:
			p = reconcileGlobal(svc, tasks, nodes, now, b)
		case specrules.IsJob(svc.GetSpec().GetMode()):
			var run JobRun
			var err error
			if p, run, err = reconcileJob(tx, svc, tasks, nodes, now, b); err != nil {
				return fmt.Errorf("service %q: %w", id, err)
			}
			if run.Fired || run.Skipped {
				res.jobs = append(res.jobs, jobPass{id: id, run: run})
			}
		default:
			var from uint64
			if s, ok := r.settled[id]; ok && !r.full && !touched[id] && s.svcVersion == svc.GetMeta().GetVersion() {
				from = s.through
			}
			var through uint64
			p, through = reconcileReplicatedFrom(svc, tasks, now, b, from)
			res.settled[id] = settledSlots{svcVersion: svc.GetMeta().GetVersion(), through: through}
		}
		res.more = res.more || p.More
		res.services++
		if p.RetryAfter > 0 {
			res.retry[id] = p.RetryAfter
		}
		if p.Empty() {
			continue
		}
		plans = append(plans, servicePlan{id: id, svc: svc, removed: !ok, plan: p, read: tasks})
	}
	r.placeCreated(tx, nodes, plans, now, res)
	for _, sp := range plans {
		p := sp.plan
		if err := writePlan(tx, p); err != nil {
			return fmt.Errorf("service %q: %w", sp.id, err)
		}
		res.changes = append(res.changes, serviceChange{
			id: sp.id, removed: sp.removed, created: len(p.Create), updated: len(p.Update), deleted: len(p.Delete),
			rollout: rolloutChange(sp.svc, p.Service),
		})
	}
	return nil
}

// servicePlan is the plan a pass made for one service, written once every
// service's plan is made and their new tasks placed.
type servicePlan struct {
	id      string
	svc     *shoalv1.Service
	removed bool
	plan    Plan
	// read are the service's tasks as the pass read them.
	read []*shoalv1.Task
}

// placeCreated places the tasks the pass's plans create, all in one
// scheduler call so that each counts those placed before it, against what
// the tasks on nodes take (the shared placement, which the pass holds).
func (r *reconciler) placeCreated(tx raftstore.WriteTx, nodes []*shoalv1.Node, plans []servicePlan, now time.Time, res *passResult) {
	var creates []*shoalv1.Task
	for _, sp := range plans {
		creates = append(creates, sp.plan.Create...)
	}
	if len(creates) == 0 {
		return
	}
	res.placeStart = r.o.now()
	placed, rebuilt := r.o.place.current(tx)
	if rebuilt {
		res.rebuilt = placed
	} else {
		catchUp(placed, plans, slices.Concat(res.orphaned, res.drained))
	}
	res.placed = placeCreated(nodes, placed, creates, r.o.place.waiting, now)
}

// catchUp brings the shared placement level with the pass's read of the
// services it creates tasks for. The placement is fed by the scheduler
// loop's watch, which may not yet have delivered the entries this pass
// read (typically the failure the pass replaces): counting a task that
// ended as still on its node would spread the replacement away from it,
// where the scheduler loop, placing a PENDING task only after observing
// the entries before its creation, never did. The states read are
// committed ones (versions from the store), true whether or not this
// pass commits, so they may go in before the commit; the tasks this pass
// itself changed before reading (orphaned, drained) are left out, their
// copies being uncommitted. It relies on the pass holding the placement
// since before its read: the placement has then seen no event newer than
// the read, so no state observed here is older than one it already
// counted or forgot (a placement locked only after the read could have
// forgotten a task on its end event and be given it back, live, from an
// older read, with no later event to take it out).
func catchUp(placed *scheduler.Placed, plans []servicePlan, written []*shoalv1.Task) {
	skip := make(map[string]bool, len(written))
	for _, t := range written {
		skip[t.GetMeta().GetId()] = true
	}
	for _, sp := range plans {
		if len(sp.plan.Create) == 0 {
			continue
		}
		for _, t := range sp.read {
			if !skip[t.GetMeta().GetId()] {
				placed.Observe(t)
			}
		}
	}
}

func (r *reconciler) report(res *passResult) {
	for _, t := range res.orphaned {
		r.log.Warn("task orphaned", "task_id", t.GetMeta().GetId(), "service_id", t.GetServiceId(),
			"node_id", t.GetNodeId(), "reason", t.GetStatus().GetMessage())
	}
	for _, t := range res.drained {
		r.log.Info("task stopped: node draining", "task_id", t.GetMeta().GetId(), "service_id", t.GetServiceId(), "node_id", t.GetNodeId())
	}
	for _, j := range res.jobs {
		st := j.run.Status
		args := []any{"service_id", j.id, "iteration", st.GetIteration()}
		if next := st.GetNextExecution(); next != nil {
			args = append(args, "next_execution", next.AsTime())
		}
		if j.run.Skipped {
			r.log.Info("job firing skipped: the previous run is still going (concurrency policy forbid)", args...)
			continue
		}
		r.log.Info("job run started", args...)
	}
	for _, c := range res.changes {
		msg := "service reconciled"
		if c.removed {
			msg = "removed service's tasks reconciled"
		}
		r.log.Info(msg, "service_id", c.id, "created", c.created, "updated", c.updated, "deleted", c.deleted)
		if st := c.rollout; st != nil {
			r.log.Info("rollout "+strings.ToLower(strings.TrimPrefix(st.GetState().String(), "UPDATE_STATE_")), "service_id", c.id,
				"message", st.GetMessage(), "updated", st.GetUpdated(), "failed", st.GetFailed())
		}
	}
	if len(res.placed) > 0 {
		// As the scheduler loop logs its own: the tasks placed at
		// creation never pass through it.
		r.log.Info("tasks assigned", "count", len(res.placed))
		for _, t := range res.placed {
			r.log.Debug("task assigned", "task_id", t.GetMeta().GetId(), "node_id", t.GetNodeId())
		}
	}
	r.log.Debug("pass done", "services", res.services, "changed", len(res.changes), "retries", len(res.retry), "more", res.more)
}

// labelsOnly says whether b plans no differently from a: b changes a's
// spec labels (which no plan reads: tasks do not carry them, placement
// reads node labels) and, outside a rollout, its previous_spec (read only
// by a rollout: its rollback config and a rollback's spec, and a pass
// finding outdated tasks starts one, which writes the service); every
// other field is the same, by pointer (a patch shares them with the
// stored spec) or by value.
func labelsOnly(a, b *shoalv1.Service) bool {
	if inRollout(a) || inRollout(b) || a.GetSpecVersion() != b.GetSpecVersion() ||
		a.GetRebalanceRequested() != b.GetRebalanceRequested() ||
		!bytes.Equal(a.ProtoReflect().GetUnknown(), b.ProtoReflect().GetUnknown()) ||
		!proto.Equal(a.GetUpdateStatus(), b.GetUpdateStatus()) || !proto.Equal(a.GetJobStatus(), b.GetJobStatus()) ||
		len(a.GetVips()) != len(b.GetVips()) {
		return false
	}
	for i, v := range a.GetVips() {
		if !proto.Equal(v, b.GetVips()[i]) {
			return false
		}
	}
	s, t := a.GetSpec(), b.GetSpec()
	if s == nil || t == nil {
		return s == t
	}
	same := func(x, y proto.Message) bool { return x == y || proto.Equal(x, y) }
	return s.Name == t.Name && s.Mode == t.Mode && s.Replicas == t.Replicas && s.AutoRebalance == t.AutoRebalance &&
		bytes.Equal(s.ProtoReflect().GetUnknown(), t.ProtoReflect().GetUnknown()) &&
		same(s.Task, t.Task) && same(s.Update, t.Update) && same(s.Rollback, t.Rollback) &&
		same(s.Endpoint, t.Endpoint) && same(s.Job, t.Job)
}
