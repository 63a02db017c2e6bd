package orchestrator

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/restartpolicy"
	"github.com/shoal-dev/shoal/scheduler"
	"github.com/shoal-dev/shoal/specrules"
)

// jobProgress is where a job's current run stands.
type jobProgress struct {
	// completed: slots (nodes) with a COMPLETE task of the run; wanted:
	// completions (eligible nodes, plus those that already completed).
	completed, wanted int
	// live: tasks of the service that have not ended, of any run.
	live int
	// waiting: slots that will get a task later (a restart delay, or
	// max_concurrent is reached); failed: slots the restart policy gave
	// up on.
	waiting, failed int
}

// going reports whether the run is still going: a task of the service
// runs, or a slot of the run will get one. A firing under the forbid
// policy is skipped while it is.
func (j jobProgress) going() bool { return j.live > 0 || j.waiting > 0 }

// jobIteration is the service's current run; 0 before the first.
func jobIteration(svc *shoalv1.Service) uint64 { return svc.GetJobStatus().GetIteration() }

// jobCompletions and jobMaxConcurrent are the replicated-job's settings
// with their defaults (the API fills them in; older specs may not have).
func jobCompletions(svc *shoalv1.Service) int {
	if n := svc.GetSpec().GetJob().GetCompletions(); n > 0 {
		return int(n)
	}
	return specrules.DefaultCompletions
}

func jobMaxConcurrent(svc *shoalv1.Service) int {
	n := jobCompletions(svc)
	if m := svc.GetSpec().GetJob().GetMaxConcurrent(); m > 0 && int(m) < n {
		return int(m)
	}
	return n
}

// keepsOldRuns: under the allow policy a cron firing leaves the previous
// run's tasks running; otherwise a new run (an update, a replace firing)
// stops them.
func keepsOldRuns(svc *shoalv1.Service) bool {
	return svc.GetSpec().GetJob().GetSchedule() != "" && svc.GetSpec().GetJob().GetConcurrencyPolicy() == specrules.ConcurrencyAllow
}

// ReconcileReplicatedJob plans the tasks of a replicated job's current run
// (job_status.iteration): slots 1..completions each need one COMPLETE task
// of the run; see the package documentation ("Jobs") for the rules.
func ReconcileReplicatedJob(svc *shoalv1.Service, tasks []*shoalv1.Task, now time.Time) Plan {
	p, _ := reconcileReplicatedJob(svc, tasks, now, nil)
	return p
}

func reconcileReplicatedJob(svc *shoalv1.Service, tasks []*shoalv1.Task, now time.Time, b *budget) (Plan, jobProgress) {
	id := svc.GetMeta().GetId()
	n := jobCompletions(svc)
	bySlot := map[uint64][]*shoalv1.Task{}
	for _, t := range tasks {
		if t != nil && t.GetServiceId() == id {
			bySlot[t.GetSlot()] = append(bySlot[t.GetSlot()], t)
		}
	}
	keys := make([]jobKey, 0, max(n, len(bySlot)))
	for slot := uint64(1); slot <= uint64(n); slot++ {
		keys = append(keys, jobKey{slot: slot, wanted: true})
	}
	for _, slot := range slices.Sorted(maps.Keys(bySlot)) {
		if slot == 0 || slot > uint64(n) {
			keys = append(keys, jobKey{slot: slot})
		}
	}
	return reconcileJobSlots(svc, keys, func(k jobKey) []*shoalv1.Task { return bySlot[k.slot] }, jobMaxConcurrent(svc), now, b)
}

// ReconcileGlobalJob plans the tasks of a global job's current run: every
// eligible node (as for a global service) needs one COMPLETE task of the
// run, nodes that join later included.
func ReconcileGlobalJob(svc *shoalv1.Service, tasks []*shoalv1.Task, nodes []*shoalv1.Node, now time.Time) Plan {
	p, _ := reconcileGlobalJob(svc, tasks, nodes, now, nil)
	return p
}

