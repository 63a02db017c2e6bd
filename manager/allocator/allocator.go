package allocator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
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
	// work: what the next pass must look at, from the events observed
	// since the last pass that committed. blocked: what passes could not
	// allocate (a full pool, a network missing), looked at again when an
	// address is freed or a network changes. Only Run's goroutine uses
	// them.
	work    Work
	blocked Work
	// seen: each service as its last event observed since the rebuild
	// had it, so that an event changing nothing ServiceVIPs reads (a
	// label, the replica count) is no work (sameVIPInputs).
	seen map[string]*shoalv1.Service
}

// New returns an allocator over the store; Run starts it.
func New(s *raftstore.Store, logger *slog.Logger) *Allocator { return newAllocator(s, logger) }

func newAllocator(s store, logger *slog.Logger) *Allocator {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Allocator{store: s, log: logger.With("component", "allocator"), maxOps: defaultMaxEntryOps, maxB: defaultMaxEntryBytes,
		seen: map[string]*shoalv1.Service{}}
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
	a.seen = map[string]*shoalv1.Service{} // events were missed
	a.work = Work{All: true}               // the store may hold anything: look at all of it
	a.blocked = Work{}
}

// unblock puts what passes could not allocate back into the next pass's
// work: an address was freed (or a network changed).
func (a *Allocator) unblock() bool {
	if a.blocked.empty() {
		return false
	}
	a.work.merge(a.blocked)
	return true
}

// observe applies what an event frees and reports whether a pass is due.
func (a *Allocator) observe(ev *shoalv1.WatchEvent) bool {
	del := ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE
	switch o := raftstore.Unwrap(ev.GetObject()).(type) {
	case *shoalv1.Task:
		if del || Ended(o) {
			a.state.ReleaseTask(o)
			return a.unblock() // an address freed may be what a waiting task needs
		}
		if !needsAllocation(o) {
			return false
		}
		a.work.addTask(o.GetMeta().GetId())
		return true
	case *shoalv1.Service:
		id := o.GetMeta().GetId()
		if del {
			delete(a.seen, id)
			a.state.ReleaseService(o)
			return a.unblock()
		}
		prev, ok := a.seen[id]
		a.seen[id] = o
		if ok && sameVIPInputs(prev, o) {
			// The pass due for prev (or done: it read prev or later)
			// decides o's VIPs alike; a failed one is blocked or kept.
			return false
		}
		a.work.addService(id)
		return true
	case *shoalv1.Network:
		// Rare: a network's pool appears or goes, which any service's
		// VIPs and any pending task may depend on.
		a.work = Work{All: true}
		return true
	}
	return false
}

// sameVIPInputs says whether ServiceVIPs decides a and b alike: the same
// endpoint mode, network targets (in order) and VIPs. Labels, replicas and
// the rest of the spec do not enter it.
func sameVIPInputs(a, b *shoalv1.Service) bool {
	if VIPMode(a) != VIPMode(b) {
		return false
	}
	an, bn := a.GetSpec().GetTask().GetNetworks(), b.GetSpec().GetTask().GetNetworks()
	if len(an) != len(bn) || len(a.GetVips()) != len(b.GetVips()) {
		return false
	}
	for i := range an {
		if an[i].GetTarget() != bn[i].GetTarget() {
			return false
		}
	}
	for i, v := range a.GetVips() {
		if w := b.GetVips()[i]; v.GetNetworkId() != w.GetNetworkId() || v.GetAddress() != w.GetAddress() {
			return false
		}
	}
	return true
}

func needsAllocation(t *shoalv1.Task) bool {
	return t.GetStatus().GetState() == statePending && t.GetDesiredState() <= stateRunning && !Allocated(t)
}

// takeBatch is how many events serve takes from its subscription at a time.
const takeBatch = 256

