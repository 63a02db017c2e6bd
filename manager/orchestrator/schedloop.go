package orchestrator

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/manager/allocator"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/scheduler"
)

const msgAssigned = "assigned"

// schedLoop is the scheduler loop: it hands the pending tasks (status
// PENDING, desired RUNNING) with the nodes and the tasks on them to
// scheduler.Schedule and writes the batch's assignments in one entry. A
// batch holds as many pending tasks as one entry's budget admits; when
// more are pending the loop goes on at once with the next batch, starting
// after the last task of this one, so tasks that cannot be placed never
// hold back those behind them. Its state is owned by the goroutine running
// Orchestrator.drive.
type schedLoop struct {
	o   *Orchestrator
	log *slog.Logger
	// due: something changed that may let a pending task be placed.
	due bool
	// unschedulable: the last pass left tasks it could not place, so
	// freed resources (a task ending or deleted) are worth a pass.
	unschedulable bool
	// roundWaiting: a batch of the current round left a task that
	// reserves CPU or memory unplaced (placement.waiting, published as
	// the round goes and set from the whole round at its end).
	roundWaiting bool
	// after is the id of the last task of a batch that stopped at the
	// budget: the next batch starts after it (wrapping around).
	after string
	// idle counts the pending tasks looked at by the batches since one
	// last placed a task: once it covers them all, a whole round placed
	// nothing and the next batch would only repeat it.
	idle int
	// own holds the raft indexes of this loop's latest commits: events at
	// those versions are its own writes (a reason recorded on a task it
	// could not place) and do not restart the round.
	own [8]uint64
	// ownNext is where the next commit's index goes in own.
	ownNext int
}

// restart makes the next batches a new round: something changed (a new
// pending task, a node, freed resources) that a task the round already
// looked at may now be placed with. Counting on from where the round was,
// a task created behind the round's position was never looked at when
// the round ended (TestSchedulerBatchesPassUnschedulable flaked so).
func (s *schedLoop) restart() {
	s.due = true
	s.idle = 0
}

func (s *schedLoop) isOwn(version uint64) bool {
	return version != 0 && slices.Contains(s.own[:], version)
}

func newSchedLoop(o *Orchestrator) *schedLoop {
	return &schedLoop{o: o, log: o.log.With("loop", "scheduler")}
}

func (s *schedLoop) name() string { return "scheduler" }

func (s *schedLoop) kinds() []raftstore.Kind {
	return []raftstore.Kind{raftstore.KindTask, raftstore.KindNode}
}

func (s *schedLoop) resync() {
	s.due = true
	// Events were missed: what the tasks on nodes take is read again.
	s.o.place.lock()
	s.o.place.placed = nil
	s.o.place.unlock()
}

func (s *schedLoop) observe(ev *shoalv1.WatchEvent) bool {
	switch obj := raftstore.Unwrap(ev.GetObject()).(type) {
	case *shoalv1.Node:
		// Readiness, availability, labels or capacity may have changed.
		s.restart()
	case *shoalv1.Task:
		s.o.place.lock()
		if p := s.o.place.placed; p != nil {
			if ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE {
				p.Forget(obj.GetMeta().GetId())
			} else {
				p.Observe(obj)
			}
		}
		s.o.place.unlock()
		switch {
		case ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE || isTerminal(obj):
			// Resources and spread were freed: worth a pass only if
			// something is waiting for them.
			if s.unschedulable {
				s.restart()
			}
		case obj.GetStatus().GetState() == statePending && obj.GetDesiredState() <= stateRunning:
			if s.isOwn(obj.GetMeta().GetVersion()) {
				s.due = true // the round goes on
			} else {
				s.restart()
			}
		}
		// Progress of placed tasks (our own assignments included) needs
		// no pass.
	}
	return s.due
}

type schedResult struct {
	pending int
	// batch is how many of them this batch looked at.
	batch int
	// last is the id of the last pending task in the batch when the batch
	// did not hold them all; "" when it did.
	last     string
	assigned []scheduler.Assignment
	// written are the assigned tasks as written, for placed.
	written []*shoalv1.Task
	// rebuilt is the placed set the batch read from the store, when it
	// was given none.
	rebuilt *scheduler.Placed
	// reasons are the failures whose reason changed (and was written).
	reasons []scheduler.Failure
	failed  int
	// failedReserving: how many of the failed reserve CPU or memory.
	failedReserving int
}

