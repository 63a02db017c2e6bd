package gossipkeys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// store is what the Dropper needs of raftstore.Store.
type store interface {
	View() raftstore.Reader
	Watch(ctx context.Context, fromIndex uint64, kinds ...raftstore.Kind) (raftstore.Subscription, error)
	Update(ctx context.Context, fn func(raftstore.WriteTx) error) (uint64, error)
}

// pending is one drop to do: at at, drop the keys older than keep.
type pending struct {
	keep []byte
	at   time.Time
}

// Dropper drops superseded gossip keys a grace period after each
// rotation (see the package doc). Its state is owned by Run's goroutine.
type Dropper struct {
	store store
	log   *slog.Logger
	// grace is Grace, replaceable by tests.
	grace func(*shoalv1.ClusterSettings) time.Duration
}

// NewDropper returns a Dropper over the store; Run starts it.
func NewDropper(s *raftstore.Store, logger *slog.Logger) *Dropper { return newDropper(s, logger) }

func newDropper(s store, logger *slog.Logger) *Dropper {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Dropper{store: s, log: logger.With("component", "gossipkeys"), grace: Grace}
}

// Run drops keys until ctx ends; call it while this manager leads. It
// returns nil when ctx ends.
func (d *Dropper) Run(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		view := d.store.View()
		sub, err := d.store.Watch(ctx, view.Index()+1, raftstore.KindCluster)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, raftstore.ErrCompacted) && attempt < 10 {
				continue
			}
			return fmt.Errorf("gossipkeys: watching the store: %w", err)
		}
		attempt = 0
		err = d.serve(ctx, view, sub)
		sub.Close()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, raftstore.ErrSlowConsumer) || errors.Is(err, raftstore.ErrRestored) || errors.Is(err, raftstore.ErrCompacted) {
			d.log.Warn("watch ended; starting over", "err", err)
			continue
		}
		return fmt.Errorf("gossipkeys: %w", err)
	}
}

func (d *Dropper) serve(ctx context.Context, view raftstore.Reader, sub raftstore.Subscription) error {
	var queue []pending
	var newest []byte
	// A rotation not yet followed by its drop (this manager just took
	// over, or started over): give the keys a full grace period.
	if c, ok := raftstore.ClusterOf(view); ok && len(c.GetGossipKeys()) > 0 {
		newest = c.GetGossipKeys()[0]
		if len(c.GetGossipKeys()) > 1 {
			queue = append(queue, pending{keep: newest, at: time.Now().Add(d.grace(c.GetSettings()))})
		}
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Stop()
		var fire <-chan time.Time
		if len(queue) > 0 {
			timer.Reset(time.Until(queue[0].at))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-sub.C():
			if !ok {
				return sub.Err()
			}
			c, isCluster := raftstore.Unwrap(ev.GetObject()).(*shoalv1.Cluster)
			if !isCluster || ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE {
				continue
			}
			keys := c.GetGossipKeys()
			if len(keys) == 0 || bytes.Equal(keys[0], newest) {
				continue
			}
			newest = keys[0]
			if len(keys) > 1 {
				queue = append(queue, pending{keep: newest, at: time.Now().Add(d.grace(c.GetSettings()))})
				d.log.Info("gossip key rotated; superseded keys will be dropped", "keys", len(keys), "after", d.grace(c.GetSettings()))
			}
		case <-fire:
			p := queue[0]
			if err := d.drop(ctx, p.keep); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				// Not the leader any more, or a conflict: try again soon;
				// leadership loss ends Run anyway.
				d.log.Warn("dropping superseded gossip keys", "err", err)
				queue[0].at = time.Now().Add(time.Second)
				continue
			}
			queue = queue[1:]
		}
	}
}

// drop removes the keys older than keep in one raft entry.
func (d *Dropper) drop(ctx context.Context, keep []byte) error {
	var left int
	_, err := d.store.Update(ctx, func(tx raftstore.WriteTx) error {
		c, ok := raftstore.ClusterOf(tx)
		if !ok {
			return nil
		}
		keys, changed := Drop(c.GetGossipKeys(), keep)
		if !changed {
			return nil
		}
		left = len(keys)
		c = proto.Clone(c).(*shoalv1.Cluster)
		c.GossipKeys = keys
		return tx.Update(c)
	})
	if err == nil && left > 0 {
		d.log.Info("superseded gossip keys dropped", "keys", left)
	}
	return err
}
