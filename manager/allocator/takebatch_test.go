package allocator

import (
	"context"
	"fmt"
	"testing"

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
