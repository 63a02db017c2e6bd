package orchestrator

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// rebalanceLoop spreads services' tasks again: those whose
// rebalance_requested is set (`service rebalance`), until the spread is
// even, then it clears the flag; and those with spec.auto_rebalance, when a
// node has become ready and active (joined or returned) and stayed so for
// the settle period, or when the service changes. It writes the moves of
// PlanRebalance: the new tasks (node preset; the scheduler places them),
// the cancelled ones. Its state is owned by the goroutine running
// Orchestrator.drive.
type rebalanceLoop struct {
	o   *Orchestrator
	log *slog.Logger
	// settle is RebalanceSettle; tests shorten it.
	settle time.Duration
	full   bool
	// dirty are the services to plan in the next pass.
	dirty map[string]bool
	// auto: a node changed, so every auto-rebalance service is planned.
	auto bool
	// active are the services with a rebalance under way (requested, or
	// moves in flight): their tasks' events matter.
	active map[string]bool
	// readySince is when each node was last seen becoming ready and
	// active (leadership start for those already so): a node counts for
	// auto rebalance once settle has passed since.
	readySince map[string]time.Time
	// avoid: per service, nodes where a move had to be cancelled (the
	// scheduler could not place it there, e.g. for lack of memory), and
	// until when they get no more moves — or the loop would retry them
	// at every pass.
	avoid map[string]map[string]time.Time
}

func newRebalanceLoop(o *Orchestrator) *rebalanceLoop {
	return &rebalanceLoop{o: o, log: o.log.With("loop", "rebalance"), settle: o.rebalanceSettle,
		dirty: map[string]bool{}, active: map[string]bool{}, readySince: map[string]time.Time{},
		avoid: map[string]map[string]time.Time{}}
}

func (r *rebalanceLoop) name() string { return "rebalance" }

func (r *rebalanceLoop) kinds() []raftstore.Kind {
	return []raftstore.Kind{raftstore.KindService, raftstore.KindTask, raftstore.KindNode}
}

func (r *rebalanceLoop) resync() { r.full = true }

func (r *rebalanceLoop) observe(ev *shoalv1.WatchEvent) bool {
	switch obj := raftstore.Unwrap(ev.GetObject()).(type) {
	case *shoalv1.Service:
		if ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE {
			delete(r.active, obj.GetMeta().GetId())
			delete(r.avoid, obj.GetMeta().GetId())
			return false
		}
		if obj.GetRebalanceRequested() || obj.GetSpec().GetAutoRebalance() || r.active[obj.GetMeta().GetId()] {
			r.dirty[obj.GetMeta().GetId()] = true
			return true
		}
	case *shoalv1.Node:
		// Only a node starting to take tasks matters (it is planned
		// for once settled); other node writes cost nothing here.
		id := obj.GetMeta().GetId()
		_, was := r.readySince[id]
		switch takes := ev.GetAction() != shoalv1.WatchAction_WATCH_ACTION_DELETE && nodeTakesTasks(obj); {
		case takes && !was:
			r.readySince[id] = r.o.now()
			r.auto = true
			return true
		case !takes && was:
			delete(r.readySince, id)
		}
	case *shoalv1.Task:
		if r.active[obj.GetServiceId()] {
			r.dirty[obj.GetServiceId()] = true
			return true
		}
	}
	return false
}

func nodeTakesTasks(n *shoalv1.Node) bool {
	return n.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_READY &&
		n.GetSpec().GetAvailability() == shoalv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE
}