func (s *schedLoop) pass(ctx context.Context, _ time.Time) (time.Time, error) {
	if !s.due {
		return time.Time{}, nil
	}
	var res schedResult
	start := time.Now()
	place := s.o.place
	place.lock()
	defer place.unlock()
	index, err := s.o.conflictRetryIndex(ctx, func(tx raftstore.WriteTx, now time.Time) error {
		res = schedResult{}
		return scheduleTx(tx, now, &res, s.after, s.o.budget(), place.placed)
	})
	if err != nil {
		// Committed or not, we cannot tell: read the placed tasks again.
		place.placed = nil
		return time.Time{}, fmt.Errorf("scheduling: %w", err)
	}
	if index != 0 {
		s.own[s.ownNext] = index
		s.ownNext = (s.ownNext + 1) % len(s.own)
	}
	if res.rebuilt != nil {
		place.placed = res.rebuilt
	}
	place.record(res.written, index)
	s.after = res.last
	if res.batch > 0 {
		s.o.metrics.ObservePlacement(time.Since(start), len(res.assigned))
	}
	if len(res.assigned) > 0 {
		s.idle = 0
	} else {
		s.idle += res.batch
	}
	s.roundWaiting = s.roundWaiting || res.failedReserving > 0
	if res.last != "" && s.idle < res.pending {
		// More are pending than one entry holds: the next batch now.
		s.unschedulable = s.unschedulable || res.failed > 0
		place.waiting = place.waiting || s.roundWaiting
		s.logResult(&res)
		return s.o.now(), nil
	}
	// Every pending task was looked at: done until something changes
	// (a node, a task freeing resources, a new pending task).
	s.idle = 0
	s.due = false
	s.unschedulable = res.failed > 0
	place.waiting, s.roundWaiting = s.roundWaiting, false
	s.logResult(&res)
	return time.Time{}, nil
}

func (s *schedLoop) logResult(res *schedResult) {
	if len(res.assigned) > 0 {
		s.log.Info("tasks assigned", "count", len(res.assigned), "pending", res.pending, "unschedulable", res.failed)
	}
	for _, a := range res.assigned {
		s.log.Debug("task assigned", "task_id", a.TaskID, "node_id", a.NodeID)
	}
	for _, f := range res.reasons {
		s.log.Info("task unschedulable", "task_id", f.TaskID, "reason", f.Reason)
	}
}

// scheduleTx places a batch of pending tasks in one transaction: those
// with ids after `after` first, then from the start, as many as b admits
// (each is written back whole). placed is what the tasks on nodes take
// (nil: read them from tx into res.rebuilt); scheduleTx does not change
// it. It runs inside store.Update and may run again on a version conflict.
func scheduleTx(tx raftstore.WriteTx, now time.Time, res *schedResult, after string, b *budget, placed *scheduler.Placed) error {
	var all []*shoalv1.Task
	for _, t := range raftstore.Find[*shoalv1.Task](tx, raftstore.IndexState, statePending.String()) {
		// A task attached to networks waits for the allocator to give it
		// its addresses: its update (still PENDING) makes a pass due.
		if t.GetDesiredState() <= stateRunning && allocator.Allocated(t) {
			all = append(all, t)
		}
	}
	res.pending = len(all)
	if len(all) == 0 {
		return nil
	}
	// Find returns them sorted by id.
	split, _ := slices.BinarySearchFunc(all, after, func(t *shoalv1.Task, id string) int {
		return cmp.Compare(t.GetMeta().GetId(), id)
	})
	if split < len(all) && all[split].GetMeta().GetId() == after {
		split++
	}
	pending, cut := b.takeWithin(slices.Concat(all[split:], all[:split]))
	res.batch = len(pending)
	if cut {
		res.last = pending[len(pending)-1].GetMeta().GetId()
	}
	if placed == nil {
		placed = readPlaced(tx)
		res.rebuilt = placed
	}
	nodes := raftstore.List[*shoalv1.Node](tx)
	assigned, failed := scheduler.SchedulePlaced(nodes, placed, pending)

	byID := make(map[string]*shoalv1.Task, len(pending))
	for _, t := range pending {
		byID[t.GetMeta().GetId()] = t
	}
	for _, a := range assigned {
		// Only the node and the status change: AssignTask writes them
		// alone (a TASK_ASSIGN op), no copy of the task in the entry.
		st := &shoalv1.TaskStatus{State: stateAssigned, Timestamp: timestamppb.New(now), Message: msgAssigned}
		if err := tx.AssignTask(a.TaskID, byID[a.TaskID].GetMeta().GetVersion(), a.NodeID, st); err != nil {
			return fmt.Errorf("assigning task %q to node %q: %w", a.TaskID, a.NodeID, err)
		}
		t, _ := raftstore.Get[*shoalv1.Task](tx, a.TaskID)
		res.written = append(res.written, t)
	}
	res.assigned = assigned
	res.failed = len(failed)
	for _, f := range failed {
		cur := byID[f.TaskID]
		if reserves(cur) {
			res.failedReserving++
		}
		if cur.GetStatus().GetMessage() == f.Reason {
			continue // unchanged: no write, or every pass would echo
		}
		st := &shoalv1.TaskStatus{State: statePending}
		if cur.GetStatus() != nil {
			st = proto.Clone(cur.GetStatus()).(*shoalv1.TaskStatus)
		}
		st.Message = f.Reason
		if err := tx.UpdateTaskStatus(f.TaskID, cur.GetMeta().GetVersion(), st); err != nil {
			return fmt.Errorf("recording why task %q is unschedulable: %w", f.TaskID, err)
		}
		res.reasons = append(res.reasons, f)
	}
	return nil
}

// readPlaced counts the tasks on nodes (ASSIGNED up to the terminal
// states). It reads every task, history included (the state index holds
// only pending tasks): once per term and after a watch cut, not per batch.
func readPlaced(r raftstore.Reader) *scheduler.Placed {
	placed := scheduler.NewPlaced()
	for _, t := range raftstore.List[*shoalv1.Task](r) {
		placed.Observe(t)
	}
	return placed
}
