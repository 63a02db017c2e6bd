package raftstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// trimHub is a hub on a clock the test moves.
func trimHub(t *testing.T) (*hub, *time.Time) {
	t.Helper()
	h := newHub(0)
	clock := h.base
	h.now = func() time.Time { return clock }
	t.Cleanup(h.close)
	return h, &clock
}

func publishTasks(h *hub, index uint64, ids ...string) {
	var evs []*shoalv1.WatchEvent
	for _, id := range ids {
		evs = append(evs, &shoalv1.WatchEvent{Index: index, Action: shoalv1.WatchAction_WATCH_ACTION_CREATE,
			Object: Wrap(mkTask(id, "s", "", 0, 0))})
	}
	h.publish(evs, index)
}

// An idle hub forgets the events every subscriber has read once they are
// ringMaxAge old (a node that went idle kept the last 16384 events, whole
// tasks, for ever); resuming from before them is then ErrCompacted, from
// after them works.
func TestWatchRingTrimsOldEvents(t *testing.T) {
	h, clock := trimHub(t)
	for i := range uint64(100) {
		publishTasks(h, i+1, fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i))
	}
	*clock = clock.Add(ringMaxAge / 2)
	publishTasks(h, 101, "young")

	// Half the age: nothing goes yet.
	if next := h.trim(*clock); next != ringMaxAge/2 || len(h.ring) != 201 {
		t.Fatalf("trim before the age: next %v, %d events left, want %v and 201", next, len(h.ring), ringMaxAge/2)
	}
	*clock = clock.Add(ringMaxAge / 2)
	if next := h.trim(*clock); next != ringMaxAge/2 || len(h.ring) != 1 {
		t.Fatalf("trim at the age: next %v, %d events left, want %v and the young one", next, len(h.ring), ringMaxAge/2)
	}
	if _, err := h.watch(context.Background(), 50, nil); !errors.Is(err, ErrCompacted) {
		t.Fatalf("watch from a trimmed index: %v", err)
	}
	sub, err := h.watch(context.Background(), 101, nil)
	if err != nil {
		t.Fatalf("watch from the index still held: %v", err)
	}
	if got := eventKeys(collect(t, sub, 1)); got[0] != "101 WATCH_ACTION_CREATE task young" {
		t.Fatalf("replayed %v", got)
	}
	sub.Close()

	*clock = clock.Add(ringMaxAge)
	if next := h.trim(*clock); next != 0 || len(h.ring) != 0 || h.ring != nil {
		t.Fatalf("trim of all: next %v, %d events left (array %v), want an empty ring", next, len(h.ring), h.ring != nil)
	}
	// Caught-up resumption and new events work on the emptied ring.
	sub, err = h.watch(context.Background(), 102, nil)
	if err != nil {
		t.Fatalf("watch from the next index: %v", err)
	}
	defer sub.Close()
	publishTasks(h, 102, "after")
	if got := eventKeys(collect(t, sub, 1)); got[0] != "102 WATCH_ACTION_CREATE task after" {
		t.Fatalf("live after the trim: %v", got)
	}
}

// The trim never cuts a subscriber: what it has not read stays, however
// old, and goes once it is read.
func TestWatchRingTrimKeepsUnread(t *testing.T) {
	h, clock := trimHub(t)
	ctx := context.Background()
	// A subscriber that reads nothing: its channel takes chanBuffer
	// events and the pump holds one more; the rest stays in the ring.
	slow, err := h.watch(ctx, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := chanBuffer + pumpBatch + 10
	for i := range n {
		publishTasks(h, uint64(i+1), fmt.Sprintf("t%d", i))
	}
	*clock = clock.Add(2 * ringMaxAge)
	if next := h.trim(*clock); next <= 0 || len(h.ring) == 0 {
		t.Fatalf("trim with an unread subscriber: next %v, %d events left", next, len(h.ring))
	}
	if err := slow.Err(); err != nil {
		t.Fatalf("the trim ended the subscriber: %v", err)
	}
	got := collect(t, slow, n)
	if got[0].GetIndex() != 1 || got[n-1].GetIndex() != uint64(n) {
		t.Fatalf("the subscriber read %v … %v", eventKey(got[0]), eventKey(got[n-1]))
	}
	if next := h.trim(*clock); next != 0 || len(h.ring) != 0 {
		t.Fatalf("trim after the read: next %v, %d events left", next, len(h.ring))
	}
}

// The hub's own timer does the trim: a store left alone drops its events.
func TestWatchRingTrimTimer(t *testing.T) {
	h := newHub(0)
	defer h.close()
	h.maxAge = time.Millisecond
	publishTasks(h, 1, "t1")
	deadline := time.Now().Add(30 * time.Second)
	for {
		h.mu.Lock()
		left, pending := len(h.ring), h.trimTimer != nil
		h.mu.Unlock()
		if left == 0 && !pending {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events left, timer pending %v", left, pending)
		}
		time.Sleep(time.Millisecond)
	}
}

// A routed subscription (a node's session, WatchNode) has a queue of its
// own and never reads the ring through a cursor: it must not hold the
// trim back (its cursor stays where it registered, so counting it kept
// every event of a busy node's life).
func TestWatchRingTrimIgnoresRoutedSubscriptions(t *testing.T) {
	h, clock := trimHub(t)
	sub, err := h.watchNode(context.Background(), 0, "n1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for i := range uint64(10) {
		publishTasks(h, i+1, fmt.Sprintf("a%d", i))
	}
	*clock = clock.Add(ringMaxAge)
	if next := h.trim(*clock); next != 0 || len(h.ring) != 0 {
		t.Fatalf("trim with only a routed subscriber: next %v, %d events left, want an empty ring", next, len(h.ring))
	}
}
