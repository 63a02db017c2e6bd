package raftstore

import (
	"bytes"
	"encoding/hex"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func int64p(v int64) *int64 { return &v }

// patchEntry is the raft entry at index of one op, encoded as the leader
// encodes it.
func patchEntry(t *testing.T, index uint64, op *shoalv1.StoreOp) (*raft.Log, *shoalv1.StoreAction) {
	t.Helper()
	act := &shoalv1.StoreAction{Ops: []*shoalv1.StoreOp{op}, Time: timestamppb.New(t0.Add(time.Duration(index) * time.Second))}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(act)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Type: raft.LogCommand, Data: data}, act
}

// A patch op and the whole update of the same new service (spec =
// the stored spec patched, previous_spec = the stored spec, IN_OBJECT: what
// a manager behind the gate writes) end every replica path in the
// identical state, events and snapshot bytes: entry by entry, one batch,
// the leader applying copies of its proposals. The stored spec the patch
// was applied to is left as it was.
func TestPatchOpAppliesLikeWholeUpdate(t *testing.T) {
	create, err := hex.DecodeString(oldCreateEntry)
	if err != nil {
		t.Fatal(err)
	}
	patches := []*shoalv1.ServicePatch{
		{LabelsAdd: map[string]string{"bench": "bbbbbbbb"}},
		{LabelsAdd: map[string]string{"new": "1", "z": ""}, Replicas: int64p(6)},
		{LabelsRm: []string{"bench", "absent"}},
		{Replicas: int64p(0)},
	}
	stored := func() *shoalv1.Service {
		return &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}, Spec: goldenSpec("aaaaaaaa"), SpecVersion: 2,
			UpdateStatus: &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_COMPLETED}}
	}
	type replica struct{ state, events string }
	for _, patch := range patches {
		// The new version as a writer builds it: everything but the specs
		// is its own (here spec_version 2 and an update status).
		patched := PatchSpec(goldenSpec("aaaaaaaa"), patch)
		whole := stored()
		whole.Spec, whole.PreviousSpec = patched, goldenSpec("aaaaaaaa")
		forms := map[string]*shoalv1.StoreOp{
			"whole": opUpdate(whole, 1),
			"patch": patchOp(stored(), 1, proto.Clone(patch).(*shoalv1.ServicePatch)),
		}
		var want *replica
		var wantSnap []byte
		for form, op := range forms {
			l, act := patchEntry(t, 2, op)
			logs := []*raft.Log{{Index: 1, Type: raft.LogCommand, Data: create}, l}
			newF := func() *fsm { return newFSM(slog.New(slog.DiscardHandler), newHub(1<<10)) }
			oneByOne, batch, leader := newF(), newF(), newF()
			for _, r := range applyOneByOne(oneByOne, logs) {
				if r != nil {
					t.Fatalf("%v %s: entry by entry: %v", patch, form, r)
				}
			}
			for _, r := range batch.ApplyBatch(logs) {
				if r != nil {
					t.Fatalf("%v %s: batch: %v", patch, form, r)
				}
			}
			_, release := leader.propose(l.Data, act)
			for _, r := range leader.ApplyBatch(logs) {
				if r != nil {
					t.Fatalf("%v %s: leader: %v", patch, form, r)
				}
			}
			release()
			for rname, f := range map[string]*fsm{"entry by entry": oneByOne, "batch": batch, "leader": leader} {
				got := &replica{stateOf(t, f), eventsOf(t, f)}
				snap := persisted(t, f)
				svc, _ := Get[*shoalv1.Service](f.view(), "s1")
				if !proto.Equal(svc.GetSpec(), patched) || !proto.Equal(svc.GetPreviousSpec(), goldenSpec("aaaaaaaa")) || svc.GetMeta().GetVersion() != 2 {
					t.Fatalf("%v %s, %s: stored %v", patch, form, rname, svc)
				}
				if want == nil {
					want, wantSnap = got, snap
					continue
				}
				if got.state != want.state {
					t.Errorf("%v %s, %s: state\n%s\nwant\n%s", patch, form, rname, got.state, want.state)
				}
				if got.events != want.events {
					t.Errorf("%v %s, %s: events\n%s\nwant\n%s", patch, form, rname, got.events, want.events)
				}
				if !bytes.Equal(snap, wantSnap) {
					t.Errorf("%v %s, %s: the snapshot's bytes differ", patch, form, rname)
				}
			}
		}
	}
}

