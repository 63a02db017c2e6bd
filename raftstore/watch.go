package raftstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
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
// A routed subscription (WatchNode, a node's session) is the exception: it
// has its own queue, filled by publish with the events routed to it, so a
// burst of other nodes' tasks costs it nothing (see route).
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
	// cursors are the subscriptions that read the ring through their
	// cursor (Watch, WatchFiltered); routed those with their own queue
	// (WatchNode), byNode the same by node id. publish walks cursors per
	// entry, but a routed subscription only when an event is for it.
	cursors map[*subscription]struct{}
	routed  map[*subscription]struct{}
	byNode  map[string]map[*subscription]struct{}
	// woken collects, during publish, the routed subscriptions given an
	// event, to be woken once each at its end.
	woken []*subscription
	// closed is set by close; Watch then fails with ErrClosed.
	closed bool
	// restoring is odd from beginRestore until reset: a snapshot restore
	// is under way (the FSM's state may already be the restored one while
	// its subscriptions have not been ended yet). Read without mu by Err.
	restoring atomic.Uint64
	// nrouted is len(routed), read without mu by the FSM (wantsPrev).
	nrouted atomic.Int32

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
	// prev is, for an update of a service, a task or a node, the stored
	// object it replaced (prevOf: a service less its previous_spec; nil
	// for every other event): what a WatchNode filter compares to skip
	// the writes that change nothing it acts on.
	prev Object
}

func newHub(capacity int) *hub {
	if capacity <= 0 {
		capacity = defaultWatchRing
	}
	return &hub{
		ring: make([]ringEntry, 0, capacity), cap: capacity, start: 1,
		subs: map[*subscription]struct{}{}, cursors: map[*subscription]struct{}{},
		routed: map[*subscription]struct{}{}, byNode: map[string]map[*subscription]struct{}{},
		maxAge: ringMaxAge, now: time.Now, base: time.Now(),
	}
}

// wantsPrev says whether an entry applied now should give its events
// their prev (ringEntry.prev): only routed subscriptions (node sessions,
// on the leader) read it, so a store without them (a follower, a leader
// without agents) spares the copy and the ring the objects. A session
// that replays an event published without one sees prev nil, which a
// filter takes as "may have changed".
func (h *hub) wantsPrev() bool { return h.nrouted.Load() > 0 }

// nextSeq is the sequence number the next published event gets.
func (h *hub) nextSeq() uint64 { return h.oldest + uint64(len(h.ring)) }

// publish records the events of the entry at index (possibly none), drops
// the events beyond the ring's capacity (never those of this entry), cuts
// off the subscriptions that had not read a dropped event and wakes the
// others.
func (h *hub) publish(events []*shoalv1.WatchEvent, index uint64) {
	h.publishEntry(events, nil, index)
}

