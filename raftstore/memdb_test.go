package raftstore

import (
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestMemDBTracksNoMutations: writes do not close memdb watch channels
// (the store does not use them, and tracking them made big entries walk
// whole indexes; see newMemDB).
func TestMemDBTracksNoMutations(t *testing.T) {
	db := newMemDB()
	it, err := db.Txn(false).Get(string(KindTask), indexID)
	if err != nil {
		t.Fatal(err)
	}
	ch := it.WatchCh()
	txn := db.Txn(true)
	if err := txn.Insert(string(KindTask), &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}}); err != nil {
		t.Fatal(err)
	}
	txn.Commit()
	select {
	case <-ch:
		t.Fatal("a write closed a memdb watch channel: mutations are tracked")
	default:
	}
	if got, err := db.Txn(false).First(string(KindTask), indexID, "t1"); err != nil || got == nil {
		t.Fatalf("the write is not visible: %v, %v", got, err)
	}
}
