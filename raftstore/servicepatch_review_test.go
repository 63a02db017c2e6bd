package raftstore

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Patch entries that depend on earlier entries applied in the same
// ApplyBatch transaction (a patch of the version an earlier patch wrote;
// a patch of a version an earlier entry replaced; a whole update over a
// patched spec) end every replica path alike: entry by entry, one batch,
// the leader applying copies of its proposals, and a replica restored
// from a snapshot taken after the first patch that replays the rest. The
// stale patch fails on each with the same error.
func TestPatchEntriesDependingOnEarlierEntriesOfTheBatch(t *testing.T) {
	create, err := hex.DecodeString(oldCreateEntry)
	if err != nil {
		t.Fatal(err)
	}
	bare := func() *shoalv1.Service {
		return &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}, SpecVersion: 2,
			UpdateStatus: &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_COMPLETED}}
	}
	whole := bare()
	whole.Spec, whole.PreviousSpec = goldenSpec("whole"), goldenSpec("x")
	ops := []*shoalv1.StoreOp{
		patchOp(bare(), 1, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"k": "1"}}),           // 2: over the create
		patchOp(bare(), 2, &shoalv1.ServicePatch{LabelsRm: []string{"bench"}, Replicas: int64p(4)}), // 3: over entry 2
		patchOp(bare(), 1, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"stale": "1"}}),       // 4: version 1 is gone
		opUpdate(whole, 3), // 5: whole, over the patched spec
		patchOp(bare(), 5, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"k": "2"}, Replicas: int64p(0)}), // 6
	}
	logs := []*raft.Log{{Index: 1, Type: raft.LogCommand, Data: create}}
	var acts []*shoalv1.StoreAction
	for i, op := range ops {
		l, act := patchEntry(t, uint64(i+2), op)
		logs = append(logs, l)
		acts = append(acts, act)
	}
	newF := func() *fsm { return newFSM(slog.New(slog.DiscardHandler), newHub(1<<10)) }
	type run struct {
		state, events string
		results       []string
		snap          []byte
	}
	render := func(f *fsm, res []any) run {
		r := run{state: stateOf(t, f), snap: persisted(t, f)}
		for _, x := range res {
			r.results = append(r.results, fmt.Sprint(x))
		}
		return r
	}
	runs := map[string]run{}
	oneByOne := newF()
	runs["entry by entry"] = render(oneByOne, applyOneByOne(oneByOne, logs))
	runs["entry by entry"] = run{runs["entry by entry"].state, eventsOf(t, oneByOne), runs["entry by entry"].results, runs["entry by entry"].snap}
	batch := newF()
	r := render(batch, batch.ApplyBatch(logs))
	r.events = eventsOf(t, batch)
	runs["batch"] = r
	leader := newF()
	for i, act := range acts {
		_, release := leader.propose(logs[i+1].Data, act)
		defer release()
	}
	r = render(leader, leader.ApplyBatch(logs))
	r.events = eventsOf(t, leader)
	runs["leader"] = r

	// A replica restored from a snapshot taken after entry 2.
	first := newF()
	first.ApplyBatch(logs[:2])
	restored := newF()
	if err := restored.Restore(readCloser{bytes.NewReader(persisted(t, first))}); err != nil {
		t.Fatal(err)
	}
	res := append([]any{nil, nil}, restored.ApplyBatch(logs[2:])...)
	runs["snapshot + log"] = render(restored, res)

	want := runs["entry by entry"]
	// After entry 3: both patches applied, each to the spec the one
	// before it stored.
	mid := newF()
	mid.ApplyBatch(logs[:3])
	midSvc, _ := Get[*shoalv1.Service](mid.view(), "s1")
	midSpec := goldenSpec("aaaaaaaa")
	delete(midSpec.Labels, "bench")
	midSpec.Labels["k"], midSpec.Replicas = "1", 4
	midPrev := goldenSpec("aaaaaaaa")
	midPrev.Labels["k"] = "1"
	if !proto.Equal(midSvc.GetSpec(), midSpec) || !proto.Equal(midSvc.GetPreviousSpec(), midPrev) {
		t.Fatalf("after entry 3: %v", midSvc)
	}
	if want.results[3] == "<nil>" || want.results[1] != "<nil>" || want.results[2] != "<nil>" || want.results[4] != "<nil>" || want.results[5] != "<nil>" {
		t.Fatalf("results %q: want only entry 4 (the stale patch) refused", want.results)
	}
	svc, _ := Get[*shoalv1.Service](oneByOne.view(), "s1")
	wantSpec := goldenSpec("whole")
	wantSpec.Labels["k"], wantSpec.Replicas = "2", 0
	wantPrev := goldenSpec("whole")
	if !proto.Equal(svc.GetSpec(), wantSpec) || !proto.Equal(svc.GetPreviousSpec(), wantPrev) || svc.GetMeta().GetVersion() != 6 {
		t.Fatalf("stored %v", svc)
	}
	for name, got := range runs {
		if got.state != want.state {
			t.Errorf("%s: state\n%s\nwant\n%s", name, got.state, want.state)
		}
		if fmt.Sprint(got.results) != fmt.Sprint(want.results) {
			t.Errorf("%s: results %q, want %q", name, got.results, want.results)
		}
		if !bytes.Equal(got.snap, want.snap) {
			t.Errorf("%s: the snapshot's bytes differ", name)
		}
		if got.events != "" && got.events != want.events {
			t.Errorf("%s: events\n%s\nwant\n%s", name, got.events, want.events)
		}
	}
}

