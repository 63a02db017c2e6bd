package allocator

import (
	"context"
	"fmt"
	"sync"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// lostAckStore commits the first entry that writes something but reports
// it failed, as Update does when leadership is lost while the entry is in
// flight (raft.ErrLeadershipLost, mapped to ErrNotLeader): the entry may
// still be committed, here by the same node re-elected.
type lostAckStore struct {
	*raftstore.Store
	mu   sync.Mutex
	lost bool
}

func (s *lostAckStore) Update(ctx context.Context, fn func(raftstore.WriteTx) error) (uint64, error) {
	idx, err := s.Store.Update(ctx, fn)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && idx != 0 && !s.lost {
		s.lost = true
		return 0, fmt.Errorf("applying the change: leadership lost while committing: %w", raftstore.ErrNotLeader)
	}
	return idx, err
}

// TestAllocatorEntryOfUnknownFate: an entry whose Update failed may still
// be committed; the addresses it gave must stay held. Before the fix the
// allocator undid them, and once the never-used addresses ran out it
// handed t1's address to another task while t1 held it in the store.
func TestAllocatorEntryOfUnknownFate(t *testing.T) {
	st := newStore(t)
	update(t, st, func(tx raftstore.WriteTx) error {
		if err := tx.Create(net("n1", "10.1.0.0/29")); err != nil { // .2 to .6
			return err
		}
		return tx.Create(task("t1", statePending, "n1"))
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- newAllocator(&lostAckStore{Store: st}, nil).Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "t1 allocated", func() bool { return addrOf(st, "t1") != "" })
	ids := []string{"t2", "t3", "t4", "t5"}
	update(t, st, func(tx raftstore.WriteTx) error {
		for _, id := range ids {
			if err := tx.Create(task(id, statePending, "n1")); err != nil {
				return err
			}
		}
		return nil
	})
	// Four addresses are left besides t1's: t2..t5 take them, t6 none.
	waitFor(t, "t2..t5 allocated", func() bool {
		for _, id := range ids {
			if addrOf(st, id) == "" {
				return false
			}
		}
		return true
	})
	update(t, st, func(tx raftstore.WriteTx) error { return tx.Create(task("t6", statePending, "n1")) })
	waitFor(t, "t6 allocated or refused", func() bool {
		tk, _ := raftstore.Get[*shoalv1.Task](st.View(), "t6")
		return addrOf(st, "t6") != "" || tk.GetStatus().GetMessage() != ""
	})
	seen := map[string]string{}
	for _, id := range append([]string{"t1", "t6"}, ids...) {
		a := addrOf(st, id)
		if a == "" {
			continue
		}
		if o, dup := seen[a]; dup {
			t.Errorf("%s and %s both hold %s", o, id, a)
		}
		seen[a] = id
	}
}
