package raftstore

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// The name-index skip of an update keeping its name trusts that the
// object it replaces holds that name. An object the tx holds pending and
// the caller changed in place (cur and o the same pointer) holds o's new
// name already, which proves nothing: such an update is searched as
// before and refused in the tx when another object holds the name, not
// only later by the FSM after a raft round trip.
func TestUpdateOfAPendingObjectChangedInPlaceIsChecked(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(mkService("a", "web"), mkService("b", "db")))
	for _, tc := range []struct {
		name  string
		first func(tx WriteTx) (*shoalv1.Service, error)
	}{
		{"created in the tx", func(tx WriteTx) (*shoalv1.Service, error) {
			c := mkService("c", "free")
			return c, tx.Create(c)
		}},
		{"updated in the tx", func(tx WriteTx) (*shoalv1.Service, error) {
			a := proto.Clone(tx.Get(KindService, "a")).(*shoalv1.Service)
			return a, tx.Update(a)
		}},
	} {
		tx := newWriteTx(s.fsm.view())
		o, err := tc.first(tx)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tx.Get(KindService, o.GetMeta().GetId()) != o {
			t.Fatalf("%s: the tx does not hold the object given", tc.name)
		}
		o.Spec.Name = "db" // b's name, changed in the pending object itself
		err = tx.Update(o)
		if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "already in use") {
			t.Errorf("%s: update taking b's name in place: err = %v, want name in use", tc.name, err)
		}
	}
}

// Names stay unique through every order of writes one transaction can
// make before an update that keeps its name (the case the skip serves):
// delete then create of the same name, a rename away and back, a create
// of a name another op of the tx freed; and the entry each writes applies
// on the FSM with the names the tx saw.
func TestUpdateKeepingItsNameAfterOtherWritesInTheTx(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(mkService("a", "web"), mkService("b", "db")))
	named := func(tx WriteTx, id, name string) *shoalv1.Service {
		c := proto.Clone(tx.Get(KindService, id)).(*shoalv1.Service)
		c.Spec.Name = name
		return c
	}
	for _, tc := range []struct {
		name    string
		fn      func(tx WriteTx) error
		wantErr bool
		want    map[string]string // id → name after the entry applies
	}{
		{"delete a, create c as web, update c keeping web", func(tx WriteTx) error {
			if err := tx.Delete(KindService, "a", 0); err != nil {
				return err
			}
			if err := tx.Create(mkService("c", "web")); err != nil {
				return err
			}
			return tx.Update(named(tx, "c", "web"))
		}, false, map[string]string{"b": "db", "c": "web"}},
		{"delete a, create a again as web, update it keeping web", func(tx WriteTx) error {
			if err := tx.Delete(KindService, "a", 0); err != nil {
				return err
			}
			if err := tx.Create(mkService("a", "web")); err != nil {
				return err
			}
			return tx.Update(named(tx, "a", "web"))
		}, false, map[string]string{"a": "web", "b": "db"}},
		{"b renamed away, a takes db, a updated keeping db", func(tx WriteTx) error {
			if err := tx.Update(named(tx, "b", "db2")); err != nil {
				return err
			}
			if err := tx.Update(named(tx, "a", "db")); err != nil {
				return err
			}
			return tx.Update(named(tx, "a", "db"))
		}, false, map[string]string{"a": "db", "b": "db2"}},
		{"a renamed away, c takes web, b renamed to web", func(tx WriteTx) error {
			if err := tx.Update(named(tx, "a", "web2")); err != nil {
				return err
			}
			if err := tx.Create(mkService("c", "web")); err != nil {
				return err
			}
			return tx.Update(named(tx, "b", "web"))
		}, true, nil},
	} {
		before := dump(s.fsm.view())
		_, err := s.Update(context.Background(), tc.fn)
		if tc.wantErr {
			if !errors.Is(err, ErrExists) {
				t.Errorf("%s: err = %v, want name in use", tc.name, err)
			}
			if after := dump(s.fsm.view()); after != before {
				t.Errorf("%s: a refused tx changed the store", tc.name)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for _, o := range s.View().List(KindService) {
			if n, _ := nameOf(o); tc.want[o.GetMeta().GetId()] != n {
				t.Errorf("%s: %s is named %q, want %q", tc.name, o.GetMeta().GetId(), n, tc.want[o.GetMeta().GetId()])
			}
		}
		if got := len(s.View().List(KindService)); got != len(tc.want) {
			t.Errorf("%s: %d services, want %d", tc.name, got, len(tc.want))
		}
		// Back to a and b as they were, for the next case.
		mustUpdate(t, s, func(tx WriteTx) error {
			for _, o := range tx.List(KindService) {
				if err := tx.Delete(KindService, o.GetMeta().GetId(), 0); err != nil {
					return err
				}
			}
			if err := tx.Create(mkService("a", "web")); err != nil {
				return err
			}
			return tx.Create(mkService("b", "db"))
		})
	}
}
