package raftstore

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A compact service update carries its meta's id alone: the writer's
// version and timestamps, which every replica's apply overwrites, stay out
// of the entry, and the stored service and its event are what the whole
// meta gave (created_at from the stored object, updated_at the entry's
// time, version the entry's index). The caller's meta is untouched.
func TestStoredSpecUpdateCarriesOnlyTheMetaID(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, func(tx WriteTx) error { return tx.Create(benchService("s1", 0)) })
	cur, _ := Get[*shoalv1.Service](s.View(), "s1")
	upd := benchService("s1", cur.GetMeta().GetVersion())
	upd.Meta = &shoalv1.Meta{Id: "s1", Version: cur.GetMeta().GetVersion(),
		CreatedAt: timestamppb.New(t0), UpdatedAt: timestamppb.New(t0.Add(time.Hour))}
	upd.PreviousSpec = cur.GetSpec()
	callerMeta := proto.Clone(upd.GetMeta())
	idx := mustUpdate(t, s, func(tx WriteTx) error { return tx.Update(upd) })
	op := entryOp(t, s, idx)
	if op.GetPreviousSpecSource() != shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC {
		t.Fatalf("not the compact form: %v", op)
	}
	if m := op.GetObject().GetService().GetMeta(); !proto.Equal(m, &shoalv1.Meta{Id: "s1"}) {
		t.Errorf("the entry's meta is %v, want the id alone", m)
	}
	if op.GetExpectedVersion() != cur.GetMeta().GetVersion() {
		t.Errorf("expected version %d, want %d", op.GetExpectedVersion(), cur.GetMeta().GetVersion())
	}
	if !proto.Equal(upd.GetMeta(), callerMeta) {
		t.Errorf("the caller's meta changed: %v, was %v", upd.GetMeta(), callerMeta)
	}
	got, _ := Get[*shoalv1.Service](s.View(), "s1")
	m := got.GetMeta()
	if m.GetId() != "s1" || m.GetVersion() != idx || !proto.Equal(m.GetCreatedAt(), cur.GetMeta().GetCreatedAt()) ||
		m.GetUpdatedAt() == nil || m.GetUpdatedAt().AsTime().Before(cur.GetMeta().GetUpdatedAt().AsTime()) {
		t.Errorf("stored meta %v after an update of %v at index %d", m, cur.GetMeta(), idx)
	}
	if !proto.Equal(got.GetPreviousSpec(), cur.GetSpec()) || !proto.Equal(got.GetSpec(), upd.GetSpec()) {
		t.Error("stored specs are not the update's")
	}
}

// The same compact update applies to the same state and event whether
// its object carries the whole meta (as written before) or the id alone
// (entryMeta): apply stamps every other field of Meta.
func TestEntryMetaIsOnlyWhatApplyDoesNotStamp(t *testing.T) {
	stamped := map[protoreflect.Name]bool{"version": true, "created_at": true, "updated_at": true}
	fields := (&shoalv1.Meta{}).ProtoReflect().Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		if n := fields.Get(i).Name(); n != "id" && !stamped[n] {
			t.Fatalf("Meta has field %q, which apply does not stamp: entryMeta must keep it (and this list learn it)", n)
		}
	}
	run := func(meta *shoalv1.Meta) (string, *shoalv1.WatchEvent) {
		f := newTestFSM()
		applyBytes(t, f, 1, oldCreateEntry)
		sub, err := f.hub.watch(context.Background(), 0, []Kind{KindService})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		op := opUpdate(&shoalv1.Service{Meta: meta, Spec: goldenSpec("bbbbbbbb"), SpecVersion: 2}, 1)
		op.PreviousSpecSource = shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC
		if err := applyDirect(t, f, 2, t0.Add(time.Second), op); err != nil {
			t.Fatal(err)
		}
		return dump(f.view()), collect(t, sub, 1)[0]
	}
	whole := &shoalv1.Meta{Id: "s1", Version: 1, CreatedAt: timestamppb.New(t0.Add(-time.Hour)), UpdatedAt: timestamppb.New(t0.Add(time.Hour))}
	wantState, wantEvent := run(whole)
	gotState, gotEvent := run(entryMeta(whole))
	if gotState != wantState {
		t.Errorf("id-only meta applies to\n%s\nthe whole meta to\n%s", gotState, wantState)
	}
	if !proto.Equal(gotEvent, wantEvent) {
		t.Errorf("id-only meta's event %v, the whole meta's %v", gotEvent, wantEvent)
	}
}

// BenchmarkCompactUpdateMeta: a follower's decode and the leader's copy of
// the bench's compact service update, its meta as the handler writes it
// (id, version, both timestamps: copyMeta of the stored one) against the
// id alone (entryMeta).
func BenchmarkCompactUpdateMeta(b *testing.B) {
	for _, form := range []string{"whole", "id"} {
		svc := serviceWithoutPreviousSpec(benchService("s1", 7))
		svc.Meta = &shoalv1.Meta{Id: "s1", Version: 7, CreatedAt: timestamppb.New(t0), UpdatedAt: timestamppb.New(t0.Add(time.Second))}
		if form == "id" {
			svc.Meta = entryMeta(svc.Meta)
		}
		op := opUpdate(svc, 7)
		op.PreviousSpecSource = shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC
		act := &shoalv1.StoreAction{Ops: []*shoalv1.StoreOp{op}, Time: timestamppb.New(t0)}
		data, err := proto.Marshal(act)
		if err != nil {
			b.Fatal(err)
		}
		for _, mode := range []string{"decode", "proposal"} {
			b.Run(form+"/"+mode, func(b *testing.B) {
				f := newTestFSM()
				if mode == "proposal" {
					_, release := f.propose(data, act)
					defer release()
				}
				b.ReportAllocs()
				b.ReportMetric(float64(len(data)), "entry-bytes")
				for i := 0; i < b.N; i++ {
					if _, err := f.decode(data); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