// A patch followed in the same tx by an update or a delete of the service
// goes out as that update (whole, or with the stored previous_spec left
// out) or delete, guarded by the version the patch read; a delete and a
// create of the service after a patch is the create's object.
func TestPatchThenAnotherWriteInOneTx(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, func(tx WriteTx) error { return tx.Create(benchService("s1", 0)) })
	patch := func(tx WriteTx) (*shoalv1.Service, error) {
		cur, _ := Get[*shoalv1.Service](tx, "s1")
		svc := &shoalv1.Service{Meta: copyMeta(cur.GetMeta()), PreviousSpec: cur.GetSpec(), SpecVersion: cur.GetSpecVersion()}
		return svc, tx.PatchService(svc, &shoalv1.ServicePatch{Replicas: int64p(9), LabelsAdd: map[string]string{"p": "1"}})
	}
	// Patch, then update: the update's object is what is stored.
	created, _ := Get[*shoalv1.Service](s.View(), "s1")
	idx := mustUpdate(t, s, func(tx WriteTx) error {
		svc, err := patch(tx)
		if err != nil {
			return err
		}
		upd := proto.Clone(svc).(*shoalv1.Service)
		upd.PreviousSpec = svc.GetPreviousSpec() // the stored spec
		upd.Spec.Replicas = 2
		return tx.Update(upd)
	})
	op := entryOp(t, s, idx)
	if op.GetPatch() != nil || op.GetPreviousSpecSource() == shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC_PATCHED || op.GetExpectedVersion() != created.GetMeta().GetVersion() {
		t.Fatalf("patch then update: entry %v", op)
	}
	got, _ := Get[*shoalv1.Service](s.View(), "s1")
	if got.GetSpec().GetReplicas() != 2 || got.GetSpec().GetLabels()["p"] != "1" || !proto.Equal(got.GetPreviousSpec(), benchService("s1", 0).GetSpec()) {
		t.Fatalf("patch then update: stored %v", got)
	}
	// Patch, then delete.
	v := got.GetMeta().GetVersion()
	idx = mustUpdate(t, s, func(tx WriteTx) error {
		if _, err := patch(tx); err != nil {
			return err
		}
		return tx.Delete(KindService, "s1", v)
	})
	if op := entryOp(t, s, idx); op.GetKind() != shoalv1.StoreOpKind_STORE_OP_KIND_DELETE || op.GetPatch() != nil || op.GetExpectedVersion() != v {
		t.Fatalf("patch then delete: entry %v", op)
	}
	if got, ok := Get[*shoalv1.Service](s.View(), "s1"); ok {
		t.Fatalf("patch then delete: stored %v", got)
	}
	// Patch, delete, create again: the create's object, as an update.
	mustUpdate(t, s, func(tx WriteTx) error { return tx.Create(benchService("s1", 0)) })
	idx = mustUpdate(t, s, func(tx WriteTx) error {
		if _, err := patch(tx); err != nil {
			return err
		}
		cur, _ := Get[*shoalv1.Service](tx, "s1")
		if err := tx.Delete(KindService, "s1", cur.GetMeta().GetVersion()); err != nil {
			return err
		}
		return tx.Create(benchService("s1", 0))
	})
	if op := entryOp(t, s, idx); op.GetKind() != shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE || op.GetPatch() != nil {
		t.Fatalf("patch, delete, create: entry %v", op)
	}
	if got, _ := Get[*shoalv1.Service](s.View(), "s1"); got.GetSpec().GetReplicas() != 0 || got.GetSpec().GetLabels()["p"] != "" {
		t.Fatalf("patch, delete, create: stored %v", got)
	}
}

