package raftstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// benchService is a service as the bench updates it: a spec with a 100-byte
// label, and the previous spec kept beside it.
func benchService(id string, version uint64) *shoalv1.Service {
	spec := func(v string) *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{
			Name: "svc-" + id, Labels: map[string]string{"bench": v}, Replicas: 0,
			Task:   &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest", Command: []string{"/demo", "serve"}}},
			Update: &shoalv1.UpdateConfig{Parallelism: 1, FailureAction: "pause", Order: "stop-first"},
		}
	}
	return &shoalv1.Service{
		Meta: &shoalv1.Meta{Id: id, Version: version}, Spec: spec(strings.Repeat("a", 100)),
		PreviousSpec: spec(strings.Repeat("b", 100)), SpecVersion: 3,
	}
}

func proposeAndApply(t testing.TB, f *fsm, index uint64, data []byte, act *shoalv1.StoreAction) error {
	t.Helper()
	_, release := f.propose(data, act)
	defer release()
	res := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
	if res == nil {
		return nil
	}
	return res.(error)
}

// The leader applies the action it proposed without decoding the entry:
// bytes that do not decode apply while registered, and fail once released.
func TestFSMAppliesProposalWithoutDecoding(t *testing.T) {
	f := newTestFSM()
	garbage := []byte{0xff, 0xff, 0xff, 0xff}
	if proto.Unmarshal(garbage, &shoalv1.StoreAction{}) == nil {
		t.Fatal("the test's bytes decode; pick others")
	}
	act := &shoalv1.StoreAction{Ops: []*shoalv1.StoreOp{opCreate(mkService("s1", "web"))}, Time: timestamppb.New(t0)}
	if err := proposeAndApply(t, f, 5, garbage, act); err != nil {
		t.Fatalf("applying a registered proposal: %v", err)
	}
	if s, ok := Get[*shoalv1.Service](f.view(), "s1"); !ok || s.GetMeta().GetVersion() != 5 {
		t.Fatalf("s1 = %v, want version 5", s)
	}
	// Released: the same bytes are decoded, as on a follower, and fail.
	res := f.Apply(&raft.Log{Index: 6, Type: raft.LogCommand, Data: garbage})
	if err, _ := res.(error); err == nil || !strings.Contains(err.Error(), "decoding") {
		t.Fatalf("after release: %v, want a decoding error", res)
	}
	n := 0
	f.proposed.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d proposals left registered", n)
	}
}

// The caller's objects are copied, never aliased into the store: the FSM
// stamps the stored copy's meta, and a later change to the caller's object
// changes nothing stored.
func TestFSMProposalCopiesCallerObjects(t *testing.T) {
	f := newTestFSM()
	svc := benchService("s1", 0)
	act := &shoalv1.StoreAction{Ops: []*shoalv1.StoreOp{opCreate(svc)}, Time: timestamppb.New(t0)}
	data, err := proto.Marshal(act)
	if err != nil {
		t.Fatal(err)
	}
	if err := proposeAndApply(t, f, 7, data, act); err != nil {
		t.Fatal(err)
	}
	stored, ok := Get[*shoalv1.Service](f.view(), "s1")
	if !ok {
		t.Fatal("s1 not stored")
	}
	if stored == svc || stored.Meta == svc.Meta || stored.Spec == svc.Spec || stored.PreviousSpec == svc.PreviousSpec ||
		stored.Spec.Task == svc.Spec.Task {
		t.Fatal("the caller's object (or a part of it) is aliased into the store")
	}
	if svc.GetMeta().GetVersion() != 0 || svc.GetMeta().GetCreatedAt() != nil {
		t.Fatalf("the FSM stamped the caller's meta: %v", svc.GetMeta())
	}
	svc.Spec.Labels["bench"] = "changed"
	svc.Spec.Task.Container.Image = "changed"
	if got, _ := Get[*shoalv1.Service](f.view(), "s1"); got.GetSpec().GetLabels()["bench"] == "changed" ||
		got.GetSpec().GetTask().GetContainer().GetImage() == "changed" {
		t.Fatal("changing the caller's object changed the stored one")
	}
}

