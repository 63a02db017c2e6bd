package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-dev/shoal/metrics"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

const (
	// defaultDebounce gathers the events of a burst (an agent's status
	// batch, a service update's echo) into one pass and one raft entry.
	defaultDebounce = 10 * time.Millisecond
	// maxConflictRetries bounds the re-reads after ErrVersionConflict
	// within one pass; after that the pass fails and is retried with
	// backoff, so a hot object cannot pin the loop.
	maxConflictRetries = 5
	minBackoff         = 50 * time.Millisecond
	maxBackoff         = 2 * time.Second
)

// store is what the orchestrator needs of raftstore.Store.
type store interface {
	View() raftstore.Reader
	Watch(ctx context.Context, fromIndex uint64, kinds ...raftstore.Kind) (raftstore.Subscription, error)
	Update(ctx context.Context, fn func(raftstore.WriteTx) error) (uint64, error)
}

// Orchestrator runs the leader-only reconcile loops: the service reconciler
// (tasks to match services, restarts, node failures, removal, history) and
// the scheduler loop (pending tasks to nodes).
type Orchestrator struct {
	store    store
	log      *slog.Logger
	now      func() time.Time
	debounce time.Duration
	// maxEntryOps and maxEntryBytes bound the raft entry of one pass
	// (chunk.go); tests lower them.
	maxEntryOps, maxEntryBytes int
	// rebalanceSettle is RebalanceSettle; tests shorten it.
	rebalanceSettle time.Duration
	// metrics counts passes and times placements (nil: none).
	metrics *metrics.Manager
	// place is what the tasks on nodes take, shared by the loops that
	// place tasks (placement.go).
	place *placement
}

// WithMetrics feeds the node's metrics (passes per loop, placement
// latency); call before Run.
func (o *Orchestrator) WithMetrics(m *metrics.Manager) *Orchestrator {
	o.metrics = m
	return o
}

// New returns an orchestrator over the store; Run starts it.
func New(s *raftstore.Store, logger *slog.Logger) *Orchestrator {
	return newOrchestrator(s, logger)
}

func newOrchestrator(s store, logger *slog.Logger) *Orchestrator {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Orchestrator{store: s, log: logger.With("component", "orchestrator"), now: time.Now, debounce: defaultDebounce,
		maxEntryOps: defaultMaxEntryOps, maxEntryBytes: defaultMaxEntryBytes, rebalanceSettle: RebalanceSettle,
		place: &placement{}}
}

// Run reconciles until ctx ends; call it while this manager leads and
// cancel ctx when leadership is lost. It returns nil when ctx ends and an
// error only when a loop cannot go on (the store closed).
func (o *Orchestrator) Run(ctx context.Context) error {
	o.log.Info("orchestrator starting")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return o.drive(gctx, newReconciler(o)) })
	g.Go(func() error { return o.drive(gctx, newSchedLoop(o)) })
	g.Go(func() error { return o.drive(gctx, newRebalanceLoop(o)) })
	err := g.Wait()
	if ctx.Err() != nil {
		o.log.Info("orchestrator stopped")
		return nil
	}
	return err
}

// loop is one event-driven reconciler. Its methods are only called from
// the goroutine running drive, which therefore owns its state.
type loop interface {
	name() string
	kinds() []raftstore.Kind
	// resync marks everything stale: at start, and after a watch was cut
	// off and events may have been missed.
	resync()
	// observe records what an event makes stale and reports whether a
	// pass is due.
	observe(ev *shoalv1.WatchEvent) bool
	// pass reconciles what is stale, in one store.Update of bounded size.
	// A non-zero wake asks for another pass at that time (now, when the
	// pass stopped at its entry's budget). On error the stale marks stay,
	// so a later pass retries them.
	pass(ctx context.Context, now time.Time) (wake time.Time, err error)
}

