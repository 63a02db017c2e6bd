package allocator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

const (
	debounce   = 5 * time.Millisecond
	minBackoff = 50 * time.Millisecond
	maxBackoff = 2 * time.Second
	// Bounds of one pass's raft entry, like the orchestrator's.
	defaultMaxEntryOps   = 1000
	defaultMaxEntryBytes = 1 << 20
)

// store is what the allocator needs of raftstore.Store.
type store interface {
	View() raftstore.Reader
	Watch(ctx context.Context, fromIndex uint64, kinds ...raftstore.Kind) (raftstore.Subscription, error)
	Update(ctx context.Context, fn func(raftstore.WriteTx) error) (uint64, error)
}

// Allocator gives tasks their network attachments and services their
// VIPs, on the leader only. Its state is owned by the goroutine running
// Run.
type Allocator struct {
	store  store
	log    *slog.Logger
	state  *State
	maxOps int
	maxB   int
	// starved: the last pass left tasks it could not allocate (a full
	// pool); a release then calls for a pass. Only Run's goroutine uses it.
	starved bool
}

// New returns an allocator over the store; Run starts it.
func New(s *raftstore.Store, logger *slog.Logger) *Allocator { return newAllocator(s, logger) }

func newAllocator(s store, logger *slog.Logger) *Allocator {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Allocator{store: s, log: logger.With("component", "allocator"), maxOps: defaultMaxEntryOps, maxB: defaultMaxEntryBytes}
}

// Run allocates until ctx ends; call it while this manager leads. It
// returns nil when ctx ends.
func (a *Allocator) Run(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		view := a.store.View()
		sub, err := a.store.Watch(ctx, view.Index()+1, raftstore.KindTask, raftstore.KindService, raftstore.KindNetwork)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, raftstore.ErrCompacted) && attempt < 10 {
				continue
			}
			return fmt.Errorf("allocator: watching the store: %w", err)
		}
		attempt = 0
		a.rebuild(view)
		err = a.serve(ctx, sub)
		sub.Close()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, raftstore.ErrSlowConsumer) || errors.Is(err, raftstore.ErrRestored) || errors.Is(err, raftstore.ErrCompacted) {
			a.log.Warn("watch ended; rebuilding", "err", err)
			continue
		}
		return fmt.Errorf("allocator: %w", err)
	}
}

func (a *Allocator) rebuild(r raftstore.Reader) {
	st, errs := Rebuild(raftstore.List[*shoalv1.Network](r), raftstore.List[*shoalv1.Task](r), raftstore.List[*shoalv1.Service](r))
	for _, err := range errs {
		a.log.Error("conflicting address in the store", "err", err)
	}
	a.state = st
}

// observe applies what an event frees and reports whether a pass is due.
func (a *Allocator) observe(ev *shoalv1.WatchEvent) bool {
	del := ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE
	switch o := raftstore.Unwrap(ev.GetObject()).(type) {
	case *shoalv1.Task:
		if del || Ended(o) {
			a.state.ReleaseTask(o)
			return a.starved // an address freed may be what a waiting task needs
		}
		return needsAllocation(o)
	case *shoalv1.Service:
		if del {
			a.state.ReleaseService(o)
			return a.starved
		}
		return true
	case *shoalv1.Network:
		return true
	}
	return false
}

func needsAllocation(t *shoalv1.Task) bool {
	return t.GetStatus().GetState() == statePending && t.GetDesiredState() <= stateRunning && !Allocated(t)
}

func (a *Allocator) serve(ctx context.Context, sub raftstore.Subscription) error {
	timer := time.NewTimer(0) // a full pass first
	defer timer.Stop()
	armed := true
	var backoff time.Duration
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-sub.C():
			if !ok {
				return sub.Err()
			}
			if a.observe(ev) && !armed {
				timer.Reset(debounce)
				armed = true
			}
		case <-timer.C:
			armed = false
			more, err := a.pass(ctx)
			switch {
			case err != nil:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if errors.Is(err, raftstore.ErrClosed) {
					return err
				}
				backoff = min(max(2*backoff, minBackoff), maxBackoff)
				a.log.Warn("pass failed; retrying", "err", err, "retry_in", backoff)
				timer.Reset(backoff)
				armed = true
			case more:
				backoff = 0
				timer.Reset(0)
				armed = true
			default:
				backoff = 0
			}
		}
	}
}

// PassResult is what one pass wrote.
type PassResult struct {
	Tasks    []*shoalv1.Task    // tasks given their attachments
	Services []*shoalv1.Service // services whose VIPs changed
	Failed   map[string]string  // task id -> why it could not be allocated
	More     bool               // the entry's budget stopped the pass
}