// Applying the proposal and decoding the entry end in the same state and
// the same events, verdicts included, so leader and followers agree.
func TestFSMProposalEqualsDecoding(t *testing.T) {
	entries := [][]*shoalv1.StoreOp{
		{opCreate(benchService("s1", 0)), opCreate(mkService("s2", "db")), opCreate(mkTask("t1", "s1", "n1", 0, 0))},
		{opUpdate(benchService("s1", 1), 1)},
		{opUpdate(benchService("s1", 1), 1)}, // stale: rejected by both
		{opCreate(mkNetwork("net1", "front")), opDelete(KindTask, "t1", 0)},
		{opCreate(mkService("s3", "db"))}, // name in use: rejected by both
		{opUpdate(mkService("s2", "db2"), 0), opCreate(mkService("s3", "db"))},
	}
	viaProposal, viaDecode := newTestFSM(), newTestFSM()
	subP, err := viaProposal.hub.watch(context.Background(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	subD, err := viaDecode.hub.watch(context.Background(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var nEvents int
	for i, ops := range entries {
		index := uint64(i + 1)
		act := &shoalv1.StoreAction{Ops: ops, Time: timestamppb.New(t0)}
		data, err := proto.Marshal(act)
		if err != nil {
			t.Fatal(err)
		}
		errP := proposeAndApply(t, viaProposal, index, data, act)
		errD := viaDecode.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
		if errD == nil && errP != nil || errD != nil && (errP == nil || errP.Error() != errD.(error).Error()) {
			t.Fatalf("entry %d: proposal %v, decoding %v", index, errP, errD)
		}
		if errP == nil {
			nEvents += len(ops)
		}
	}
	if p, d := dump(viaProposal.view()), dump(viaDecode.view()); p != d {
		t.Fatalf("states differ:\nproposal:\n%s\ndecoding:\n%s", p, d)
	}
	evP, evD := collect(t, subP, nEvents), collect(t, subD, nEvents)
	for i := range evP {
		if !proto.Equal(evP[i], evD[i]) {
			t.Fatalf("event %d: proposal %v, decoding %v", i, evP[i], evD[i])
		}
	}
}

// A caller that shares parts of the stored object in the object it
// proposes (the old spec as previous_spec; even the stored meta) changes
// nothing stored: the replaced version keeps its meta, the new one gets
// its own.
func TestFSMProposalLeavesStoredPartsAlone(t *testing.T) {
	f := newTestFSM()
	if err := applyDirect(t, f, 1, t0, opCreate(benchService("s1", 0))); err != nil {
		t.Fatal(err)
	}
	cur, _ := Get[*shoalv1.Service](f.view(), "s1")
	next := benchService("s1", 0)
	next.PreviousSpec = cur.Spec
	next.Meta = cur.Meta
	act := &shoalv1.StoreAction{Ops: []*shoalv1.StoreOp{opUpdate(next, 1)}, Time: timestamppb.New(t0.Add(time.Second))}
	data, err := proto.Marshal(act)
	if err != nil {
		t.Fatal(err)
	}
	if err := proposeAndApply(t, f, 2, data, act); err != nil {
		t.Fatal(err)
	}
	got, _ := Get[*shoalv1.Service](f.view(), "s1")
	if cur.GetMeta().GetVersion() != 1 || !cur.GetMeta().GetUpdatedAt().AsTime().Equal(t0) {
		t.Errorf("the replaced version's meta was stamped: %v", cur.GetMeta())
	}
	if got.GetMeta().GetVersion() != 2 || got.Meta == cur.Meta || !proto.Equal(got.PreviousSpec, cur.Spec) {
		t.Errorf("stored %v", got)
	}
}

// Through the whole store: the object given to Create is not the stored
// one, and nothing stays registered after Update returns.
func TestUpdateDoesNotAliasOrLeakProposals(t *testing.T) {
	s := single(t, options{})
	svc := benchService("s1", 0)
	idx := mustUpdate(t, s, func(tx WriteTx) error { return tx.Create(svc) })
	stored, ok := Get[*shoalv1.Service](s.View(), "s1")
	if !ok || stored.GetMeta().GetVersion() != idx {
		t.Fatalf("s1 = %v, want version %d", stored, idx)
	}
	if stored == svc || stored.Spec == svc.Spec || svc.GetMeta().GetVersion() != 0 {
		t.Fatal("the caller's object is aliased into the store")
	}
	n := 0
	s.fsm.proposed.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d proposals left registered", n)
	}
}

// BenchmarkApplyEntry: turning one UpdateService-like entry into the action
// the FSM applies, by decoding it (a follower) or copying the proposal (the
// leader), with the previous spec in the entry (full, as before
// previous_spec_source) or left out (stored: taken from the stored object).
func BenchmarkApplyEntry(b *testing.B) {
	svc := benchService("s1", 1)
	stored := opUpdate(serviceWithoutPreviousSpec(svc), 1)
	stored.PreviousSpecSource = shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC
	for _, form := range []struct {
		name string
		op   *shoalv1.StoreOp
	}{{"full", opUpdate(svc, 1)}, {"stored", stored},
		{"patch", patchOp(svc, 1, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"bench": strings.Repeat("c", 100)}})}} {
		act := &shoalv1.StoreAction{Ops: []*shoalv1.StoreOp{form.op}, Time: timestamppb.New(t0)}
		data, err := proto.Marshal(act)
		if err != nil {
			b.Fatal(err)
		}
		for _, mode := range []string{"decode", "proposal"} {
			b.Run(form.name+"/"+mode, func(b *testing.B) {
				f := newTestFSM()
				if mode == "proposal" {
					_, release := f.propose(data, act)
					defer release()
				}
				b.ReportAllocs()
				b.SetBytes(int64(len(data)))
				for i := 0; i < b.N; i++ {
					if _, err := f.decode(data); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