// PatchSpec shares what it does not change and never writes into the
// spec it patches.
func TestPatchSpecLeavesTheStoredSpec(t *testing.T) {
	spec := goldenSpec("aaaaaaaa")
	spec.Replicas = 2
	before := proto.Clone(spec)
	got := PatchSpec(spec, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"k": "v"}, LabelsRm: []string{"bench"}, Replicas: int64p(5)})
	if !proto.Equal(spec, before) {
		t.Fatalf("the stored spec changed: %v", spec)
	}
	if got.GetReplicas() != 5 || len(got.GetLabels()) != 1 || got.GetLabels()["k"] != "v" || got.Task != spec.Task || got.Update != spec.Update {
		t.Fatalf("patched %v", got)
	}
	if same := PatchSpec(spec, &shoalv1.ServicePatch{Replicas: int64p(3)}); same.GetReplicas() != 3 || !proto.Equal(&shoalv1.ServiceSpec{Labels: same.Labels}, &shoalv1.ServiceSpec{Labels: spec.Labels}) {
		t.Fatalf("a replicas patch changed the labels: %v", same)
	}
}

// copySpec must carry every field of ServiceSpec: this fails when a field
// is added to ServiceSpec and not to the copy.
func TestCopySpecCopiesEveryField(t *testing.T) {
	s := goldenSpec("x")
	s.Mode, s.Replicas, s.AutoRebalance = shoalv1.ServiceMode_SERVICE_MODE_GLOBAL, 3, true
	s.Rollback = &shoalv1.UpdateConfig{Parallelism: 2}
	s.Endpoint = &shoalv1.EndpointSpec{Mode: "vip"}
	s.Job = &shoalv1.JobConfig{Completions: 1}
	n := 0
	s.ProtoReflect().Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool { n++; return true })
	if all := s.ProtoReflect().Descriptor().Fields().Len(); n != all {
		t.Fatalf("the test sets %d of ServiceSpec's %d fields; set the new one", n, all)
	}
	if got := copySpec(s); !proto.Equal(got, s) {
		t.Fatalf("copy %v, want %v", got, s)
	}
}

// The patch op's bytes, pinned: what a manager of this release writes for
// a label patch of the golden service. A change to them is a change of
// the log format.
func TestPatchOpGoldenBytes(t *testing.T) {
	const want = "0a360802120e1a0c0a040a027331200232020803180120022a1e0a140a0562656e6368120b6262626262626262626262120466726f6d1802120608a19d90d806"
	op := patchOp(&shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1", Version: 1, CreatedAt: timestamppb.New(t0)}, Spec: goldenSpec("a"), PreviousSpec: goldenSpec("b"), SpecVersion: 2,
		UpdateStatus: &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_COMPLETED}},
		1, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"bench": "bbbbbbbbbbb"}, LabelsRm: []string{"from"}, Replicas: int64p(2)})
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(&shoalv1.StoreAction{Time: timestamppb.New(t0.Add(time.Second)), Ops: []*shoalv1.StoreOp{op}})
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(data); got != want {
		t.Errorf("the patch op encodes to\n%s\nwant\n%s", got, want)
	}
	f := newTestFSM()
	applyBytes(t, f, 1, oldCreateEntry)
	applyBytes(t, f, 2, want)
	svc, _ := Get[*shoalv1.Service](f.view(), "s1")
	wantSpec := goldenSpec("bbbbbbbbbbb")
	wantSpec.Replicas = 2
	if !proto.Equal(svc.GetSpec(), wantSpec) || !proto.Equal(svc.GetPreviousSpec(), goldenSpec("aaaaaaaa")) || svc.GetSpecVersion() != 2 {
		t.Fatalf("the golden patch applies to %v", svc)
	}
}

