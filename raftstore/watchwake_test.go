package raftstore

import (
	"context"
	"fmt"
	"testing"
)

// TestWatchKindsNotWokenByOtherKinds: publish looks at a kind-filtered
// subscription's kinds itself, so a watcher of nodes is not woken by
// service writes (each woken pump found nothing, locked the hub and slept:
// five such on a leader per PatchService), still gets its own kind's
// events, and a burst of other kinds many rings long does not cut it off
// although it reads nothing meanwhile.
func TestWatchKindsNotWokenByOtherKinds(t *testing.T) {
	const ring = 64
	s := single(t, options{watchRing: ring})
	sub, err := s.Watch(context.Background(), 0, KindNode)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	wakes := func() int {
		s.hub.mu.Lock()
		defer s.hub.mu.Unlock()
		return sub.(*subscription).wakes
	}
	mustUpdate(t, s, createIfMissing(mkService("svc", "web")))
	for i := range 10 {
		mustUpdate(t, s, func(tx WriteTx) error {
			for j := range ring {
				if err := tx.Create(mkTask(fmt.Sprintf("t%02d-%02d", i, j), "svc", "n1", 0, 0)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if n := wakes(); n != 0 {
		t.Fatalf("a node watcher was woken %d times by service and task writes, want 0", n)
	}
	mustUpdate(t, s, createIfMissing(mkNode("n1", "n1", "h1")))
	evs := collect(t, sub, 1)
	if id := evs[0].GetObject().GetNode().GetMeta().GetId(); id != "n1" || sub.Err() != nil {
		t.Fatalf("node watcher got %s (err %v), want node n1", eventKey(evs[0]), sub.Err())
	}
	if n := wakes(); n != 1 {
		t.Fatalf("node watcher woken %d times, want 1 (its one node event)", n)
	}
}