// publishEntry is publish with prevs: prevs[i] (if prevs is not nil) is
// the object events[i] replaced, for the updates that keep it (see
// ringEntry.prev).
func (h *hub) publishEntry(events []*shoalv1.WatchEvent, prevs []Object, index uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	at := h.now().Sub(h.base)
	for i, ev := range events {
		e := ringEntry{ev: ev, bit: kindBit(kindOfEvent(ev)), index: ev.GetIndex(), at: at}
		if prevs != nil {
			e.prev = prevs[i]
		}
		h.ring = append(h.ring, e)
		if len(h.routed) > 0 {
			h.route(e)
		}
	}
	if len(events) > 0 && h.trimTimer == nil && !h.closed {
		h.trimTimer = time.AfterFunc(h.maxAge, h.trimTick)
	}
	for _, s := range h.woken {
		s.woken = false
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
	clear(h.woken)
	h.woken = h.woken[:0]
	drop := 0
	for len(h.ring)-drop > h.cap && h.ring[drop].index < index {
		drop++
	}
	if drop > 0 {
		// A filtered subscription that has not looked at the events about
		// to go is moved over those it does not want, so it is cut only
		// for missing one it does.
		for s := range h.cursors {
			if s.filtered() {
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
	for s := range h.cursors {
		if s.next < h.oldest {
			h.endLocked(s, ErrSlowConsumer)
			continue
		}
		if s.filtered() {
			// Look at the new events here, once, and wake the pump only
			// if one is wanted: a thousand filtered subscribers (sessions)
			// woken per entry to find nothing queued on the hub's lock
			// and starved the goroutines that answer heartbeats. The
			// kinds count as a filter too: a leader's watchers of nodes,
			// the cluster or tasks (membership, certificate renewal,
			// gossip keys, log routing) were each woken by every service
			// write, ~5 of the ~30 goroutine wake-ups of a one-writer
			// PatchService on the leader.
			for s.next < end && !s.wants(h.ring[s.next-h.oldest]) {
				s.next++
			}
			if s.next == end {
				continue
			}
		}
		s.wakes++
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
	// Routed subscriptions have queues of their own: only cursors read
	// the ring.
	for s := range h.cursors {
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

// take appends to buf up to limit (at least 1; pump's is pumpBatch) of the
// events s wants that it has not taken yet; ok is false once s has ended.
func (h *hub) take(s *subscription, buf []*shoalv1.WatchEvent, limit int) (_ []*shoalv1.WatchEvent, ok bool) {
	limit = max(limit, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.err != nil {
		return buf, false
	}
	if s.routed {
		n := max(0, min(limit-len(buf), len(s.queue)-s.qhead))
		buf = append(buf, s.queue[s.qhead:s.qhead+n]...)
		clear(s.queue[s.qhead : s.qhead+n])
		s.qhead += n
		switch {
		case s.qhead == len(s.queue) && cap(s.queue) > maxIdleQueue:
			s.queue, s.qhead = nil, 0 // a burst's queue is not kept for ever
		case s.qhead == len(s.queue):
			s.queue, s.qhead = s.queue[:0], 0
		case s.qhead >= limit*4 && s.qhead*2 >= len(s.queue):
			m := copy(s.queue, s.queue[s.qhead:])
			clear(s.queue[m:])
			s.queue, s.qhead = s.queue[:m], 0
		}
		return buf, true
	}
	end := h.nextSeq()
	for s.next < end && len(buf) < limit {
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
	var keepPrev KeepFunc
	if keep != nil {
		keepPrev = func(ev *shoalv1.WatchEvent, _ Object) bool { return keep(ev) }
	}
	return h.register(ctx, from, kinds, keepPrev, false, "")
}

// watchNode registers a routed subscription; see Store.WatchNode.
func (h *hub) watchNode(ctx context.Context, from uint64, node string, kinds []Kind, keep KeepFunc) (*subscription, error) {
	return h.register(ctx, from, kinds, keep, true, node)
}

func (h *hub) register(ctx context.Context, from uint64, kinds []Kind, keep KeepFunc, routed bool, node string) (*subscription, error) {
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
		routed: routed, node: node,
		notify: make(chan struct{}, 1), done: make(chan struct{}),
	}
	// The callback takes h.mu, so it cannot run before we return.
	s.stop = context.AfterFunc(ctx, func() { h.end(s, ctx.Err()) })
	h.subs[s] = struct{}{}
	if routed {
		h.routed[s] = struct{}{}
		h.nrouted.Store(int32(len(h.routed)))
		if h.byNode[node] == nil {
			h.byNode[node] = map[*subscription]struct{}{}
		}
		h.byNode[node][s] = struct{}{}
		// The replay from the ring goes to the queue like new events.
		for _, e := range h.ring[first:] {
			if n, ok := routeNode(e); !ok || n == node {
				h.offer(s, e)
			}
		}
		for _, w := range h.woken {
			w.woken = false
		}
		clear(h.woken)
		h.woken = h.woken[:0]
		if len(s.queue) > 0 {
			s.notify <- struct{}{} // the replay is waiting (Ready)
		}
		// No pump until C is called: a session takes its events itself
		// (Ready, Take).
		return s, nil
	}
	h.cursors[s] = struct{}{}
	if first < len(h.ring) {
		s.notify <- struct{}{} // a replay may be waiting (Ready)
	}
	// No pump until C is called either: a consumer that takes the events
	// itself spares the pump's goroutine and its wake-up per entry.
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
	if h.restoring.Load()%2 == 1 {
		h.restoring.Add(1) // every subscription of before has ended
	}
	h.oldest = h.nextSeq()
	h.ring = nil
	h.start = index + 1
	h.last = index
}

// beginRestore marks a snapshot restore under way, before the FSM's state
// is replaced: until reset ends them, live subscriptions answer Err with
// ErrRestored. Called by the FSM goroutine only.
func (h *hub) beginRestore() {
	if h.restoring.Load()%2 == 0 {
		h.restoring.Add(1)
	}
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
	delete(h.cursors, s)
	if s.routed {
		delete(h.routed, s)
		h.nrouted.Store(int32(len(h.routed)))
		if m := h.byNode[s.node]; m != nil {
			delete(m, s)
			if len(m) == 0 {
				delete(h.byNode, s.node)
			}
		}
		clear(s.queue)
		s.queue, s.qhead = nil, 0
	}
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
	// keep, if set, selects the events delivered (see Store.WatchFiltered
	// and Store.WatchNode).
	keep KeepFunc
	// next is the sequence number of the next ring event to look at
	// (not used by a routed subscription).
	next uint64
	// routed: the subscription has its own queue, filled by publish with
	// the events routed to node (see Store.WatchNode); queue[qhead:] are
	// the events not taken yet, woken says it is in hub.woken. Guarded by
	// hub.mu.
	routed bool
	node   string
	// wakes counts publish's wake-ups of the pump (guarded by hub.mu;
	// tests read it).
	wakes int
	queue []*shoalv1.WatchEvent
	qhead int
	woken bool
	// ch is written and closed only by pump; made by startPump.
	ch       chan *shoalv1.WatchEvent
	pumpOnce sync.Once     // starts pump (at register, or a routed subscription's first C)
	notify   chan struct{} // new events were published
	done     chan struct{} // closed when the subscription ends
	err      error         // guarded by hub.mu; set once, before done is closed
	stop     func() bool
}

var (
	_ Subscription     = (*subscription)(nil)
	_ NodeSubscription = (*subscription)(nil)
)

// NodeSubscription is the subscription WatchNode returns; every one
// Watch and WatchFiltered return is one too. Its consumer either reads C,
// or takes the queued events itself: Ready signals that some may be
// waiting, Take takes them in order, Done is closed when the subscription
// ends (Err says why) — not both. Taking them itself spares a goroutine
// per subscription (5,000 with as many node sessions, each with its
// stack) and a channel hand-off per event, and lets the consumer take
// everything queued at once.
type NodeSubscription interface {
	Subscription
	Ready() <-chan struct{}
	Done() <-chan struct{}
	// Take appends to buf, in order, up to limit of the events not taken
	// yet; ok is false once the subscription has ended.
	Take(buf []*shoalv1.WatchEvent, limit int) (_ []*shoalv1.WatchEvent, ok bool)
}

// filtered says whether s may want fewer than all events (kinds or keep).
func (s *subscription) filtered() bool { return s.mask != 0 || s.keep != nil }

// wants says whether s delivers e; called with hub.mu held.
func (s *subscription) wants(e ringEntry) bool {
	return e.index >= s.from && (s.mask == 0 || s.mask&e.bit != 0) && (s.keep == nil || s.keep(e.ev, e.prev))
}

// routeNode says which node alone a routed subscription may want e for:
// a task event is for the task's node (none while it is unassigned),
// unless the task is on a network, or was before this update (e.prev),
// whose endpoints every node's session may need: a task whose attachments
// are dropped leaves every node's state (TestTaskLeavesItsNetworksReview).
// ok is false for the events offered to every routed subscription (the
// other kinds, tasks on networks).
func routeNode(e ringEntry) (node string, ok bool) {
	t := e.ev.GetObject().GetTask()
	if t == nil || len(t.GetNetworks()) > 0 {
		return "", false
	}
	if p, on := e.prev.(*shoalv1.Task); on && len(p.GetNetworks()) > 0 {
		return "", false
	}
	return t.GetNodeId(), true
}

// route hands e, just added to the ring, to the routed subscriptions it
// is for: only those of its node for a task off any network, so a burst
// of tasks costs one queue append per event, not a filter call per event
// and subscription.
func (h *hub) route(e ringEntry) {
	if node, ok := routeNode(e); ok {
		for s := range h.byNode[node] {
			h.offer(s, e)
		}
		return
	}
	for s := range h.routed {
		h.offer(s, e)
	}
}

// offer queues e for the routed subscription s if s wants it, and cuts s
// off when its queue holds a whole ring's worth of events it has not
// taken: the same bound a cursor subscription has.
func (h *hub) offer(s *subscription, e ringEntry) {
	if s.err != nil || !s.wants(e) {
		return
	}
	if len(s.queue)-s.qhead >= h.cap {
		h.endLocked(s, ErrSlowConsumer)
		return
	}
	s.queue = append(s.queue, e.ev)
	if !s.woken {
		s.woken = true
		h.woken = append(h.woken, s)
	}
}

// maxIdleQueue is the largest queue capacity an emptied routed queue keeps.
const maxIdleQueue = 1024

// pump feeds ch from the ring until the subscription ends, then closes it.
// Events it holds when the end comes are dropped: a consumer resumes from
// the last index it saw.
func (s *subscription) pump() {
	defer close(s.ch)
	var buf []*shoalv1.WatchEvent
	for {
		var ok bool
		buf, ok = s.hub.take(s, buf[:0], pumpBatch)
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

// C starts the pump on its first call (a routed subscription has none
// until then).
func (s *subscription) C() <-chan *shoalv1.WatchEvent {
	s.startPump()
	return s.ch
}

// startPump makes ch and starts pump, once.
func (s *subscription) startPump() {
	s.pumpOnce.Do(func() {
		s.ch = make(chan *shoalv1.WatchEvent, chanBuffer)
		go s.pump()
	})
}

func (s *subscription) Ready() <-chan struct{} { return s.notify }

func (s *subscription) Done() <-chan struct{} { return s.done }

func (s *subscription) Take(buf []*shoalv1.WatchEvent, limit int) ([]*shoalv1.WatchEvent, bool) {
	return s.hub.take(s, buf, limit)
}

func (s *subscription) Err() error {
	// A live subscription answers without the hub's lock, which the apply
	// holds while it publishes: the raft transport asks on every read
	// (manager/transport.StoreGeneration). done is closed after err is
	// set, both under the lock. While a snapshot restore is under way
	// (between the state's replacement and reset, which ends every
	// subscription with ErrRestored) it already answers ErrRestored: a
	// caller that trusts what it cached while its subscription is live
	// must not trust it once a fresh view may hold the restored state.
	// The restore count is read on both sides of done, so a restore that
	// began (or came and went) during the check is seen.
	r := s.hub.restoring.Load()
	select {
	case <-s.done:
	default:
		if r%2 == 0 && s.hub.restoring.Load() == r {
			return nil
		}
		return ErrRestored
	}
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
