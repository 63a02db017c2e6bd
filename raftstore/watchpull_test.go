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

// TestPullTakesWithoutPump: a store subscription taken with Pull is
// itself, starts no pump (publish wakes the consumer), delivers its kinds'
// events in order in batches of the consumer's size, and once closed says
// so to Take and Done.
func TestPullTakesWithoutPump(t *testing.T) {
	s := single(t, options{})
	sub, err := s.Watch(context.Background(), 0, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	p := Pull(sub)
	if p != sub.(NodeSubscription) {
		t.Fatal("Pull wrapped a store subscription")
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

type chanOnlySub struct {
	ch  chan *shoalv1.WatchEvent
	err error // set before ch closes
}

func (c *chanOnlySub) C() <-chan *shoalv1.WatchEvent { return c.ch }
func (c *chanOnlySub) Err() error                    { return c.err }
func (c *chanOnlySub) Close()                        {}

// TestPullOfChannelSubscription: Pull of a subscription that has only C
// hands out every event C delivered, in order, before it says the end, and
// keeps its Err.
func TestPullOfChannelSubscription(t *testing.T) {
	c := &chanOnlySub{ch: make(chan *shoalv1.WatchEvent)}
	p := Pull(c)
	const n = 50
	go func() {
		for i := range n {
			c.ch <- &shoalv1.WatchEvent{Index: uint64(i + 1)}
		}
		c.err = ErrSlowConsumer
		close(c.ch)
	}()
	got := takeAll(t, p, n)
	for i, ev := range got {
		if ev.GetIndex() != uint64(i+1) {
			t.Fatalf("event %d has index %d", i, ev.GetIndex())
		}
	}
	<-p.Done()
	if more, ok := p.Take(nil, 10); ok || len(more) != 0 {
		t.Fatalf("after the end: %d events, ok %v", len(more), ok)
	}
	if !errors.Is(p.Err(), ErrSlowConsumer) {
		t.Fatalf("Err %v", p.Err())
	}
}