// A patch op only makes sense as a versioned update of a stored service
// carrying a patch and no spec; anything else fails the entry whole, on
// every replica alike, naming the entry.
func TestFSMRejectsMalformedPatch(t *testing.T) {
	f := newTestFSM()
	if err := applyDirect(t, f, 1, t0, opCreate(mkService("s1", "web")), opCreate(mkTask("t1", "s1", "", 0, 0))); err != nil {
		t.Fatal(err)
	}
	before := dump(f.view())
	patch := func() *shoalv1.ServicePatch { return &shoalv1.ServicePatch{Replicas: int64p(3)} }
	patched := func(op *shoalv1.StoreOp) *shoalv1.StoreOp {
		op.PreviousSpecSource = shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC_PATCHED
		op.Patch = patch()
		return op
	}
	bare := func() *shoalv1.Service { return &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}} }
	for name, tc := range map[string]struct {
		op   *shoalv1.StoreOp
		want string
	}{
		"create":                 {patched(opCreate(&shoalv1.Service{Meta: &shoalv1.Meta{Id: "s2"}})), "not an update of a stored service"},
		"task update":            {patched(opUpdate(mkTask("t1", "s1", "", 0, 0), 1)), "not an update of a stored service"},
		"no stored service":      {patched(opUpdate(&shoalv1.Service{Meta: &shoalv1.Meta{Id: "s9"}}, 1)), "not found"},
		"no version":             {patched(opUpdate(bare(), 0)), "without the version"},
		"no patch":               {func() *shoalv1.StoreOp { op := patched(opUpdate(bare(), 1)); op.Patch = nil; return op }(), "without a patch"},
		"carrying a spec":        {patched(opUpdate(mkService("s1", "web"), 1)), "carrying a spec"},
		"patch with STORED_SPEC": {func() *shoalv1.StoreOp { op := patched(opUpdate(bare(), 1)); op.PreviousSpecSource = 1; return op }(), "a patch with previous spec source"},
		"patch with IN_OBJECT":   {func() *shoalv1.StoreOp { op := opUpdate(mkService("s1", "web"), 1); op.Patch = patch(); return op }(), "a patch with previous spec source"},
		"unknown source":         {func() *shoalv1.StoreOp { op := patched(opUpdate(bare(), 1)); op.PreviousSpecSource = 7; return op }(), "previous spec source"},
	} {
		err := applyDirect(t, f, 2, t0, opCreate(mkNetwork("n1", "net")), tc.op)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
		if err != nil && tc.want != "not found" && !strings.Contains(err.Error(), "raft entry 2: op 1") {
			t.Errorf("%s: %v does not name the entry and op", name, err)
		}
		if got := dump(f.view()); got != before {
			t.Errorf("%s: state changed:\n%s", name, got)
		}
	}
}

// WriteTx.PatchService: the entry carries the patch while every manager
// reads it and the whole update (spec and previous_spec in the object)
// while one does not; the tx's reads and the stored service are the same
// either way.
func TestPatchServiceEntryFollowsTheGate(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, func(tx WriteTx) error {
		if err := tx.Create(gateNode("m1", roleManager, roleManager, StoreFormat-1)); err != nil {
			return err
		}
		return tx.Create(benchService("s1", 0))
	})
	patchOnce := func(v string) (uint64, *shoalv1.ServiceSpec) {
		t.Helper()
		var seen *shoalv1.ServiceSpec
		idx := mustUpdate(t, s, func(tx WriteTx) error {
			cur, _ := Get[*shoalv1.Service](tx, "s1")
			svc := &shoalv1.Service{Meta: copyMeta(cur.GetMeta()), PreviousSpec: cur.GetSpec(), SpecVersion: cur.GetSpecVersion()}
			if err := tx.PatchService(svc, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"bench": v}}); err != nil {
				return err
			}
			read, _ := Get[*shoalv1.Service](tx, "s1")
			seen = read.GetSpec()
			return nil
		})
		if seen.GetLabels()["bench"] != v {
			t.Fatalf("the tx reads %v", seen)
		}
		got, _ := Get[*shoalv1.Service](s.View(), "s1")
		if got.GetSpec().GetLabels()["bench"] != v || got.GetSpec().GetTask() == nil || !proto.Equal(got.GetSpec(), seen) {
			t.Fatalf("stored %v", got.GetSpec())
		}
		return idx, got.GetSpec()
	}
	idx, _ := patchOnce("old-manager")
	op := entryOp(t, s, idx)
	if op.GetPreviousSpecSource() != shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_IN_OBJECT || op.GetPatch() != nil ||
		op.GetObject().GetService().GetSpec() == nil || op.GetObject().GetService().GetPreviousSpec() == nil {
		t.Fatalf("with an old manager the entry is %v", op)
	}
	mustUpdate(t, s, func(tx WriteTx) error {
		n, _ := Get[*shoalv1.Node](tx, "m1")
		n = proto.Clone(n).(*shoalv1.Node)
		n.Description.StoreFormat = StoreFormat
		return tx.Update(n)
	})
	before, _ := Get[*shoalv1.Service](s.View(), "s1")
	idx, _ = patchOnce("all-new")
	op = entryOp(t, s, idx)
	if op.GetPreviousSpecSource() != shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC_PATCHED || op.GetPatch() == nil ||
		op.GetObject().GetService().GetSpec() != nil || op.GetObject().GetService().GetPreviousSpec() != nil {
		t.Fatalf("with every manager new the entry is %v", op)
	}
	if got, _ := Get[*shoalv1.Service](s.View(), "s1"); got.GetPreviousSpec() != before.GetSpec() || before.GetSpec().GetLabels()["bench"] != "old-manager" {
		t.Fatalf("previous_spec %v is not the stored spec", got.GetPreviousSpec())
	}
}