func reconcileGlobalJob(svc *shoalv1.Service, tasks []*shoalv1.Task, nodes []*shoalv1.Node, now time.Time, b *budget) (Plan, jobProgress) {
	id := svc.GetMeta().GetId()
	constraints, err := scheduler.ParseConstraints(svc.GetSpec().GetTask().GetPlacement().GetConstraints())
	eligible := map[string]bool{}
	for _, nd := range nodes {
		if nd != nil && err == nil && globalEligible(nd, constraints) {
			eligible[nd.GetMeta().GetId()] = true
		}
	}
	byNode := map[string][]*shoalv1.Task{}
	for _, t := range tasks {
		if t != nil && t.GetServiceId() == id {
			byNode[t.GetNodeId()] = append(byNode[t.GetNodeId()], t)
		}
	}
	// A paused node takes no new task: it is in the run only while it
	// runs the run's task. Otherwise the run would wait for it (a cron
	// job under forbid skipping every firing meanwhile); once active, it
	// gets its task like a node that joins.
	for _, nd := range nodes {
		if nd == nil || !eligible[nd.GetMeta().GetId()] || nd.GetSpec().GetAvailability() != shoalv1.NodeAvailability_NODE_AVAILABILITY_PAUSE {
			continue
		}
		nid := nd.GetMeta().GetId()
		if !slices.ContainsFunc(byNode[nid], func(t *shoalv1.Task) bool {
			return isLive(t) && jobIteration(svc) > 0 && t.GetJobIteration() == jobIteration(svc)
		}) {
			delete(eligible, nid)
		}
	}
	var keys []jobKey
	for _, k := range slices.Sorted(maps.Keys(eligible)) {
		keys = append(keys, jobKey{nodeID: k, wanted: true})
	}
	for _, k := range slices.Sorted(maps.Keys(byNode)) {
		if !eligible[k] {
			keys = append(keys, jobKey{nodeID: k})
		}
	}
	return reconcileJobSlots(svc, keys, func(k jobKey) []*shoalv1.Task { return byNode[k.nodeID] }, 0, now, b)
}

// jobKey is one slot of a replicated job, or one node of a global job;
// wanted: within completions, or an eligible node.
type jobKey struct {
	slot   uint64
	nodeID string
	wanted bool
}