func (r *rebalanceLoop) pass(ctx context.Context, _ time.Time) (time.Time, error) {
	if !r.full && !r.auto && len(r.dirty) == 0 {
		return time.Time{}, nil
	}
	var wake time.Time
	var moved, cancelled, done []string
	var stopped int
	var active map[string]bool
	err := r.o.conflictRetry(ctx, func(tx raftstore.WriteTx, now time.Time) error {
		wake, moved, cancelled, done, stopped = time.Time{}, nil, nil, nil, 0
		active = map[string]bool{}
		nodes := raftstore.List[*shoalv1.Node](tx)
		if r.full {
			seen := map[string]bool{}
			for _, n := range nodes {
				id := n.GetMeta().GetId()
				if nodeTakesTasks(n) {
					seen[id] = true
					if _, ok := r.readySince[id]; !ok {
						r.readySince[id] = now
					}
				}
			}
			for id := range r.readySince {
				if !seen[id] {
					delete(r.readySince, id)
				}
			}
		}
		settled := func(id string) bool {
			since, ok := r.readySince[id]
			return ok && !now.Before(since.Add(r.settle))
		}
		for _, since := range r.readySince {
			if at := since.Add(r.settle); now.Before(at) && (wake.IsZero() || at.Before(wake)) {
				wake = at // a node settles then: auto services are planned again
			}
		}
		b := r.o.budget()
		for _, svc := range raftstore.List[*shoalv1.Service](tx) {
			id := svc.GetMeta().GetId()
			requested, auto := svc.GetRebalanceRequested(), svc.GetSpec().GetAutoRebalance()
			if !requested && !auto {
				continue
			}
			if !r.full && !r.dirty[id] && !(auto && r.auto) && !r.active[id] {
				continue
			}
			if b.spent() {
				active[id] = true
				wake = now
				continue
			}
			avoid := r.avoid[id]
			filter := func(node string) bool {
				if until, ok := avoid[node]; ok && now.Before(until) {
					return false
				}
				// Asked for: every eligible node counts; auto: only
				// settled ones.
				return requested || settled(node)
			}
			tasks := raftstore.Find[*shoalv1.Task](tx, raftstore.IndexServiceID, id)
			p := PlanRebalance(svc, nodes, tasks, filter, now)
			// Within the entry's budget: what is cut is planned again
			// from the store by the next pass, at once.
			cut := false
			within := func() bool {
				if b.spent() {
					cut = true
				}
				return !cut
			}
			for _, c := range p.Cancel {
				if !within() {
					break
				}
				if r.avoid[id] == nil {
					r.avoid[id] = map[string]time.Time{}
				}
				r.avoid[id][c.GetNodeId()] = now.Add(r.settle)
				b.charge(c)
				if err := tx.Update(c); err != nil {
					return fmt.Errorf("cancelling rebalance task %q: %w", c.GetMeta().GetId(), err)
				}
				cancelled = append(cancelled, c.GetMeta().GetId())
			}
			for _, c := range p.Stop {
				if !within() {
					break
				}
				b.charge(c)
				if err := tx.Update(c); err != nil {
					return fmt.Errorf("stopping moved task %q: %w", c.GetMeta().GetId(), err)
				}
				stopped++
			}
			for _, m := range p.Moves {
				if !within() {
					break
				}
				t := newTask(svc, m.Slot, m.To, now)
				b.charge(t)
				if err := tx.Create(t); err != nil {
					return fmt.Errorf("moving slot %d of service %q: %w", m.Slot, id, err)
				}
				moved = append(moved, fmt.Sprintf("slot %d: %s → %s", m.Slot, m.From, m.To))
			}
			switch {
			case cut:
				active[id] = true
				wake = now
			case !p.Even:
				active[id] = true
				if len(p.Moves) == 0 && p.InFlight == 0 && len(p.Cancel) == 0 && len(p.Stop) == 0 {
					// Stalled (moves failed, tasks still starting):
					// look again after the settle period even if
					// nothing happens.
					if at := now.Add(r.settle); wake.IsZero() || at.Before(wake) {
						wake = at
					}
				}
			case requested:
				s := proto.Clone(svc).(*shoalv1.Service)
				s.RebalanceRequested = false
				b.ops++
				b.bytes += proto.Size(s)
				if err := tx.Update(s); err != nil {
					return fmt.Errorf("clearing rebalance_requested of service %q: %w", id, err)
				}
				done = append(done, id)
			}
		}
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("rebalancing: %w", err)
	}
	r.full, r.auto = false, false
	r.dirty = map[string]bool{}
	r.active = active
	for _, m := range moved {
		r.log.Info("rebalance: task moving", "move", m)
	}
	if stopped > 0 {
		r.log.Info("rebalance: moved tasks' old copies stopped", "count", stopped)
	}
	for _, id := range cancelled {
		r.log.Info("rebalance: move cancelled (its node cannot take it)", "task_id", id)
	}
	for _, id := range done {
		r.log.Info("rebalance done", "service_id", id)
	}
	if !wake.IsZero() {
		r.auto = true // the wake is for a node settling, or for the rest
	}
	return wake, nil
}
