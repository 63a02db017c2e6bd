package orchestrator

import (
	"cmp"
	"slices"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/scheduler"
)

// RebalanceSettle is how long a node must have been ready and active
// before auto rebalance counts it: a flapping node never gets tasks moved
// to it (and so never causes moves back and forth).
const RebalanceSettle = 30 * time.Second

// Move is one step of a rebalance: a new task for Slot, preset to node
// To, started next to the live task TaskID on From, which the reconciler
// stops once the new one runs (start-first).
type Move struct {
	TaskID   string
	Slot     uint64
	From, To string
}

// RebalancePlan is what PlanRebalance wants done.
type RebalancePlan struct {
	// Moves start now (at most the parallelism minus the moves in flight).
	Moves []Move
	// Cancel are clones, desired SHUTDOWN, of moves' new tasks that cannot
	// be placed (the scheduler gave a reason) or whose node is no longer
	// eligible: the slot keeps its old task.
	Cancel []*shoalv1.Task
	// Stop are clones, desired SHUTDOWN, of the old tasks of moves whose
	// new task now runs (and is healthy): the move's end. (The reconciler
	// would stop them too, but does not look at a slot when a task of it
	// merely progresses.)
	Stop []*shoalv1.Task
	// InFlight counts the moves started earlier and not finished.
	InFlight int
	// Even: no move is needed or in flight — the live tasks on the
	// eligible nodes differ by at most one between any two of them.
	Even bool
}

