package raftstore

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// An update that keeps the name it holds is not checked against the name
// index (no lookup, no slice of the objects found), and every way of taking a name another object holds is still
// refused, inside one transaction too.
func TestUpdateKeepingItsNameSkipsTheIndex(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(mkService("a", "web"), mkService("b", "db")))
	stored := func(id string) *shoalv1.Service {
		svc, _ := Get[*shoalv1.Service](s.View(), id)
		return proto.Clone(svc).(*shoalv1.Service)
	}
	named := func(id, name string) *shoalv1.Service {
		c := stored(id)
		c.Spec.Name = name
		return c
	}

	keep := testingAllocs(func() {
		tx := newWriteTx(s.fsm.view())
		if err := tx.Update(named("a", "web")); err != nil {
			t.Fatal(err)
		}
	})
	rename := testingAllocs(func() {
		tx := newWriteTx(s.fsm.view())
		if err := tx.Update(named("a", "web2")); err != nil {
			t.Fatal(err)
		}
	})
	// A free name is not found in the index (no slice either), so with
	// the index searched the update keeping its name allocates one more.
	if keep > rename {
		t.Errorf("an update keeping its name allocates %v, one taking a free name %v: the name index was searched", keep, rename)
	}

	for _, tc := range []struct {
		name string
		fn   func(tx WriteTx) error
		err  bool
	}{
		{"keep", func(tx WriteTx) error { return tx.Update(named("a", "web")) }, false},
		{"take another's", func(tx WriteTx) error { return tx.Update(named("a", "db")) }, true},
		{"swap through a free name", func(tx WriteTx) error {
			if err := tx.Update(named("a", "tmp")); err != nil {
				return err
			}
			return tx.Update(named("b", "web"))
		}, false},
		{"renamed in the tx, the old name taken, then back", func(tx WriteTx) error {
			if err := tx.Update(named("a", "web2")); err != nil {
				return err
			}
			if err := tx.Create(mkService("c", "web")); err != nil {
				return err
			}
			return tx.Update(named("a", "web"))
		}, true},
		{"a create taking a held name", func(tx WriteTx) error { return tx.Create(mkService("d", "web")) }, true},
	} {
		err := tc.fn(newWriteTx(s.fsm.view()))
		if tc.err && (!errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "already in use")) {
			t.Errorf("%s: err = %v, want name in use", tc.name, err)
		}
		if !tc.err && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func testingAllocs(f func()) float64 { return testing.AllocsPerRun(50, f) }

// A transaction allocates nothing for its overlay until it writes (many
// write nothing: an orchestrator pass with nothing to do), and reads
// through it, before and after a write, see the overlay as before.
func TestWriteTxAllocatesNothingUntilWritten(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(mkService("a", "web"), mkService("b", "db")))
	v := s.fsm.view()
	if n := testing.AllocsPerRun(50, func() {
		tx := newWriteTx(v)
		_ = tx.Get(KindService, "a")
		tx.scan(KindService, IndexName, "web", "", func(Object) bool { return true })
		if len(tx.ops()) != 0 {
			t.Fatal("a tx that wrote nothing has ops")
		}
	}); n > 1 {
		// The tx itself.
		t.Errorf("a tx that writes nothing allocates %v times", n)
	}
	tx := newWriteTx(v)
	if got := tx.List(KindService); len(got) != 2 {
		t.Fatalf("list before a write: %d services", len(got))
	}
	renamed := proto.Clone(tx.Get(KindService, "a")).(*shoalv1.Service)
	renamed.Spec.Name = "web2"
	if err := tx.Update(renamed); err != nil {
		t.Fatal(err)
	}
	if err := tx.Create(mkService("c", "web")); err != nil {
		t.Fatalf("the old name is free inside the tx: %v", err)
	}
	if got := ids(tx.Find(KindService, IndexName, "web")); len(got) != 1 || got[0] != "c" {
		t.Errorf("find web after the rename: %v", got)
	}
	if got := tx.List(KindService); len(got) != 3 || len(tx.touched) != 1 {
		t.Errorf("list after the writes: %d services, kinds touched %v", len(got), tx.touched)
	}
}
