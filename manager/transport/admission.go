package transport

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// generationStore is what StoreGeneration needs of raftstore.Store.
type generationStore interface {
	WatchFiltered(ctx context.Context, fromIndex uint64, keep func(*shoalv1.WatchEvent) bool, kinds ...raftstore.Kind) (raftstore.Subscription, error)
}

// StoreGeneration counts the changes of what a connection check reads in
// the store (node objects and the cluster object, whose removed_nodes it
// reads), so that the check is asked again only when one of them changed
// (CachedCheck). It counts inside the store's apply: the count is bumped
// by the watch hub's filter (raftstore.Store.WatchFiltered: called with
// each event under the hub's lock, in the FSM's apply, after the commit
// and before the apply returns), which always refuses, so the
// subscription delivers nothing and costs no hand-off. An apply that
// changed a node has therefore bumped the count before any Update or
// wait on that entry returns — the same moment after which a fresh read
// of the store would see it. A snapshot restore ends the subscription
// (synchronously, ErrRestored), and its Err reports the restore from
// before the state is replaced: from then until the goroutine subscribes
// again, every check is a full one.
type StoreGeneration struct {
	n atomic.Uint64
	// sub is the live subscription; nil: not subscribed (every check is
	// full). Atomic: every API call of an admin reads it (CachedAdmins).
	sub atomic.Pointer[raftstore.Subscription]
}

// WatchStoreGeneration starts the goroutine that keeps g subscribed until
// ctx ends or the store closes.
func WatchStoreGeneration(ctx context.Context, s generationStore, logger *slog.Logger) *StoreGeneration {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g := &StoreGeneration{}
	go g.run(ctx, s, logger)
	return g
}

func (g *StoreGeneration) bump(*shoalv1.WatchEvent) bool {
	g.n.Add(1)
	return false
}

func (g *StoreGeneration) run(ctx context.Context, s generationStore, log *slog.Logger) {
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
		}
		sub, err := s.WatchFiltered(ctx, 0, g.bump, raftstore.KindNode, raftstore.KindCluster)
		if errors.Is(err, raftstore.ErrClosed) {
			return // the store is closed: no check reaches it any more
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("raft admission: cannot watch the node table; every raft read is checked in full", "err", err)
			}
			retry.Reset(time.Second)
			continue
		}
		g.sub.Store(&sub)
		// After the subscription is in place: a verdict computed before it
		// (while the previous one ended unseen) is not reused.
		g.n.Add(1)
		select {
		case <-ctx.Done():
		case <-sub.C(): // closed when it ends (it delivers nothing)
		}
		g.sub.Store(nil)
		ended := sub.Err()
		sub.Close()
		g.n.Add(1)
		if errors.Is(ended, raftstore.ErrClosed) {
			return
		}
		retry.Reset(0)
	}
}

// current returns the count and whether it can be trusted (the
// subscription is live: it has not ended, by a restore or otherwise).
func (g *StoreGeneration) current() (uint64, bool) {
	sub := g.sub.Load()
	n := g.n.Load()
	if sub == nil || (*sub).Err() != nil {
		return 0, false
	}
	return n, true
}

// CachedCheck wraps a connection check that reads node objects and the
// cluster object (trust.ConnectionCheck over the store) so that its verdict
// for an identity is reused while gen has not moved, i.e. while no node or
// cluster object changed since the verdict was computed: the raft
// transport checks each peer again whenever bytes arrive, and a full check
// (a store view, two reads) was ≈ 5 µs per write on each follower at 16
// writers. Verdicts of every kind are kept (admissions and refusals); the
// generation is read before the check, so a change racing the check
// invalidates its verdict.
func CachedCheck(check func(trust.Identity) (trust.Role, error), gen *StoreGeneration) func(trust.Identity) (trust.Role, error) {
	type verdict struct {
		gen  uint64
		role trust.Role
		err  error
	}
	var mu sync.Mutex
	cache := map[trust.Identity]verdict{}
	return func(id trust.Identity) (trust.Role, error) {
		g, live := gen.current()
		if live {
			mu.Lock()
			v, ok := cache[id]
			mu.Unlock()
			if ok && v.gen == g {
				return v.role, v.err
			}
		}
		role, err := check(id)
		if live {
			mu.Lock()
			if len(cache) > 64 { // identities are the managers: a handful
				clear(cache)
			}
			cache[id] = verdict{gen: g, role: role, err: err}
			mu.Unlock()
		}
		return role, err
	}
}

// CachedAdmins wraps the lookup of the cluster's admin certificates (a
// store view and a list of the cluster table) so that it is asked again,
// and its list indexed again, only when gen moved — when a node or the
// cluster object changed, or the generation's subscription ended — and
// otherwise costs two atomic loads and the subscription's state: an
// admin's API call checked the whole list in a fresh view every time.
// It is exactly as strict as the lookup: a revocation bumps gen inside
// the store's apply, before the write that revoked returns, so the next
// call builds the index again and sees it; the generation is read
// before the lookup, so a change racing it leaves an index that is not
// reused. Expiry is not cached: trust.AdminIndex.Check compares each
// call's now.
func CachedAdmins(lookup trust.AdminLookup, gen *StoreGeneration) trust.AdminIndexLookup {
	type index struct {
		gen   uint64
		x     *trust.AdminIndex
		known bool
	}
	var cur atomic.Pointer[index]
	return func() (*trust.AdminIndex, bool) {
		g, live := gen.current()
		if live {
			if c := cur.Load(); c != nil && c.gen == g {
				return c.x, c.known
			}
		}
		list, known := lookup()
		x := trust.IndexAdmins(list)
		if live {
			cur.Store(&index{gen: g, x: x, known: known})
		}
		return x, known
	}
}