// closedChan is always ready.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (a *Allocator) serve(ctx context.Context, sub raftstore.Subscription) error {
	timer := time.NewTimer(0) // a full pass first (rebuild set a.work)
	defer timer.Stop()
	armed := true
	var backoff time.Duration
	observe := func(ev *shoalv1.WatchEvent) {
		if a.observe(ev) && !armed {
			timer.Reset(debounce)
			armed = true
		}
	}
	// A store subscription's events are taken from it directly: publish
	// wakes this loop, not a pump that then wakes it. Another (a test's
	// wrapper) is read from C.
	ns, taking := sub.(raftstore.NodeSubscription)
	var ready, ended <-chan struct{}
	var events <-chan *shoalv1.WatchEvent
	if taking {
		ready, ended = ns.Ready(), ns.Done()
	} else {
		events = sub.C()
	}
	var buf []*shoalv1.WatchEvent
	for {
		var again <-chan struct{}
		if taking {
			var ok bool
			if buf, ok = ns.Take(buf[:0], takeBatch); !ok {
				return sub.Err()
			}
			for _, ev := range buf {
				observe(ev)
			}
			// A full batch: more may be waiting, with no wake-up to come
			// for it; take it next unless the pass's timer is due too.
			if len(buf) == takeBatch {
				again = closedChan
			}
			clear(buf)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ended:
		case <-ready:
		case <-again:
		case ev, ok := <-events:
			if !ok {
				return sub.Err()
			}
			observe(ev)
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
	// Rest is what the budget left for the next pass (empty unless More).
	Rest Work
	// Blocked is what failed (a full pool, a network missing): looked at
	// again when an address is freed or a network changes.
	Blocked Work
	// Freed: the pass freed addresses (VIPs of networks a service no
	// longer names), which what is blocked may be waiting for.
	Freed bool
}

// Work is what a pass looks at: everything (All: after a rebuild or a
// network change) or only the services and tasks named — those an event
// touched since the last pass — so that a service event costs that
// service, not a listing of every service.
type Work struct {
	All      bool
	Services map[string]struct{}
	Tasks    map[string]struct{}
}

func (w *Work) addService(id string) {
	if w.All {
		return
	}
	if w.Services == nil {
		w.Services = map[string]struct{}{}
	}
	w.Services[id] = struct{}{}
}

func (w *Work) addTask(id string) {
	if w.All {
		return
	}
	if w.Tasks == nil {
		w.Tasks = map[string]struct{}{}
	}
	w.Tasks[id] = struct{}{}
}

func (w *Work) merge(o Work) {
	if o.All {
		*w = Work{All: true}
		return
	}
	for id := range o.Services {
		w.addService(id)
	}
	for id := range o.Tasks {
		w.addTask(id)
	}
}

// forget drops from w what a pass over done looked at.
func (w *Work) forget(done Work) {
	if done.All {
		*w = Work{}
		return
	}
	for id := range done.Services {
		delete(w.Services, id)
	}
	for id := range done.Tasks {
		delete(w.Tasks, id)
	}
}

func (w Work) empty() bool { return !w.All && len(w.Services) == 0 && len(w.Tasks) == 0 }

// Plan allocates, against st, what the stored objects named by work need
// (all of them when work.All): VIPs of services first, then attachments
// of pending tasks (each sorted by id), within maxOps objects and
// maxBytes. The allocations are recorded in st and in undo, which reverts
// them if the entry is not committed. Only a pass over everything lists
// services, tasks and networks; one over named objects reads those and
// the networks they name.
func Plan(st *State, r raftstore.Reader, work Work, maxOps, maxBytes int, undo *Undo) PassResult {
	res := PassResult{Failed: map[string]string{}}
	var nets map[string]*shoalv1.Network
	var services []*shoalv1.Service
	var tasks []*shoalv1.Task
	if work.All {
		list := raftstore.List[*shoalv1.Network](r)
		nets = make(map[string]*shoalv1.Network, len(list))
		for _, n := range list {
			nets[n.GetMeta().GetId()] = n
		}
		st.SyncNetworks(list)
		services = raftstore.List[*shoalv1.Service](r)
		tasks = raftstore.Find[*shoalv1.Task](r, raftstore.IndexState, statePending.String())
	} else {
		nets = map[string]*shoalv1.Network{}
		for _, id := range slices.Sorted(maps.Keys(work.Services)) {
			if svc, ok := raftstore.Get[*shoalv1.Service](r, id); ok {
				services = append(services, svc)
				st.lookupNetworks(r, svc.GetSpec().GetTask().GetNetworks(), nets)
			}
		}
		for _, id := range slices.Sorted(maps.Keys(work.Tasks)) {
			if t, ok := raftstore.Get[*shoalv1.Task](r, id); ok {
				tasks = append(tasks, t)
				st.lookupNetworks(r, t.GetSpec().GetNetworks(), nets)
			}
		}
	}
	ops, bytes := 0, 0
	full := func() bool { return ops >= maxOps || bytes >= maxBytes }
	stop := func(si, ti int) PassResult {
		res.More = true
		if work.All {
			res.Rest = Work{All: true}
			return res
		}
		for _, s := range services[si:] {
			res.Rest.addService(s.GetMeta().GetId())
		}
		for _, t := range tasks[ti:] {
			res.Rest.addTask(t.GetMeta().GetId())
		}
		return res
	}
	for i, svc := range services {
		if full() {
			return stop(i, 0)
		}
		before := len(*undo)
		vips, changed, err := st.ServiceVIPs(svc, nets, undo)
		for _, u := range (*undo)[before:] {
			res.Freed = res.Freed || !u.Frees
		}
		if err != nil {
			res.Failed[svc.GetMeta().GetId()] = err.Error()
			res.Blocked.addService(svc.GetMeta().GetId())
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
	for i, t := range tasks {
		if !needsAllocation(t) {
			continue
		}
		if full() {
			return stop(len(services), i)
		}
		out, err := st.AllocateTask(t, nets, undo)
		if err != nil {
			res.Failed[t.GetMeta().GetId()] = err.Error()
			res.Blocked.addTask(t.GetMeta().GetId())
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
	work := a.work // events are observed on this goroutine: none arrive during the pass
	if work.empty() {
		return false, nil
	}
	_, err := a.store.Update(ctx, func(tx raftstore.WriteTx) error {
		undo.Run() // a previous attempt of this function
		undo = nil
		fnErr = a.write(tx, work, &res, &undo)
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
	a.done(work, res)
	return res.More, nil
}

// done records a committed pass over work: what it looked at is no longer
// due (what the budget left is), what failed is blocked until an address
// is freed (by an event, or by this pass: then at once) or a network
// changes.
func (a *Allocator) done(work Work, res PassResult) {
	a.work.forget(work)
	a.work.merge(res.Rest)
	a.blocked.forget(work)
	a.blocked.merge(res.Blocked)
	if res.Freed {
		a.unblock()
	}
}

// definitelyNotCommitted: the store refused the entry before proposing it
// or the FSM rejected it as a whole. Other errors (leadership lost, a
// timeout, ctx) leave its fate unknown.
func definitelyNotCommitted(err error) bool {
	return errors.Is(err, raftstore.ErrVersionConflict) || errors.Is(err, raftstore.ErrExists) ||
		errors.Is(err, raftstore.ErrNotFound) || errors.Is(err, raftstore.ErrEntryTooLarge)
}

// write plans one pass into tx.
func (a *Allocator) write(tx raftstore.WriteTx, work Work, resp *PassResult, undo *Undo) error {
	res := Plan(a.state, tx, work, a.maxOps, a.maxB, undo)
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
