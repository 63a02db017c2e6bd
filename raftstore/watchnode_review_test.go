package raftstore

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestNodeSubscriptionTakeUnderConcurrentPublish: a consumer that takes
// its events as a node session does (wait on Ready, take until nothing is
// left, wait again) while entries are published concurrently gets every
// event of its node exactly once and in index order, and is never left
// waiting with events queued: an event queued between its last empty Take
// and its wait on Ready must wake it (a lost wake-up shows as the consumer
// stuck short of the total).
func TestNodeSubscriptionTakeUnderConcurrentPublish(t *testing.T) {
	const entries = 20000
	h := newHub(1 << 16)
	t.Cleanup(h.close)
	all := func(*shoalv1.WatchEvent, Object) bool { return true }
	sub, err := h.watchNode(context.Background(), 0, "a", nil, all)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	want := 0
	for i := range entries {
		if i%3 != 2 {
			want++
		}
	}
	got := make(chan []uint64, 1)
	go func() {
		var seen []uint64
		var buf []*shoalv1.WatchEvent
		for len(seen) < want {
			select {
			case <-sub.Ready():
			case <-sub.Done():
				got <- seen
				return
			}
			for {
				var ok bool
				if buf, ok = sub.Take(buf[:0], 7); !ok {
					got <- seen
					return
				}
				if len(buf) == 0 {
					break
				}
				for _, ev := range buf {
					seen = append(seen, ev.GetIndex())
				}
				runtime.Gosched() // let the publisher in between takes
			}
		}
		got <- seen
	}()
	for i := range entries {
		index := uint64(i + 1)
		node := "a"
		if i%3 == 2 {
			node = "b" // another node's task: not routed to a
		}
		h.publish([]*shoalv1.WatchEvent{{Index: index, Action: shoalv1.WatchAction_WATCH_ACTION_CREATE,
			Object: Wrap(mkTask(fmt.Sprintf("t%d", i), "s", node, 0, 0))}}, index)
	}
	var seen []uint64
	select {
	case seen = <-got:
	case <-time.After(60 * time.Second):
		t.Fatalf("consumer still waiting 60s after the last publish: a wake-up was lost (queued %d)", want)
	}
	if err := sub.Err(); err != nil {
		t.Fatalf("subscription ended: %v", err)
	}
	if len(seen) != want {
		t.Fatalf("took %d events, want %d", len(seen), want)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("event %d has index %d after %d: out of order or duplicated", i, seen[i], seen[i-1])
		}
	}
}

// TestNodeSubscriptionsReconnectLeaveNothing: 10,000 sessions of one node
// opening and ending (by Close, by their context, cut off as slow
// consumers) leave no subscription in the hub's tables, no queued events
// and no goroutine behind.
func TestNodeSubscriptionsReconnectLeaveNothing(t *testing.T) {
	const rounds, ring = 10000, 8
	h := newHub(ring)
	t.Cleanup(h.close)
	all := func(*shoalv1.WatchEvent, Object) bool { return true }
	before := runtime.NumGoroutine()
	index := uint64(0)
	publish := func(node string, n int) {
		index++
		evs := make([]*shoalv1.WatchEvent, n)
		for i := range evs {
			evs[i] = &shoalv1.WatchEvent{Index: index, Action: shoalv1.WatchAction_WATCH_ACTION_CREATE,
				Object: Wrap(mkTask(fmt.Sprintf("t%d-%d", index, i), "s", node, 0, 0))}
		}
		h.publish(evs, index)
	}
	for i := range rounds {
		ctx, cancel := context.WithCancel(context.Background())
		sub, err := h.watchNode(ctx, 0, "n1", nil, all)
		if err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 0:
			publish("n1", 1)
			sub.Take(nil, 1)
			sub.Close()
		case 1:
			publish("n1", 2)
			cancel()
		case 2:
			publish("n1", ring+1) // a whole ring unread: cut off
			if sub.Err() != ErrSlowConsumer {
				t.Fatalf("round %d: %v, want ErrSlowConsumer", i, sub.Err())
			}
		}
		cancel()
		<-sub.Done()
	}
	h.mu.Lock()
	subs, routed, byNode, cursors, woken := len(h.subs), len(h.routed), len(h.byNode), len(h.cursors), len(h.woken)
	h.mu.Unlock()
	if subs+routed+byNode+cursors+woken != 0 {
		t.Fatalf("after %d sessions: subs %d routed %d byNode %d cursors %d woken %d, want none", rounds, subs, routed, byNode, cursors, woken)
	}
	deadline := time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after %d sessions, %d before", n, rounds, before)
	}
}