// A patch of a service the tx already wrote goes out whole, and the
// writer's mistakes are refused in the tx.
func TestPatchServiceInTx(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, func(tx WriteTx) error { return tx.Create(benchService("s1", 0)) })
	idx := mustUpdate(t, s, func(tx WriteTx) error {
		cur, _ := Get[*shoalv1.Service](tx, "s1")
		upd := proto.Clone(cur).(*shoalv1.Service)
		upd.SpecVersion = 7
		if err := tx.Update(upd); err != nil {
			return err
		}
		pending, _ := Get[*shoalv1.Service](tx, "s1")
		return tx.PatchService(&shoalv1.Service{Meta: copyMeta(pending.GetMeta()), PreviousSpec: pending.GetSpec(), SpecVersion: 8},
			&shoalv1.ServicePatch{Replicas: int64p(4)})
	})
	if op := entryOp(t, s, idx); op.GetPatch() != nil || op.GetObject().GetService().GetSpec().GetReplicas() != 4 {
		t.Fatalf("entry %v", op)
	}
	if got, _ := Get[*shoalv1.Service](s.View(), "s1"); got.GetSpecVersion() != 8 || got.GetSpec().GetReplicas() != 4 {
		t.Fatalf("stored %v", got)
	}
	cur, _ := Get[*shoalv1.Service](s.View(), "s1")
	for name, tc := range map[string]struct {
		svc  *shoalv1.Service
		want string
	}{
		"no version":         {&shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}, PreviousSpec: cur.GetSpec()}, "needs the version"},
		"stale version":      {&shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1", Version: 1}, PreviousSpec: cur.GetSpec()}, "version conflict"},
		"not stored":         {&shoalv1.Service{Meta: &shoalv1.Meta{Id: "s9", Version: 1}}, "not found"},
		"a copy of the spec": {&shoalv1.Service{Meta: copyMeta(cur.GetMeta()), PreviousSpec: proto.Clone(cur.GetSpec()).(*shoalv1.ServiceSpec)}, "must be the stored spec"},
		"the stored object":  {cur, "stored object itself"},
	} {
		_, err := s.Update(t.Context(), func(tx WriteTx) error { return tx.PatchService(tc.svc, &shoalv1.ServicePatch{Replicas: int64p(1)}) })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

// Followers decode the patch and build the spec from their own stored
// service: every replica ends in the leader's state.
func TestFollowersApplyPatch(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	c.update(createIfMissing(benchService("s1", 0)))
	idx := c.update(func(tx WriteTx) error {
		cur, _ := Get[*shoalv1.Service](tx, "s1")
		if cur.GetSpec().GetReplicas() == 7 {
			return nil // a retry after a commit
		}
		return tx.PatchService(&shoalv1.Service{Meta: copyMeta(cur.GetMeta()), PreviousSpec: cur.GetSpec(), SpecVersion: cur.GetSpecVersion()},
			&shoalv1.ServicePatch{LabelsAdd: map[string]string{"k": "v"}, Replicas: int64p(7)})
	})
	want := dump(c.leader().store.View())
	got, _ := Get[*shoalv1.Service](c.leader().store.View(), "s1")
	if got.GetSpec().GetReplicas() != 7 || got.GetSpec().GetLabels()["k"] != "v" || !proto.Equal(got.GetPreviousSpec(), benchService("s1", 0).GetSpec()) {
		t.Fatalf("leader's service %v", got)
	}
	c.converge(want, idx)
}
