package raftstore

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestWatchNodeRoutes: a routed subscription gets its node's task events,
// tasks on networks and the other kinds, in index order, and its filter is
// never even called for the tasks of other nodes: with 200 subscriptions
// and 2,000 tasks spread over their nodes, the filters run once per event
// delivered, not once per event and subscription (the O(sessions ×
// events) cost a filtered watch has inside the FSM's apply).
func TestWatchNodeRoutes(t *testing.T) {
	const nodes, tasks = 200, 2000
	s := single(t, options{})
	var calls atomic.Int64
	keep := func(*shoalv1.WatchEvent, Object) bool { calls.Add(1); return true }
	subs := make([]Subscription, nodes)
	for i := range subs {
		sub, err := s.WatchNode(context.Background(), 0, fmt.Sprintf("n%03d", i), keep, KindTask, KindNetwork)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		subs[i] = sub
	}
	mustUpdate(t, s, func(tx WriteTx) error {
		for i := range tasks {
			if err := tx.Create(mkTask(fmt.Sprintf("t%04d", i), "s", fmt.Sprintf("n%03d", i%nodes), 0, 0)); err != nil {
				return err
			}
		}
		// Unassigned: no session's business.
		return tx.Create(mkTask("pending", "s", "", 0, 0))
	})
	onNet := mkTask("on-net", "s", "n007", 0, 0)
	onNet.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "net1"}}
	mustUpdate(t, s, func(tx WriteTx) error {
		if err := tx.Create(onNet); err != nil {
			return err
		}
		return tx.Create(mkNetwork("net1", "front"))
	})
	for i, sub := range subs {
		evs := collect(t, sub, tasks/nodes+2)
		for j, ev := range evs[:tasks/nodes] {
			if want := fmt.Sprintf("t%04d", j*nodes+i); ev.GetObject().GetTask().GetMeta().GetId() != want {
				t.Fatalf("n%03d event %d: %s, want task %s", i, j, eventKey(ev), want)
			}
		}
		if id := evs[tasks/nodes].GetObject().GetTask().GetMeta().GetId(); id != "on-net" {
			t.Fatalf("n%03d: %s, want the task on a network (every node's business)", i, eventKey(evs[tasks/nodes]))
		}
		if evs[tasks/nodes+1].GetObject().GetNetwork() == nil {
			t.Fatalf("n%03d: %s, want the network", i, eventKey(evs[tasks/nodes+1]))
		}
	}
	if got, want := calls.Load(), int64(tasks+2*nodes); got != want {
		t.Fatalf("filters called %d times, want %d (one per event routed to a subscription)", got, want)
	}
}

// TestWatchNodeReplayAndCut: a routed subscription from an older index
// gets the retained events of its node from the ring first; one whose
// node gets more than a ring of events it does not read is cut off
// (ErrSlowConsumer), while another node's idle subscription is not
// touched by that burst.
func TestWatchNodeReplayAndCut(t *testing.T) {
	const ring = 64
	s := single(t, options{watchRing: ring})
	first := mustUpdate(t, s, func(tx WriteTx) error {
		if err := tx.Create(mkTask("a1", "s", "a", 0, 0)); err != nil {
			return err
		}
		return tx.Create(mkTask("b1", "s", "b", 0, 0))
	})
	all := func(*shoalv1.WatchEvent, Object) bool { return true }
	a, err := s.WatchNode(context.Background(), first, "a", all, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if evs := collect(t, a, 1); evs[0].GetObject().GetTask().GetMeta().GetId() != "a1" {
		t.Fatalf("replay: %s, want a1", eventKey(evs[0]))
	}
	idle, err := s.WatchNode(context.Background(), 0, "c", all, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	for e := range 4 {
		mustUpdate(t, s, func(tx WriteTx) error {
			for i := range ring {
				if err := tx.Create(mkTask(fmt.Sprintf("a-%d-%d", e, i), "s", "a", 0, 0)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	for range a.C() {
	}
	if a.Err() != ErrSlowConsumer {
		t.Fatalf("a ended with %v, want ErrSlowConsumer", a.Err())
	}
	mustUpdate(t, s, createIfMissing(mkTask("c1", "s", "c", 0, 0)))
	if evs := collect(t, idle, 1); evs[0].GetObject().GetTask().GetMeta().GetId() != "c1" || idle.Err() != nil {
		t.Fatalf("idle: %s (err %v), want c1", eventKey(evs[0]), idle.Err())
	}
}

// TestWatchNodeTakenWithoutPump: a routed subscription whose consumer
// takes its events itself (Ready, Take, Done) runs no goroutine of its
// own — 200 of them start none (5,000 node sessions had 5,000 pumps, each
// with its stack and a channel hand-off per event) — and still gets its
// node's events in order, in batches of at most the limit asked for, its
// replay signalled at once, and ok=false once it has ended.
func TestWatchNodeTakenWithoutPump(t *testing.T) {
	const nodes, perNode, limit = 200, 10, 3
	s := single(t, options{})
	first := mustUpdate(t, s, createIfMissing(mkTask("old", "s", "n000", 0, 0)))
	all := func(*shoalv1.WatchEvent, Object) bool { return true }
	before := runtime.NumGoroutine()
	subs := make([]NodeSubscription, nodes)
	for i := range subs {
		sub, err := s.WatchNode(context.Background(), 0, fmt.Sprintf("n%03d", i), all, KindTask)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		subs[i] = sub
	}
	if grew := runtime.NumGoroutine() - before; grew >= nodes/2 {
		t.Fatalf("%d routed subscriptions started %d goroutines, want none (the consumer takes the events)", nodes, grew)
	}
	mustUpdate(t, s, func(tx WriteTx) error {
		for i := range nodes * perNode {
			if err := tx.Create(mkTask(fmt.Sprintf("t%04d", i), "s", fmt.Sprintf("n%03d", i%nodes), 0, 0)); err != nil {
				return err
			}
		}
		return nil
	})
	take := func(sub NodeSubscription, n int) []*shoalv1.WatchEvent {
		t.Helper()
		var got []*shoalv1.WatchEvent
		for len(got) < n {
			select {
			case <-sub.Ready():
			case <-time.After(10 * time.Second):
				t.Fatalf("after 10s: %d of %d events taken, no more signalled", len(got), n)
			}
			for {
				batch, ok := sub.Take(nil, limit)
				if !ok {
					t.Fatalf("Take: ended (%v)", sub.Err())
				}
				if len(batch) > limit {
					t.Fatalf("Take gave %d events, limit %d", len(batch), limit)
				}
				if len(batch) == 0 {
					break
				}
				got = append(got, batch...)
			}
		}
		return got
	}
	for i, sub := range subs {
		for j, ev := range take(sub, perNode) {
			if want := fmt.Sprintf("t%04d", j*nodes+i); ev.GetObject().GetTask().GetMeta().GetId() != want {
				t.Fatalf("n%03d event %d: %s, want task %s", i, j, eventKey(ev), want)
			}
		}
	}
	replay, err := s.WatchNode(context.Background(), first, "n000", all, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	if evs := take(replay, 1+perNode); evs[0].GetObject().GetTask().GetMeta().GetId() != "old" {
		t.Fatalf("replay: %s first, want old", eventKey(evs[0]))
	}
	replay.Close()
	select {
	case <-replay.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after Close")
	}
	if _, ok := replay.Take(nil, limit); ok {
		t.Fatal("Take after the end: ok")
	}
}