// PlanRebalance plans the next moves of a replicated service's rebalance:
// while its live tasks on the eligible nodes (ready, active, matching the
// constraints, and settled(node) — auto rebalance passes the settle test,
// a requested one accepts every node) differ by more than one between the
// most and the least loaded, a task of the most loaded node (the highest
// slot among its running ones, for determinism) moves to the least loaded
// (ties: smaller node id), up to spec.update.parallelism moves in flight
// (0: all at once) and below max_replicas_per_node. A slot with two live
// tasks of the current spec is a move in flight and counts on the new
// task's node; a slot a rollout is replacing (an outdated task, alone or
// beside its start-first replacement) is the rollout's: never moved nor
// cancelled here. Tasks on other nodes (draining, down, not settled) are
// neither counted nor moved: the other rules handle them. Services placed
// by binpack, and other modes, are even by definition (nothing to spread).
// tasks are the service's tasks; the inputs are not changed.
func PlanRebalance(svc *shoalv1.Service, nodes []*shoalv1.Node, tasks []*shoalv1.Task, settled func(nodeID string) bool, now time.Time) RebalancePlan {
	spec := svc.GetSpec()
	if spec.GetMode() != shoalv1.ServiceMode_SERVICE_MODE_REPLICATED ||
		spec.GetTask().GetPlacement().GetStrategy() == scheduler.StrategyBinpack {
		return RebalancePlan{Even: true}
	}
	constraints, err := scheduler.ParseConstraints(spec.GetTask().GetPlacement().GetConstraints())
	if err != nil {
		return RebalancePlan{Even: true}
	}
	load := map[string]int{} // eligible node id → slots placed on it
	for _, n := range nodes {
		if n == nil || n.GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_READY ||
			n.GetSpec().GetAvailability() != shoalv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE {
			continue
		}
		if id := n.GetMeta().GetId(); globalEligible(n, constraints) && (settled == nil || settled(id)) {
			load[id] = 0
		}
	}

	var p RebalancePlan
	bySlot := map[uint64][]*shoalv1.Task{}
	var ended []*shoalv1.Task
	for _, t := range tasks {
		if t == nil || t.GetServiceId() != svc.GetMeta().GetId() || t.GetSlot() == 0 {
			continue
		}
		switch {
		case isLive(t):
			bySlot[t.GetSlot()] = append(bySlot[t.GetSlot()], t)
		case isTerminal(t) && t.GetDesiredState() <= stateRunning && now.Sub(statusTime(t)) < RebalanceSettle:
			ended = append(ended, t)
		}
	}
	// A node where a task of the slot, newer than its live one, ended on
	// its own a moment ago (a move that failed to start there) gets no
	// move for the settle period: moving there again would fail again.
	noTarget := map[string]bool{}
	for _, t := range ended {
		for _, l := range bySlot[t.GetSlot()] {
			if l.GetNodeId() != t.GetNodeId() && compareAge(t, l) > 0 {
				noTarget[t.GetNodeId()] = true
			}
		}
	}
	// movable[node] lists the running tasks that may move off it.
	movable := map[string][]*shoalv1.Task{}
	for _, live := range bySlot {
		if len(live) == 1 {
			t := live[0]
			if _, ok := load[t.GetNodeId()]; ok {
				load[t.GetNodeId()]++
				// An outdated task is the rollout's to replace, under
				// its parallelism; moving it would replace it outside.
				if runningHealthy(t) && t.GetSpecVersion() == svc.GetSpecVersion() {
					movable[t.GetNodeId()] = append(movable[t.GetNodeId()], t)
				}
			}
			continue
		}
		slices.SortFunc(live, compareAge)
		older, newer := live[0], live[len(live)-1]
		if newer.GetSpecVersion() != svc.GetSpecVersion() || older.GetSpecVersion() != svc.GetSpecVersion() || len(live) != 2 {
			// An update's start-first replacement (not placed yet, or
			// waiting for room) or a duplicate: the reconciler's to sort
			// out, never cancelled here. The slot counts where it runs.
			if _, ok := load[older.GetNodeId()]; ok && len(live) == 2 {
				load[older.GetNodeId()]++
			}
			continue
		}
		_, eligible := load[newer.GetNodeId()]
		stuck := newer.GetStatus().GetState() == statePending && newer.GetStatus().GetMessage() != msgPending
		if !eligible || stuck {
			c := cloneTask(newer)
			shutDown(c, now)
			p.Cancel = append(p.Cancel, c)
			if old := live[0]; old.GetNodeId() != "" {
				if _, ok := load[old.GetNodeId()]; ok {
					load[old.GetNodeId()]++
				}
			}
			continue
		}
		load[newer.GetNodeId()]++
		if runningHealthy(newer) {
			c := cloneTask(live[0])
			shutDown(c, now)
			p.Stop = append(p.Stop, c)
			continue
		}
		p.InFlight++
	}
	sortByID(p.Cancel)
	sortByID(p.Stop)
	if len(p.Cancel) > 0 {
		// Plan again once the cancellations are written: a node that
		// could not take a task is likely to refuse the next one too.
		return p
	}
	if len(load) < 2 {
		p.Even = p.InFlight == 0 && len(p.Cancel) == 0 && len(p.Stop) == 0
		return p
	}
	for _, ts := range movable {
		slices.SortFunc(ts, func(a, b *shoalv1.Task) int {
			return cmp.Or(cmp.Compare(a.GetSlot(), b.GetSlot()), cmp.Compare(a.GetMeta().GetId(), b.GetMeta().GetId()))
		})
	}
	ids := make([]string, 0, len(load))
	for id := range load {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	limit := int(svc.GetSpec().GetUpdate().GetParallelism())
	maxPer := int(spec.GetTask().GetPlacement().GetMaxReplicasPerNode())
	uneven := false
	for {
		// Most loaded with something to move, least loaded with room;
		// ties by node id. O(nodes) per move: moves are few per pass.
		from, to := "", ""
		lo, loAll, hi, top := -1, -1, -1, 0
		for _, id := range ids {
			l := load[id]
			if maxPer == 0 || l < maxPer {
				if !noTarget[id] && (lo < 0 || l < lo) {
					to, lo = id, l
				}
				if loAll < 0 || l < loAll {
					loAll = l
				}
			}
			if len(movable[id]) > 0 && l > hi {
				from, hi = id, l
			}
			top = max(top, l)
		}
		if loAll < 0 || top-loAll <= 1 {
			break // even
		}
		if to == "" || top-lo <= 1 {
			// Only nodes a move just failed on would even it: later.
			uneven = true
			break
		}
		if from == "" || hi-lo <= 1 {
			// The most loaded nodes' tasks are not running yet: not
			// even, but nothing to move before they are.
			uneven = true
			break
		}
		if limit > 0 && p.InFlight+len(p.Moves) >= limit {
			uneven = true
			break
		}
		ts := movable[from]
		t := ts[len(ts)-1]
		movable[from] = ts[:len(ts)-1]
		load[from]--
		load[to]++
		p.Moves = append(p.Moves, Move{TaskID: t.GetMeta().GetId(), Slot: t.GetSlot(), From: from, To: to})
	}
	p.Even = !uneven && len(p.Moves) == 0 && p.InFlight == 0 && len(p.Cancel) == 0 && len(p.Stop) == 0
	return p
}

// moveInFlight reports whether kept and other, two live tasks of one slot
// of the current spec on different nodes, are a start-first replacement on
// its way — a rebalance move: the newer is not yet running (and healthy,
// if it has a check) while the older is. The reconciler keeps both until
// the newer runs, then stops the older.
func moveInFlight(svc *shoalv1.Service, kept, other *shoalv1.Task) bool {
	cur := svc.GetSpecVersion()
	if kept.GetSpecVersion() != cur || other.GetSpecVersion() != cur || kept.GetSlot() == 0 ||
		kept.GetNodeId() == "" || other.GetNodeId() == "" || kept.GetNodeId() == other.GetNodeId() {
		return false
	}
	older, newer := kept, other
	if compareAge(older, newer) > 0 {
		older, newer = newer, older
	}
	return runningHealthy(older) && !runningHealthy(newer)
}
