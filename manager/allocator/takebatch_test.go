package allocator

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestAllocatorTakesAWholeBurst: the allocator takes its events from the
// store in batches; when one entry brings more than a batch and only the
// last event is work (a pending task after tasks needing nothing), it
// takes the rest without waiting for another entry's wake-up.
func TestAllocatorTakesAWholeBurst(t *testing.T) {
	st := newStore(t)
	update(t, st, func(tx raftstore.WriteTx) error {
		if err := tx.Create(net("n1", "10.1.0.0/24")); err != nil {
			return err
		}
		return tx.Create(svc("s1", "vip", "n1"))
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- newAllocator(st, nil).Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, "the service's VIP (the first pass)", func() bool {
		s, _ := raftstore.Get[*shoalv1.Service](st.View(), "s1")
		return len(s.GetVips()) == 1
	})
	update(t, st, func(tx raftstore.WriteTx) error {
		for i := range 2*takeBatch + 10 {
			if err := tx.Create(task(fmt.Sprintf("plain-%03d", i), statePending)); err != nil {
				return err
			}
		}
		return tx.Create(task("last", statePending, "n1"))
	})
	waitFor(t, "the burst's last task allocated", func() bool { return addrOf(st, "last") != "" })
}

// chanSub is a subscription with C only, as a test's wrapper has.
type chanSub struct {
	ch  chan *shoalv1.WatchEvent
	err error // set before ch closes
}

func (c *chanSub) C() <-chan *shoalv1.WatchEvent { return c.ch }
func (c *chanSub) Err() error                    { return c.err }
func (c *chanSub) Close()                        {}

// TestServeReadsAWrappersSubscriptionFromC: serve reads a subscription
// that is not the store's from C: an event sent there is work for the
// next pass, and the end of C ends serve with the subscription's Err.
func TestServeReadsAWrappersSubscriptionFromC(t *testing.T) {
	st := newStore(t)
	update(t, st, func(tx raftstore.WriteTx) error {
		if err := tx.Create(net("n1", "10.1.0.0/24")); err != nil {
			return err
		}
		return tx.Create(svc("s1", "vip", "n1"))
	})
	a := newAllocator(st, nil)
	a.rebuild(st.View())
	sub := &chanSub{ch: make(chan *shoalv1.WatchEvent)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, sub) }()
	waitFor(t, "the service's VIP (the first pass)", func() bool {
		s, _ := raftstore.Get[*shoalv1.Service](st.View(), "s1")
		return len(s.GetVips()) == 1
	})
	// Stored after the first pass: only its event, sent on C, calls for
	// the pass that allocates it.
	t1 := task("t1", statePending, "n1")
	update(t, st, func(tx raftstore.WriteTx) error { return tx.Create(t1) })
	select {
	case sub.ch <- &shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_CREATE, Object: raftstore.Wrap(t1)}:
	case <-time.After(10 * time.Second):
		t.Fatal("serve does not read C")
	}
	waitFor(t, "t1 allocated", func() bool { return addrOf(st, "t1") != "" })
	sub.err = raftstore.ErrSlowConsumer
	close(sub.ch)
	select {
	case err := <-done:
		if !errors.Is(err, raftstore.ErrSlowConsumer) {
			t.Fatalf("serve returned %v, want ErrSlowConsumer", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return once C closed")
	}
}