// Plan allocates, against st, what the stored objects need: VIPs of
// services first, then attachments of pending tasks (sorted by id), within
// maxOps objects and maxBytes. The allocations are recorded in st and in
// undo, which reverts them if the entry is not committed.
func Plan(st *State, r raftstore.Reader, maxOps, maxBytes int, undo *Undo) PassResult {
	res := PassResult{Failed: map[string]string{}}
	nets := map[string]*shoalv1.Network{}
	list := raftstore.List[*shoalv1.Network](r)
	for _, n := range list {
		nets[n.GetMeta().GetId()] = n
	}
	st.SyncNetworks(list)
	ops, bytes := 0, 0
	full := func() bool { return ops >= maxOps || bytes >= maxBytes }
	for _, svc := range raftstore.List[*shoalv1.Service](r) {
		if full() {
			res.More = true
			return res
		}
		vips, changed, err := st.ServiceVIPs(svc, nets, undo)
		if err != nil {
			res.Failed[svc.GetMeta().GetId()] = err.Error()
			continue
		}
		if !changed {
			continue
		}
		out := proto.Clone(svc).(*shoalv1.Service)
		out.Vips = vips
		res.Services = append(res.Services, out)
		ops++
		bytes += proto.Size(out)
	}
	for _, t := range raftstore.Find[*shoalv1.Task](r, raftstore.IndexState, statePending.String()) {
		if !needsAllocation(t) {
			continue
		}
		if full() {
			res.More = true
			return res
		}
		out, err := st.AllocateTask(t, nets, undo)
		if err != nil {
			res.Failed[t.GetMeta().GetId()] = err.Error()
			continue
		}
		res.Tasks = append(res.Tasks, out)
		ops++
		bytes += proto.Size(out)
	}
	return res
}

// pass writes one Plan in one entry; a failed entry is undone.
func (a *Allocator) pass(ctx context.Context) (bool, error) {
	var undo Undo
	var res PassResult
	var fnErr error
	_, err := a.store.Update(ctx, func(tx raftstore.WriteTx) error {
		undo.Run() // a previous attempt of this function
		undo = nil
		fnErr = a.write(tx, &res, &undo)
		return fnErr
	})
	if err != nil {
		if fnErr != nil || definitelyNotCommitted(err) {
			undo.Run()
		} else {
			// Leadership lost while the entry was in flight (or ctx
			// ended): it may still be committed. Keep what it handed
			// out (leaked until the next rebuild if it was not).
			undo.RunHolds()
			a.log.Warn("allocation entry of unknown fate; its addresses stay held", "err", err)
		}
		return false, err
	}
	if n := len(res.Tasks); n > 0 || len(res.Services) > 0 {
		a.log.Info("allocated", "tasks", n, "services", len(res.Services), "failed", len(res.Failed))
	}
	for id, why := range res.Failed {
		a.log.Warn("cannot allocate", "id", id, "reason", why)
	}
	a.starved = len(res.Failed) > 0
	return res.More, nil
}

// definitelyNotCommitted: the store refused the entry before proposing it
// or the FSM rejected it as a whole. Other errors (leadership lost, a
// timeout, ctx) leave its fate unknown.
func definitelyNotCommitted(err error) bool {
	return errors.Is(err, raftstore.ErrVersionConflict) || errors.Is(err, raftstore.ErrExists) ||
		errors.Is(err, raftstore.ErrNotFound) || errors.Is(err, raftstore.ErrEntryTooLarge)
}

// write plans one pass into tx.
func (a *Allocator) write(tx raftstore.WriteTx, resp *PassResult, undo *Undo) error {
	res := Plan(a.state, tx, a.maxOps, a.maxB, undo)
	*resp = res
	for _, svc := range res.Services {
		if err := tx.Update(svc); err != nil {
			return fmt.Errorf("service %q VIPs: %w", svc.GetMeta().GetId(), err)
		}
	}
	for _, t := range res.Tasks {
		if err := tx.Update(t); err != nil {
			return fmt.Errorf("task %q attachments: %w", t.GetMeta().GetId(), err)
		}
	}
	for id, why := range res.Failed {
		t, ok := raftstore.Get[*shoalv1.Task](tx, id)
		if !ok || t.GetStatus().GetMessage() == why {
			continue // a service, or unchanged: no write
		}
		t = proto.Clone(t).(*shoalv1.Task)
		if t.Status == nil {
			t.Status = &shoalv1.TaskStatus{State: statePending}
		}
		t.Status.Message = why
		if err := tx.Update(t); err != nil {
			return err
		}
	}
	return nil
}
