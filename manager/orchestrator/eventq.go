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

// drain queues every event of ch until it closes; run it in its own
// goroutine.
func (q *eventQueue) drain(ch <-chan *shoalv1.WatchEvent) {
	for ev := range ch {
		q.push(ev)
	}
	q.mu.Lock()
	q.ended = true
	q.mu.Unlock()
	q.signal()
}

func (q *eventQueue) push(ev *shoalv1.WatchEvent) {
	obj := raftstore.Unwrap(ev.GetObject())
	key := eventKey{kind: raftstore.KindOf(obj)}
	if obj != nil {
		key.id = obj.GetMeta().GetId()
	}
	update := ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_UPDATE
	q.mu.Lock()
	if i, ok := q.at[key]; ok && update && q.events[i].GetAction() == shoalv1.WatchAction_WATCH_ACTION_UPDATE {
		q.events[i] = ev
	} else {
		q.at[key] = len(q.events)
		q.events = append(q.events, ev)
	}
	q.mu.Unlock()
	q.signal()
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
