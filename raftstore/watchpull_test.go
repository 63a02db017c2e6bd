package raftstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// takeAll takes from p, in batches of 7, until it has n events or the
// deadline passes; after a full batch it takes again at once (no wake-up
// is due for what is left).
func takeAll(t *testing.T, p NodeSubscription, n int) []*shoalv1.WatchEvent {
	t.Helper()
	var got []*shoalv1.WatchEvent
	deadline := time.After(10 * time.Second)
	for {
		batch, ok := p.Take(nil, 7)
		got = append(got, batch...)
		if len(got) >= n {
			return got
		}
		if !ok {
			t.Fatalf("ended after %d of %d events", len(got), n)
		}
		if len(batch) == 7 {
			continue
		}
		select {
		case <-p.Ready():
		case <-p.Done():
		case <-deadline:
			t.Fatalf("got %d of %d events", len(got), n)
		}
	}
}

// TestWatchTakenWithoutPump: a Watch subscription is a NodeSubscription;
// taken by its consumer it starts no pump (publish wakes the consumer),
// delivers its kinds' events in order in batches of the consumer's size,
// and once closed says so to Take and Done.
func TestWatchTakenWithoutPump(t *testing.T) {
	s := single(t, options{})
	sub, err := s.Watch(context.Background(), 0, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := sub.(NodeSubscription)
	if !ok {
		t.Fatalf("Watch returned a %T, not a NodeSubscription", sub)
	}
	var want []string
	for e := range 5 {
		mustUpdate(t, s, func(tx WriteTx) error {
			if err := tx.Create(mkService(fmt.Sprintf("s%d", e), fmt.Sprintf("web%d", e))); err != nil {
				return err
			}
			for i := range 4 {
				id := fmt.Sprintf("t%d-%d", e, i)
				want = append(want, id)
				if err := tx.Create(mkTask(id, "s", "n1", 0, 0)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	got := takeAll(t, p, len(want))
	for i, ev := range got {
		if id := ev.GetObject().GetTask().GetMeta().GetId(); id != want[i] {
			t.Fatalf("event %d: %s, want task %s", i, eventKey(ev), want[i])
		}
	}
	s.hub.mu.Lock()
	pumped := sub.(*subscription).ch != nil
	s.hub.mu.Unlock()
	if pumped {
		t.Fatal("a pump was started for a subscription whose consumer takes")
	}
	sub.Close()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after Close")
	}
	if _, ok := p.Take(nil, 10); ok {
		t.Fatal("Take still ok after Close")
	}
	if !errors.Is(sub.Err(), errUnsubscribed) {
		t.Fatalf("Err %v", sub.Err())
	}
}
