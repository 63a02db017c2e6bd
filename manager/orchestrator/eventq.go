package orchestrator

import (
	"sync"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// eventQueue decouples reading a subscription from a loop's passes: one
// goroutine (drain) reads the store's events as fast as they come and
// queues them here, and the loop takes them in batches between passes.
// Without it a loop busy in a long pass (a full pass over 100,000 tasks)
// read nothing meanwhile, the store's ring (16,384 events) overflowed
// under the agents' status batches, the watch was cut, and the full pass
// it forced was itself long enough to be cut again: scheduling stalled.
//
// The queue coalesces by object: an UPDATE of an object whose previous
// queued event is an UPDATE replaces it in place, so the queue is bounded
// by the number of objects rather than by the events of the pass. Every
// loop's observe reads only the object's latest state (and creations and
// deletions are kept as they are), so the latest update is all it needs.
type eventQueue struct {
	mu sync.Mutex
	// events are in arrival order; at[key] is the position of the key's
	// last queued event, for coalescing.
	events []*shoalv1.WatchEvent
	at     map[eventKey]int
	// ended is set once the subscription's channel closed.
	ended bool
	// ready holds a token when events are queued or the end came.
	ready chan struct{}
}

type eventKey struct {
	kind raftstore.Kind
	id   string
}

func newEventQueue() *eventQueue {
	return &eventQueue{at: map[eventKey]int{}, ready: make(chan struct{}, 1)}
}

// drainBatch is how many events drain takes from the subscription at a
// time (under the store's hub lock, then under q.mu).
const drainBatch = 256

// drain queues every event of sub until it ends; run it in its own
// goroutine. A store subscription (a NodeSubscription) it takes the events
// of itself: publish wakes it directly, and it queues what it took under
// one lock and wakes the loop once. Another (a test's wrapper) it reads
// from C, each event queued before the next is read, as a channel's reader
// does: through a queue fed by another goroutine the loop could take a
// wrapper's events before the last ones sent were queued.
func (q *eventQueue) drain(sub raftstore.Subscription) {
	if ns, ok := sub.(raftstore.NodeSubscription); ok {
		q.drainTaken(ns)
	} else {
		for ev := range sub.C() {
			q.push(ev)
		}
	}
	q.mu.Lock()
	q.ended = true
	q.mu.Unlock()
	q.signal()
}

// drainTaken queues sub's events, drainBatch at a time, until it ends.
func (q *eventQueue) drainTaken(sub raftstore.NodeSubscription) {
	var buf []*shoalv1.WatchEvent
	for {
		var ok bool
		if buf, ok = sub.Take(buf[:0], drainBatch); !ok {
			return
		}
		if len(buf) == 0 {
			select {
			case <-sub.Ready():
			case <-sub.Done():
			}
			continue
		}
		q.mu.Lock()
		for _, ev := range buf {
			q.pushLocked(ev)
		}
		q.mu.Unlock()
		q.signal()
		clear(buf)
	}
}

func (q *eventQueue) push(ev *shoalv1.WatchEvent) {
	q.mu.Lock()
	q.pushLocked(ev)
	q.mu.Unlock()
	q.signal()
}

func (q *eventQueue) pushLocked(ev *shoalv1.WatchEvent) {
	obj := raftstore.Unwrap(ev.GetObject())
	key := eventKey{kind: raftstore.KindOf(obj)}
	if obj != nil {
		key.id = obj.GetMeta().GetId()
	}
	if i, ok := q.at[key]; ok && ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_UPDATE && q.events[i].GetAction() == shoalv1.WatchAction_WATCH_ACTION_UPDATE {
		q.events[i] = ev
	} else {
		q.at[key] = len(q.events)
		q.events = append(q.events, ev)
	}
}

func (q *eventQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take returns the queued events (coalesced) and empties the queue; ended
// reports that the subscription's channel closed and nothing more comes.
func (q *eventQueue) take() (events []*shoalv1.WatchEvent, ended bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	events = q.events
	q.events = nil
	clear(q.at)
	return events, q.ended
}
