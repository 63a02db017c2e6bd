package orchestrator

import (
	"cmp"
	"slices"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// LimitDrain keeps, of the tasks a drain stops (DrainedNodeTasks), those
// their service's update parallelism lets through now: a drain moves a
// service's tasks like an update does, at most parallelism (0: all) at a
// time, a move being in flight until the slot's new task runs (and is
// healthy) — unless the scheduler found no node for it (a drain must not
// wait for ever behind a task that fits nowhere). services are by id; tasks are every task of those services.
// It returns the tasks to stop now and the nodes some were held back on
// (to look at again when a task starts running). Tasks of a service that
// is gone are all stopped.
func LimitDrain(drained []*shoalv1.Task, services map[string]*shoalv1.Service, tasks map[string][]*shoalv1.Task) (kept []*shoalv1.Task, waiting map[string]bool) {
	draining := map[string]bool{}
	for _, t := range drained {
		draining[t.GetMeta().GetId()] = true
	}
	room := map[string]int{}
	for id, svc := range services {
		p := policyOf(svc, rollingBackNow(svc)).parallelism
		if p == 0 {
			continue
		}
		busy := 0
		for _, t := range tasks[id] {
			if !draining[t.GetMeta().GetId()] && isLive(t) && !runningHealthy(t) && !unplaceable(t) {
				busy++
			}
		}
		room[id] = max(p-busy, 0)
	}
	// DrainedNodeTasks sorts by id; slots move in slot order.
	ordered := make([]*shoalv1.Task, len(drained))
	copy(ordered, drained)
	sortBySlot(ordered)
	for _, t := range ordered {
		n, limited := room[t.GetServiceId()]
		switch {
		case !limited:
		case n > 0:
			room[t.GetServiceId()] = n - 1
		default:
			if waiting == nil {
				waiting = map[string]bool{}
			}
			waiting[t.GetNodeId()] = true
			continue
		}
		kept = append(kept, t)
	}
	sortByID(kept)
	return kept, waiting
}

// unplaceable: a pending task the scheduler found no node for (its
// status says why). It does not hold a drain back: it may wait for ever.
func unplaceable(t *shoalv1.Task) bool {
	return t.GetStatus().GetState() == statePending && t.GetStatus().GetMessage() != msgPending
}

// limitDrain applies LimitDrain with the services and tasks of the store.
func limitDrain(tx raftstore.Reader, drained []*shoalv1.Task) ([]*shoalv1.Task, map[string]bool) {
	if len(drained) == 0 {
		return drained, nil
	}
	services := map[string]*shoalv1.Service{}
	tasks := map[string][]*shoalv1.Task{}
	for _, t := range drained {
		id := t.GetServiceId()
		if _, seen := tasks[id]; seen {
			continue
		}
		tasks[id] = raftstore.Find[*shoalv1.Task](tx, raftstore.IndexServiceID, id)
		if svc, ok := raftstore.Get[*shoalv1.Service](tx, id); ok {
			services[id] = svc
		}
	}
	return LimitDrain(drained, services, tasks)
}

// progressed is the reconciler's answer to a live task now running: the
// service's rollout and the drains held back by parallelism may move on.
func (r *reconciler) progressed(t *shoalv1.Task) bool {
	due := false
	if r.rollingOut(t.GetServiceId()) {
		r.services[t.GetServiceId()] = true
		due = true
	}
	for n := range r.drainWaiting {
		r.nodes[n] = true
		due = true
	}
	return due
}

func sortBySlot(ts []*shoalv1.Task) {
	slices.SortFunc(ts, func(a, b *shoalv1.Task) int {
		switch {
		case a.GetServiceId() != b.GetServiceId():
			return cmp.Compare(a.GetServiceId(), b.GetServiceId())
		case a.GetSlot() != b.GetSlot():
			return cmp.Compare(a.GetSlot(), b.GetSlot())
		}
		return cmp.Compare(a.GetMeta().GetId(), b.GetMeta().GetId())
	})
}

// noteDrainWaiting records, after a pass, which draining nodes still hold
// tasks back: the nodes the pass looked at are replaced by its answer.
func (r *reconciler) noteDrainWaiting(waiting map[string]bool) {
	if r.drainWaiting == nil || r.full {
		r.drainWaiting = map[string]bool{}
	}
	for n := range r.nodes {
		delete(r.drainWaiting, n)
	}
	for n := range waiting {
		r.drainWaiting[n] = true
	}
}

// rolloutChange is the update status a plan writes when it changes the
// rollout's state (for the log), else nil.
func rolloutChange(before, after *shoalv1.Service) *shoalv1.UpdateStatus {
	if after == nil || after.GetUpdateStatus().GetState() == before.GetUpdateStatus().GetState() {
		return nil
	}
	return after.GetUpdateStatus()
}
