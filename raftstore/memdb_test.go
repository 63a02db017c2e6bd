package raftstore

import (
	"slices"
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

// TestTaskIndexesAreRead: a task is indexed only where something looks it
// up (by service, by node, by state), since every write of a task
// re-inserts it in each of its indexes. The desired-state index had no
// reader and cost a fifth of the inserts.
func TestTaskIndexesAreRead(t *testing.T) {
	var got []string
	for name := range tableDefs[KindTask].indexes {
		got = append(got, name)
	}
	slices.Sort(got)
	want := []string{indexID, IndexNodeID, IndexServiceID, IndexState}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("task indexes %q, want %q", got, want)
	}
	if ts := newSchema().Tables[string(KindTask)]; len(ts.Indexes) != len(want) {
		t.Errorf("the task table's schema has %d indexes, want %d", len(ts.Indexes), len(want))
	}
}
