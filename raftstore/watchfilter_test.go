package raftstore

import (
	"context"
	"fmt"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestWatchFiltered: a filtered subscriber gets exactly the events its
// filter keeps, in order, and one that keeps none of a burst many rings
// long is not cut off by it even though it reads nothing meanwhile (its
// cursor moves over what it does not want); a plain subscriber that reads
// nothing is.
func TestWatchFiltered(t *testing.T) {
	const ring = 256
	s := single(t, options{watchRing: ring})
	onNode := func(node string) func(*shoalv1.WatchEvent) bool {
		return func(ev *shoalv1.WatchEvent) bool { return ev.GetObject().GetTask().GetNodeId() == node }
	}
	n1, err := s.WatchFiltered(context.Background(), 0, onNode("n1"), KindTask)
	if err != nil {
		t.Fatal(err)
	}
	defer n1.Close()
	idle, err := s.WatchFiltered(context.Background(), 0, onNode("n9"), KindTask)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	plain, err := s.Watch(context.Background(), 0, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()

	var want []string
	var got []*shoalv1.WatchEvent
	for e := 0; e < 20; e++ {
		mustUpdate(t, s, func(tx WriteTx) error {
			for i := 0; i < ring; i++ {
				node := "n2"
				if i%64 == 0 {
					node = "n1"
				}
				id := fmt.Sprintf("t%02d-%03d", e, i)
				if node == "n1" {
					want = append(want, id)
				}
				if err := tx.Create(mkTask(id, "s", node, 0, 0)); err != nil {
					return err
				}
			}
			return nil
		})
		// n1 reads as it goes; idle and plain read nothing.
		got = append(got, collect(t, n1, ring/64)...)
	}
	if len(got) != len(want) {
		t.Fatalf("n1 got %d events, want %d", len(got), len(want))
	}
	for i, ev := range got {
		if id := ev.GetObject().GetTask().GetMeta().GetId(); id != want[i] || ev.GetObject().GetTask().GetNodeId() != "n1" {
			t.Fatalf("event %d: %s, want task %s of n1", i, eventKey(ev), want[i])
		}
	}
	// The last entry: one n9 task, which idle gets after the whole burst.
	mustUpdate(t, s, createIfMissing(mkTask("t-n9", "s", "n9", 0, 0)))
	if evs := collect(t, idle, 1); evs[0].GetObject().GetTask().GetMeta().GetId() != "t-n9" || idle.Err() != nil {
		t.Fatalf("idle subscriber got %s (err %v), want t-n9", eventKey(evs[0]), idle.Err())
	}
	for range plain.C() {
	}
	if plain.Err() == nil {
		t.Fatal("the plain subscriber that read nothing of 20 rings was not cut off")
	}
}