// A stored spec may carry fields this release does not know (written by
// a newer manager during a rolling upgrade, kept as unknown fields as
// every whole update keeps them). Every replica applies a patch op with
// its own PatchSpec, so one that dropped them would store a spec without
// them where a newer replica, knowing the field, keeps it: the patched
// spec keeps them, and the patch op ends in the state, events and
// snapshot bytes the whole update of the same spec leaves.
func TestPatchKeepsUnknownFieldsOfTheStoredSpec(t *testing.T) {
	// Field 999, varint 7: what a newer release's ServiceSpec might hold.
	unknown := protowire.AppendVarint(protowire.AppendTag(nil, 999, protowire.VarintType), 7)
	withUnknown := func(s *shoalv1.ServiceSpec) *shoalv1.ServiceSpec {
		s.ProtoReflect().SetUnknown(unknown)
		return s
	}
	stored := func() *shoalv1.Service {
		return &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}, Spec: withUnknown(goldenSpec("aaaaaaaa")), SpecVersion: 2}
	}
	createOp := &shoalv1.StoreOp{Kind: shoalv1.StoreOpKind_STORE_OP_KIND_CREATE, Object: Wrap(stored())}
	create, _ := patchEntry(t, 1, createOp)
	patch := &shoalv1.ServicePatch{LabelsAdd: map[string]string{"k": "v"}, Replicas: int64p(3)}
	patched := PatchSpec(withUnknown(goldenSpec("aaaaaaaa")), patch)
	if !bytes.Equal(patched.ProtoReflect().GetUnknown(), unknown) {
		t.Fatalf("PatchSpec dropped the stored spec's unknown fields")
	}
	wantSpec := withUnknown(goldenSpec("aaaaaaaa"))
	wantSpec.Labels["k"], wantSpec.Replicas = "v", 3
	whole := &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}, Spec: wantSpec, PreviousSpec: withUnknown(goldenSpec("aaaaaaaa")), SpecVersion: 2}
	var want string
	var wantSnap []byte
	for _, form := range []struct {
		name string
		op   *shoalv1.StoreOp
	}{{"whole", opUpdate(whole, 1)}, {"patch", patchOp(&shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}, SpecVersion: 2}, 1, patch)}} {
		l, act := patchEntry(t, 2, form.op)
		for _, leader := range []bool{false, true} {
			f := newFSM(slog.New(slog.DiscardHandler), newHub(1<<10))
			if leader {
				_, release := f.propose(l.Data, act)
				defer release()
			}
			for _, r := range f.ApplyBatch([]*raft.Log{create, l}) {
				if r != nil {
					t.Fatalf("%s: %v", form.name, r)
				}
			}
			svc, _ := Get[*shoalv1.Service](f.view(), "s1")
			if !proto.Equal(svc.GetSpec(), wantSpec) {
				t.Errorf("%s (leader %v): stored spec %v, unknown %x; want unknown %x", form.name, leader, svc.GetSpec(), svc.GetSpec().ProtoReflect().GetUnknown(), unknown)
			}
			got := stateOf(t, f) + eventsOf(t, f)
			snap := persisted(t, f)
			if want == "" {
				want, wantSnap = got, snap
				continue
			}
			if got != want {
				t.Errorf("%s (leader %v): state and events\n%s\nwant\n%s", form.name, leader, got, want)
			}
			if !bytes.Equal(snap, wantSnap) {
				t.Errorf("%s (leader %v): the snapshot's bytes differ", form.name, leader)
			}
		}
	}
}