// reconcileJobSlots is the rule of both job modes over their slots (or
// nodes), in order. maxLive > 0 bounds the run's live tasks
// (max_concurrent). With a budget it stops (More) once the budget is spent,
// after a whole slot.
func reconcileJobSlots(svc *shoalv1.Service, keys []jobKey, tasksOf func(jobKey) []*shoalv1.Task, maxLive int, now time.Time, b *budget) (Plan, jobProgress) {
	var p Plan
	var prog jobProgress
	iter := jobIteration(svc)
	cur := func(t *shoalv1.Task) bool { return iter > 0 && t.GetJobIteration() == iter }
	// First pass: what is live and done, so that max_concurrent is known
	// before any slot gets a task.
	type slotState struct {
		key     jobKey
		tasks   []*shoalv1.Task // all of the slot's tasks, every run
		run     []*shoalv1.Task // the current run's
		done    bool
		hasLive bool
	}
	states := make([]slotState, 0, len(keys))
	runLive := 0
	for _, k := range keys {
		s := slotState{key: k, tasks: tasksOf(k)}
		for _, t := range s.tasks {
			if isLive(t) {
				prog.live++
			}
			if !cur(t) {
				continue
			}
			s.run = append(s.run, t)
			if t.GetStatus().GetState() == stateComplete {
				s.done = true
			}
		}
		for _, t := range s.run {
			if isLive(t) && !s.done && k.wanted {
				s.hasLive = true
			}
		}
		if s.hasLive {
			runLive++
		}
		if s.done {
			prog.completed++
		}
		if k.wanted || s.done {
			prog.wanted++
		}
		states = append(states, s)
	}
	for _, s := range states {
		if b.spent() {
			p.More = true
			break
		}
		var sp Plan
		edits := map[string]*shoalv1.Task{}
		edit := func(t *shoalv1.Task) *shoalv1.Task {
			if e, ok := edits[t.GetMeta().GetId()]; ok {
				return e
			}
			e := cloneTask(t)
			edits[t.GetMeta().GetId()] = e
			sp.Update = append(sp.Update, e)
			return e
		}
		var live []*shoalv1.Task
		for _, t := range s.tasks {
			switch {
			case isLive(t) && cur(t) && s.key.wanted && !s.done:
				live = append(live, t)
			case isLive(t) && !cur(t) && keepsOldRuns(svc):
				// An earlier run's task under the allow policy runs on.
			case isLive(t):
				// An earlier run's (a new run replaces it), a slot beyond
				// completions, a node no longer eligible, or a second
				// task of a slot that completed.
				shutDown(edit(t), now)
			case t.GetDesiredState() >= stateShutdown && neverReachedAgent(t):
				closeTask(edit(t), now)
			}
		}
		switch {
		case len(live) > 1:
			g := &group{svc: svc}
			slices.SortFunc(live, g.preferLive)
			for _, t := range live[1:] {
				shutDown(edit(t), now)
			}
		case len(live) == 1, s.done, !s.key.wanted, iter == 0:
		default:
			create, retry, never := restartpolicy.Decide(svc, s.run, now)
			switch {
			case never != "":
				prog.failed++
			case create && (maxLive <= 0 || runLive < maxLive):
				t := newTask(svc, s.key.slot, s.key.nodeID, now)
				t.JobIteration = iter
				sp.Create = append(sp.Create, t)
				runLive++
				prog.live++
			case create:
				prog.waiting++ // max_concurrent: a task ending makes room
			default:
				prog.waiting++
				sp.RetryAfter = retry
			}
		}
		sp.Delete = b.histRule().reapHistory(s.tasks, func(t *shoalv1.Task) bool {
			// A run's completion is its record: never reaped while it is
			// the current run.
			return cur(t) && t.GetStatus().GetState() == stateComplete
		})
		b.chargePlan(sp)
		p.merge(sp)
	}
	return p, prog
}

// jobPass is what a job's reconcile did, for the log once committed.
type jobPass struct {
	id  string
	run JobRun
}

// reconcileJob plans a job-mode service within b: whether a run starts
// (PlanJobRun, from how the current run is going) and then the tasks of
// the current run. A new job status goes into tx here, in the same entry
// as the run's first tasks (the returned plan). It runs inside
// store.Update and may run again on a version conflict.
func reconcileJob(tx raftstore.WriteTx, svc *shoalv1.Service, tasks []*shoalv1.Task, nodes []*shoalv1.Node, now time.Time, b *budget) (Plan, JobRun, error) {
	plan := func(s *shoalv1.Service, b *budget) (Plan, jobProgress) {
		if s.GetSpec().GetMode() == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL_JOB {
			return reconcileGlobalJob(s, tasks, nodes, now, b)
		}
		return reconcileReplicatedJob(s, tasks, now, b)
	}
	var sched specrules.Schedule
	if expr := svc.GetSpec().GetJob().GetSchedule(); expr != "" {
		s, err := specrules.ParseSchedule(expr)
		if err != nil {
			// The API refuses such a schedule; one stored by an older
			// version never fires rather than firing always.
			p, _ := plan(svc, b)
			return p, JobRun{}, nil
		}
		sched = s
	}
	_, prog := plan(svc, nil) // how the run goes, before deciding on a new one
	run := PlanJobRun(svc, sched, prog.going(), now)
	if run.Status != nil {
		u := proto.Clone(svc).(*shoalv1.Service)
		u.JobStatus = run.Status
		if err := tx.Update(u); err != nil {
			return Plan{}, JobRun{}, fmt.Errorf("job status: %w", err)
		}
		svc = u
	}
	p, _ := plan(svc, b)
	p.RetryAfter = minRetry(p.RetryAfter, run.Wake)
	return p, run, nil
}
