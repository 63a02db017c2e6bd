package raftstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

const (
	// defaultWatchRing is how many recent events are kept: for resuming a
	// watch from an older index, and as the slack of live subscribers.
	defaultWatchRing = 16384
	// pumpBatch is how many events a subscription takes from the ring per
	// lock; chanBuffer how many wait in its channel for the consumer.
	pumpBatch  = 256
	chanBuffer = 64
	// ringMaxAge is how long an event stays in the ring once every
	// subscriber has read it. Without it a node that went idle kept the
	// last 16384 events (the whole tasks, ~1 KB each) for ever: after
	// rounds of creating and removing 100 tasks the idle heap grew by
	// 1 MB a round until the ring was full, ×4 in RSS at GOGC=300.
	// Longer than a client's reconnect (the dashboard backs off up to
	// 8 s); a watch resumed from an index no longer held gets
	// ErrCompacted and re-lists, as after any compaction.
	ringMaxAge = 10 * time.Second
)

// errUnsubscribed is Err of a subscription its consumer closed.
var errUnsubscribed = errors.New("watch closed by its consumer")

// hub keeps the ring of recent events, which is also every subscription's
// queue: a subscription is a cursor into the ring and a goroutine that
// feeds its channel from there. A subscriber is cut off (ErrSlowConsumer)
// only when the ring drops an event it has not read yet, that is when it
// is a whole ring behind, so a burst that dwarfs any per-subscriber buffer
// does not cut subscribers that keep reading. Apply never blocks on it.
type hub struct {
	mu sync.Mutex // guards every field below and every subscription's next and err
	// ring holds the most recent events in index order; ring[i] is the
	// event with sequence number oldest+i. It holds the last cap events,
	// and always every event of the last entry, however many.
	ring []ringEntry
	cap  int
	// oldest is the sequence number of ring[0]; sequence numbers count
	// every event ever published and are never reused.
	oldest uint64
	// start: the ring holds every event of every entry with index >= start.
	start uint64
	// last is the index of the last entry published.
	last uint64
	subs map[*subscription]struct{}
	// closed is set by close; Watch then fails with ErrClosed.
	closed bool

	// maxAge, now and base: an entry published at now()-base is dropped
	// maxAge later by trim, if every subscriber has read it. trimTimer
	// is the pending trim (nil if none).
	maxAge    time.Duration
	now       func() time.Time
	base      time.Time
	trimTimer *time.Timer
}

// ringEntry is an event with what every subscriber's filter looks at
// first, computed once when it is published: the filters run for every
// subscriber on every event (a thousand sessions), and looking the kind's
// bit up in Kinds and the index in the event each time showed in the
// leader's profile.
type ringEntry struct {
	ev    *shoalv1.WatchEvent
	bit   kindMask
	index uint64
	at    time.Duration // when it was published, since hub.base
}

func newHub(capacity int) *hub {
	if capacity <= 0 {
		capacity = defaultWatchRing
	}
	return &hub{ring: make([]ringEntry, 0, capacity), cap: capacity, start: 1, subs: map[*subscription]struct{}{},
		maxAge: ringMaxAge, now: time.Now, base: time.Now()}
}

// nextSeq is the sequence number the next published event gets.
func (h *hub) nextSeq() uint64 { return h.oldest + uint64(len(h.ring)) }

