package raftstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestWatchReplayIsReady: a subscription resumed from an index the ring
// still holds, taken by its consumer, signals Ready for its replay at once, as
// WatchNode's does (NodeSubscription: Ready says events may be waiting).
// Without it a consumer that waits for Ready before it takes sat on the
// replay until the next entry was published.
func TestWatchReplayIsReady(t *testing.T) {
	s := single(t, options{})
	from := mustUpdate(t, s, createIfMissing(mkService("svc", "web")))
	mustUpdate(t, s, createIfMissing(mkTask("t1", "svc", "n1", 0, 0)))
	for _, kinds := range [][]Kind{nil, {KindTask}} {
		sub, err := s.Watch(context.Background(), from, kinds...)
		if err != nil {
			t.Fatal(err)
		}
		p := sub.(NodeSubscription)
		select {
		case <-p.Ready():
		default:
			t.Fatalf("kinds %v: the replay waits, but Ready has no token", kinds)
		}
		if evs, ok := p.Take(nil, 10); !ok || len(evs) == 0 {
			t.Fatalf("kinds %v: took %d events, ok %v", kinds, len(evs), ok)
		}
		sub.Close()
	}
	// Nothing to replay: no token (a consumer is not woken for nothing).
	sub, err := s.Watch(context.Background(), 0, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	select {
	case <-sub.(NodeSubscription).Ready():
		t.Fatal("Ready has a token with nothing to replay")
	default:
	}
}

// TestWatchKindsSubscriptionCutForAWantedEvent: a kind-filtered
// subscription is moved over the other kinds' events, but it is still cut
// off (ErrSlowConsumer, seen by Done and Take) when the ring drops one of
// its own kind's events it has not taken.
func TestWatchKindsSubscriptionCutForAWantedEvent(t *testing.T) {
	const ring = 32
	s := single(t, options{watchRing: ring})
	sub, err := s.Watch(context.Background(), 0, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	p := sub.(NodeSubscription)
	mustUpdate(t, s, createIfMissing(mkService("svc", "web")))
	for i := range 3 {
		mustUpdate(t, s, func(tx WriteTx) error {
			for j := range ring {
				if err := tx.Create(mkNode(fmt.Sprintf("n%d-%02d", i, j), fmt.Sprintf("n%d-%02d", i, j), "h")); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := sub.Err(); err != nil {
		t.Fatalf("cut off by other kinds' events: %v", err)
	}
	mustUpdate(t, s, createIfMissing(mkTask("t0", "svc", "n1", 0, 0)))
	for i := range 2 {
		mustUpdate(t, s, func(tx WriteTx) error {
			for j := range ring {
				if err := tx.Create(mkNode(fmt.Sprintf("m%d-%02d", i, j), fmt.Sprintf("m%d-%02d", i, j), "h")); err != nil {
					return err
				}
			}
			return nil
		})
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("not cut off after the ring dropped its unread task event")
	}
	if evs, ok := p.Take(nil, 10); ok || len(evs) != 0 {
		t.Fatalf("after the cut: %d events, ok %v", len(evs), ok)
	}
	if !errors.Is(sub.Err(), ErrSlowConsumer) {
		t.Fatalf("Err %v, want ErrSlowConsumer", sub.Err())
	}
}
