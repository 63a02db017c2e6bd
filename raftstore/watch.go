package raftstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

const (
	// defaultWatchRing is how many recent events are kept for resuming.
	defaultWatchRing = 16384
	// subscriptionBuffer is how far a live subscriber may fall behind
	// before it is cut off with ErrSlowConsumer.
	subscriptionBuffer = 1024
)

// errUnsubscribed is Err of a subscription its consumer closed.
var errUnsubscribed = errors.New("watch closed by its consumer")

// hub keeps the ring of recent events and fans new ones out to
// subscriptions. Apply never blocks on it for longer than a few channel
// sends that cannot block (a full subscriber is cut off instead).
type hub struct {
	mu sync.Mutex // guards every field below and every subscription's ch and err
	// ring holds the most recent events in index order: it grows to cap and
	// then wraps, head being the oldest once it is full.
	ring []ringEntry
	head int
	// start: the ring holds every event of every entry with index >= start.
	start uint64
	// last is the index of the last entry published.
	last uint64
	subs map[*subscription]struct{}
	// closed is set by close; Watch then fails with ErrClosed.
	closed bool
}

type ringEntry struct {
	ev   *shoalv1.WatchEvent
	kind Kind
}

func newHub(capacity int) *hub {
	if capacity <= 0 {
		capacity = defaultWatchRing
	}
	return &hub{ring: make([]ringEntry, 0, capacity), start: 1, subs: map[*subscription]struct{}{}}
}

// at returns the i-th oldest retained event.
func (h *hub) at(i int) ringEntry {
	return h.ring[(h.head+i)%len(h.ring)]
}

// publish records the events of the entry at index (possibly none) and hands
// them to the subscriptions that want them.
func (h *hub) publish(events []*shoalv1.WatchEvent, index uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range events {
		e := ringEntry{ev: ev, kind: kindOfEvent(ev)}
		if len(h.ring) < cap(h.ring) {
			h.ring = append(h.ring, e)
		} else {
			old := h.ring[h.head]
			h.ring[h.head] = e
			h.head = (h.head + 1) % len(h.ring)
			if old.ev.GetIndex() >= h.start {
				h.start = old.ev.GetIndex() + 1
			}
		}
		for s := range h.subs {
			s.offerLocked(e)
		}
	}
	if index > h.last {
		h.last = index
	}
}

// watch registers a subscription; see Store.Watch.
func (h *hub) watch(ctx context.Context, from uint64, kinds []Kind) (*subscription, error) {
	mask, err := kindMaskOf(kinds)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if from == 0 {
		from = h.last + 1
	} else if from < h.start {
		return nil, fmt.Errorf("watch from index %d: the oldest index retained is %d: %w", from, h.start, ErrCompacted)
	}
	// The ring is sorted by index: find the first event to replay.
	n := len(h.ring)
	first := sort.Search(n, func(i int) bool { return h.at(i).ev.GetIndex() >= from })
	var replay []*shoalv1.WatchEvent
	for i := first; i < n; i++ {
		if e := h.at(i); mask.has(e.kind) {
			replay = append(replay, e.ev)
		}
	}
	// The buffer holds the whole replay plus the usual slack for live
	// events, so resuming far back is not mistaken for slowness.
	s := &subscription{hub: h, from: from, mask: mask, ch: make(chan *shoalv1.WatchEvent, subscriptionBuffer+len(replay))}
	for _, ev := range replay {
		s.ch <- ev
	}
	h.subs[s] = struct{}{}
	// The callback takes h.mu, so it cannot run before we return.
	s.stop = context.AfterFunc(ctx, func() { h.end(s, ctx.Err()) })
	return s, nil
}

// reset empties the ring after a snapshot restore, which replaced the state
// without events: every subscription ends with err and resuming from before
// index is no longer possible.
func (h *hub) reset(index uint64, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		h.endLocked(s, err)
	}
	h.ring = h.ring[:0]
	h.head = 0
	h.start = index + 1
	h.last = index
}

// close ends every subscription with ErrClosed and refuses new ones.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		h.endLocked(s, ErrClosed)
	}
}

func (h *hub) end(s *subscription, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.endLocked(s, err)
}

func (h *hub) endLocked(s *subscription, err error) {
	if s.err != nil {
		return
	}
	s.err = err
	close(s.ch)
	delete(h.subs, s)
	if s.stop != nil {
		s.stop()
	}
}

// subscription is one Watch. Its fields other than ch and err never change
// after watch returns.
type subscription struct {
	hub  *hub
	from uint64
	mask kindMask
	ch   chan *shoalv1.WatchEvent
	err  error // guarded by hub.mu; set once, when ch is closed
	stop func() bool
}

var _ Subscription = (*subscription)(nil)

// offerLocked queues an event the subscription wants, or cuts the
// subscription off if its buffer is full.
func (s *subscription) offerLocked(e ringEntry) {
	if e.ev.GetIndex() < s.from || !s.mask.has(e.kind) {
		return
	}
	select {
	case s.ch <- e.ev:
	default:
		s.hub.endLocked(s, ErrSlowConsumer)
	}
}

func (s *subscription) C() <-chan *shoalv1.WatchEvent { return s.ch }

func (s *subscription) Err() error {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.err
}

func (s *subscription) Close() { s.hub.end(s, errUnsubscribed) }

// kindMask is a set of kinds, one bit per entry of Kinds; 0 means all.
type kindMask uint8

func kindMaskOf(kinds []Kind) (kindMask, error) {
	var m kindMask
	for _, k := range kinds {
		bit := kindBit(k)
		if bit == 0 {
			return 0, fmt.Errorf("raftstore: watch: unknown kind %q", k)
		}
		m |= bit
	}
	return m, nil
}

func kindBit(k Kind) kindMask {
	for i, kk := range Kinds {
		if kk == k {
			return 1 << i
		}
	}
	return 0
}

func (m kindMask) has(k Kind) bool { return m == 0 || m&kindBit(k) != 0 }
