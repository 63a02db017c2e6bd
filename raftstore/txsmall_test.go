package raftstore

import (
	"fmt"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A tx past smallTx changes looks them up by index: creates, a create
// undone by a delete (the positions after it move), updates and deletes of
// objects written before and after that, all read back through the tx and
// written in first-touch order, as a small tx does.
func TestLargeTxKeepsItsChangesAndOrder(t *testing.T) {
	for _, n := range []int{smallTx - 2, smallTx, smallTx + 1, 3 * smallTx} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := single(t, options{})
			mustUpdate(t, s, func(tx WriteTx) error { return tx.Create(mkNetwork("stored", "stored-net")) })
			var want []string
			mustUpdate(t, s, func(tx WriteTx) error {
				for i := range n {
					if err := tx.Create(mkNetwork(fmt.Sprintf("n%02d", i), fmt.Sprintf("net%02d", i))); err != nil {
						return err
					}
				}
				// Undo the second create: it leaves the entry.
				if err := tx.Delete(KindNetwork, "n01", 0); err != nil {
					return err
				}
				if tx.Get(KindNetwork, "n01") != nil {
					t.Error("a deleted create still reads")
				}
				// Every change after it is still found at its new place.
				for i := 2; i < n; i++ {
					id := fmt.Sprintf("n%02d", i)
					cur, _ := tx.Get(KindNetwork, id).(*shoalv1.Network)
					if cur == nil {
						return fmt.Errorf("%s lost", id)
					}
					u := &shoalv1.Network{Meta: &shoalv1.Meta{Id: id}, Spec: &shoalv1.NetworkSpec{Name: cur.GetSpec().GetName(), Labels: map[string]string{"u": "1"}}}
					if err := tx.Update(u); err != nil {
						return err
					}
				}
				if err := tx.Delete(KindNetwork, "stored", 0); err != nil {
					return err
				}
				if got := len(tx.List(KindNetwork)); got != n-1 {
					t.Errorf("the tx lists %d networks, want %d", got, n-1)
				}
				want = nil
				for i := range n {
					if i != 1 {
						want = append(want, fmt.Sprintf("n%02d", i))
					}
				}
				want = append(want, "stored")
				var got []string
				for _, op := range tx.(*writeTx).ops() {
					got = append(got, Unwrap(op.GetObject()).GetMeta().GetId())
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("ops %v, want %v", got, want)
				}
				return nil
			})
			v := s.View()
			if _, ok := Get[*shoalv1.Network](v, "stored"); ok {
				t.Error("stored network not deleted")
			}
			if _, ok := Get[*shoalv1.Network](v, "n01"); ok {
				t.Error("n01 stored")
			}
			for i := 2; i < n; i++ {
				nw, ok := Get[*shoalv1.Network](v, fmt.Sprintf("n%02d", i))
				if !ok || nw.GetSpec().GetLabels()["u"] != "1" {
					t.Errorf("n%02d = %v", i, nw)
				}
			}
		})
	}
}

// A one-object write's overlay is one slice (its change), its kinds list
// and the op: no map, no separate pending op.
func TestOneObjectTxAllocations(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, func(tx WriteTx) error { return tx.Create(mkNetwork("n1", "net")) })
	base := s.fsm.view()
	cur, _ := Get[*shoalv1.Network](base, "n1")
	u := &shoalv1.Network{Meta: copyMeta(cur.GetMeta()), Spec: cur.GetSpec()}
	allocs := testing.AllocsPerRun(100, func() {
		tx := newWriteTx(base)
		if err := tx.Update(u); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 3 {
		t.Fatalf("a one-object tx allocates %v times, want at most 3", allocs)
	}
}