// drive runs a loop: watch from the current state, a full pass, then
// passes on events; a watch that ends because the consumer fell behind,
// the store was restored from a snapshot or the index was compacted starts
// over with a full pass.
func (o *Orchestrator) drive(ctx context.Context, l loop) error {
	log := o.log.With("loop", l.name())
	for attempt := 0; ; attempt++ {
		sub, err := o.store.Watch(ctx, o.store.View().Index()+1, l.kinds()...)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, raftstore.ErrCompacted) && attempt < 10 {
				continue // applied entries moved on between View and Watch
			}
			return fmt.Errorf("orchestrator %s: watching the store: %w", l.name(), err)
		}
		attempt = 0
		l.resync()
		err = o.serve(ctx, l, sub, log)
		sub.Close()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, raftstore.ErrSlowConsumer) || errors.Is(err, raftstore.ErrRestored) || errors.Is(err, raftstore.ErrCompacted) {
			log.Warn("watch ended; resynchronising with a full pass", "err", err)
			continue
		}
		return fmt.Errorf("orchestrator %s: %w", l.name(), err)
	}
}

// serve handles one subscription until it ends or ctx does.
func (o *Orchestrator) serve(ctx context.Context, l loop, sub raftstore.Subscription, log *slog.Logger) error {
	// After a (re)sync the first pass is due at once.
	debounce := time.NewTimer(0)
	defer debounce.Stop()
	debouncing := true
	wake := time.NewTimer(time.Hour)
	wake.Stop()
	defer wake.Stop()
	var backoff time.Duration

	arm := func(d time.Duration) {
		if !debouncing {
			debounce.Reset(d)
			debouncing = true
		}
	}
	q := newEventQueue()
	go q.drain(sub)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-q.ready:
			events, ended := q.take()
			for _, ev := range events {
				if l.observe(ev) {
					arm(o.debounce)
				}
			}
			if ended {
				return sub.Err()
			}
		case <-wake.C:
			arm(0)
		case <-debounce.C:
			debouncing = false
			o.metrics.OrchestratorPass(l.name())
			next, err := l.pass(ctx, o.now())
			var after time.Duration
			switch {
			case err != nil:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if errors.Is(err, raftstore.ErrClosed) {
					return err
				}
				backoff = min(max(2*backoff, minBackoff), maxBackoff)
				log.Warn("pass failed; retrying", "err", err, "retry_in", backoff)
				after = backoff
			case !next.IsZero():
				backoff = 0
				after = max(next.Sub(o.now()), time.Millisecond)
			default:
				backoff = 0
				wake.Stop()
				continue
			}
			wake.Reset(after)
		}
	}
}

// budget returns an empty budget for one pass's entry.
func (o *Orchestrator) budget() *budget { return newBudget(o.maxEntryOps, o.maxEntryBytes) }

// conflictRetry runs one pass's Update, reading again and retrying when a
// concurrent writer changed what it read.
func (o *Orchestrator) conflictRetry(ctx context.Context, fn func(tx raftstore.WriteTx, now time.Time) error) error {
	_, err := o.conflictRetryIndex(ctx, fn)
	return err
}

// conflictRetryIndex is conflictRetry returning the raft index of the
// committed entry: the version of every object it wrote.
func (o *Orchestrator) conflictRetryIndex(ctx context.Context, fn func(tx raftstore.WriteTx, now time.Time) error) (uint64, error) {
	for attempt := 1; ; attempt++ {
		now := o.now()
		index, err := o.store.Update(ctx, func(tx raftstore.WriteTx) error { return fn(tx, now) })
		if err == nil || !errors.Is(err, raftstore.ErrVersionConflict) || attempt >= maxConflictRetries {
			return index, err
		}
		o.log.Debug("version conflict; reading again", "attempt", attempt, "err", err)
	}
}

// writePlan adds a plan's changes to a transaction.
func writePlan(tx raftstore.WriteTx, p Plan) error {
	if p.Service != nil {
		if err := tx.Update(p.Service); err != nil {
			return fmt.Errorf("updating service %q: %w", p.Service.GetMeta().GetId(), err)
		}
	}
	for _, t := range p.Update {
		if err := tx.Update(t); err != nil {
			return fmt.Errorf("updating task %q: %w", t.GetMeta().GetId(), err)
		}
	}
	for _, t := range p.Delete {
		if err := tx.Delete(raftstore.KindTask, t.GetMeta().GetId(), t.GetMeta().GetVersion()); err != nil {
			return fmt.Errorf("deleting task %q: %w", t.GetMeta().GetId(), err)
		}
	}
	for _, t := range p.Create {
		if err := tx.Create(t); err != nil {
			return fmt.Errorf("creating task %q: %w", t.GetMeta().GetId(), err)
		}
	}
	return nil
}