// publish records the events of the entry at index (possibly none), drops
// the events beyond the ring's capacity (never those of this entry), cuts
// off the subscriptions that had not read a dropped event and wakes the
// others.
func (h *hub) publish(events []*shoalv1.WatchEvent, index uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	at := h.now().Sub(h.base)
	for _, ev := range events {
		h.ring = append(h.ring, ringEntry{ev: ev, bit: kindBit(kindOfEvent(ev)), index: ev.GetIndex(), at: at})
	}
	if len(events) > 0 && h.trimTimer == nil && !h.closed {
		h.trimTimer = time.AfterFunc(h.maxAge, h.trimTick)
	}
	drop := 0
	for len(h.ring)-drop > h.cap && h.ring[drop].index < index {
		drop++
	}
	if drop > 0 {
		// A filtered subscription that has not looked at the events about
		// to go is moved over those it does not want, so it is cut only
		// for missing one it does.
		for s := range h.subs {
			if s.keep != nil {
				for s.next < h.oldest+uint64(drop) && !s.wants(h.ring[s.next-h.oldest]) {
					s.next++
				}
			}
		}
		h.dropLocked(drop)
	}
	if index > h.last {
		h.last = index
	}
	// An entry without events can still drop events (those of a previous
	// entry bigger than the ring), so the cut is due then too.
	if len(events) == 0 && drop == 0 {
		return
	}
	end := h.nextSeq()
	for s := range h.subs {
		if s.next < h.oldest {
			h.endLocked(s, ErrSlowConsumer)
			continue
		}
		if s.keep != nil {
			// Look at the new events here, once, and wake the pump only
			// if one is wanted: a thousand filtered subscribers (sessions)
			// woken per entry to find nothing queued on the hub's lock
			// and starved the goroutines that answer heartbeats.
			for s.next < end && !s.wants(h.ring[s.next-h.oldest]) {
				s.next++
			}
			if s.next == end {
				continue
			}
		}
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

// dropLocked removes the n oldest events of the ring; resuming from their
// indexes is no longer possible.
func (h *hub) dropLocked(n int) {
	for i := range n {
		if idx := h.ring[i].index; idx >= h.start {
			h.start = idx + 1
		}
		h.ring[i] = ringEntry{} // let the event be collected
	}
	h.ring = h.ring[n:]
	h.oldest += uint64(n)
	if len(h.ring) == 0 {
		// The emptied front of the array stays allocated until an append
		// moves the ring; a fresh, empty one lets it go.
		h.ring = nil
	}
}

// trim drops the events published maxAge or more before now that every
// subscriber has read (it never cuts a subscriber), and returns how long
// until the oldest event left is due (0: the ring is empty).
func (h *hub) trim(now time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.trimLocked(now)
}

func (h *hub) trimLocked(now time.Time) time.Duration {
	read := h.nextSeq() // every event before read was taken by every subscriber
	for s := range h.subs {
		read = min(read, s.next)
	}
	cutoff := now.Sub(h.base) - h.maxAge
	n := 0
	for n < len(h.ring) && h.oldest+uint64(n) < read && h.ring[n].at <= cutoff {
		n++
	}
	if n > 0 {
		h.dropLocked(n)
	}
	if len(h.ring) == 0 {
		return 0
	}
	// Held back by a subscriber: look again in a while, not in a loop.
	return max(h.ring[0].at-cutoff, h.maxAge/4)
}

// trimTick is trim on the hub's timer: it runs again while events are
// left, and not after close.
func (h *hub) trimTick() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.trimTimer = nil
	if next := h.trimLocked(h.now()); next > 0 && !h.closed {
		h.trimTimer = time.AfterFunc(next, h.trimTick)
	}
}

// take appends to buf up to pumpBatch of the events s wants that it has
// not taken yet; ok is false once s has ended.
func (h *hub) take(s *subscription, buf []*shoalv1.WatchEvent) (_ []*shoalv1.WatchEvent, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.err != nil {
		return buf, false
	}
	end := h.nextSeq()
	for s.next < end && len(buf) < pumpBatch {
		e := h.ring[s.next-h.oldest]
		s.next++
		if s.wants(e) {
			buf = append(buf, e.ev)
		}
	}
	return buf, true
}

// watch registers a subscription; see Store.Watch.
func (h *hub) watch(ctx context.Context, from uint64, kinds []Kind) (*subscription, error) {
	return h.watchFiltered(ctx, from, kinds, nil)
}

// watchFiltered registers a subscription; see Store.WatchFiltered.
func (h *hub) watchFiltered(ctx context.Context, from uint64, kinds []Kind, keep func(*shoalv1.WatchEvent) bool) (*subscription, error) {
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
	// The ring is sorted by index: the cursor starts at the first event to
	// replay (the end of the ring when from is in the future).
	first := sort.Search(len(h.ring), func(i int) bool { return h.ring[i].index >= from })
	s := &subscription{
		hub: h, from: from, mask: mask, keep: keep, next: h.oldest + uint64(first),
		ch: make(chan *shoalv1.WatchEvent, chanBuffer), notify: make(chan struct{}, 1), done: make(chan struct{}),
	}
	h.subs[s] = struct{}{}
	// The callback takes h.mu, so it cannot run before we return.
	s.stop = context.AfterFunc(ctx, func() { h.end(s, ctx.Err()) })
	go s.pump()
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
	h.oldest = h.nextSeq()
	h.ring = nil
	h.start = index + 1
	h.last = index
}

// close ends every subscription with ErrClosed and refuses new ones.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if h.trimTimer != nil {
		h.trimTimer.Stop()
		h.trimTimer = nil
	}
	for s := range h.subs {
		h.endLocked(s, ErrClosed)
	}
}

func (h *hub) end(s *subscription, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.endLocked(s, err)
}

// endLocked records why s ended and stops its pump, which then closes its
// channel.
func (h *hub) endLocked(s *subscription, err error) {
	if s.err != nil {
		return
	}
	s.err = err
	close(s.done)
	delete(h.subs, s)
	if s.stop != nil {
		s.stop()
	}
}

// subscription is one Watch. Its fields other than next and err never
// change after watch returns.
type subscription struct {
	hub  *hub
	from uint64
	mask kindMask
	// keep, if set, selects the events delivered (see Store.WatchFiltered).
	keep func(*shoalv1.WatchEvent) bool
	// next is the sequence number of the next ring event to look at.
	next uint64
	// ch is written and closed only by pump.
	ch     chan *shoalv1.WatchEvent
	notify chan struct{} // new events were published
	done   chan struct{} // closed when the subscription ends
	err    error         // guarded by hub.mu; set once, before done is closed
	stop   func() bool
}

var _ Subscription = (*subscription)(nil)

// wants says whether s delivers e; called with hub.mu held.
func (s *subscription) wants(e ringEntry) bool {
	return e.index >= s.from && (s.mask == 0 || s.mask&e.bit != 0) && (s.keep == nil || s.keep(e.ev))
}

// pump feeds ch from the ring until the subscription ends, then closes it.
// Events it holds when the end comes are dropped: a consumer resumes from
// the last index it saw.
func (s *subscription) pump() {
	defer close(s.ch)
	var buf []*shoalv1.WatchEvent
	for {
		var ok bool
		buf, ok = s.hub.take(s, buf[:0])
		if !ok {
			return
		}
		if len(buf) == 0 {
			select {
			case <-s.notify:
			case <-s.done:
				return
			}
			continue
		}
		for _, ev := range buf {
			select {
			case s.ch <- ev:
			case <-s.done:
				return
			}
		}
		clear(buf)
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
