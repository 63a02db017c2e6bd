package raftstore

import (
	"context"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Two entries as the release before previous_spec_source encoded them: a
// create of service s1, then an update carrying the replaced spec as
// previous_spec (printed by that release's code).
const (
	oldCreateEntry = "0a610801125d1a5b0a040a02733112510a067376632d733112110a0562656e6368120861616161616161612a1d0a1b0a0b64656d6f3a6c617465737412052f64656d6f12057365727665321508011a057061757365220a73746f702d66697273742001120608a09d90d806"
	oldUpdateEntry = "0aba01080212b3011ab0010a060a027331100112510a067376632d733112110a0562656e6368120862626262626262622a1d0a1b0a0b64656d6f3a6c617465737412052f64656d6f12057365727665321508011a057061757365220a73746f702d66697273741a510a067376632d733112110a0562656e6368120861616161616161612a1d0a1b0a0b64656d6f3a6c617465737412052f64656d6f12057365727665321508011a057061757365220a73746f702d666972737420021801120608a19d90d806"
)

func goldenSpec(v string) *shoalv1.ServiceSpec {
	return &shoalv1.ServiceSpec{
		Name: "svc-s1", Labels: map[string]string{"bench": v},
		Task:   &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest", Command: []string{"/demo", "serve"}}},
		Update: &shoalv1.UpdateConfig{Parallelism: 1, FailureAction: "pause", Order: "stop-first"},
	}
}

func applyBytes(t *testing.T, f *fsm, index uint64, hexData string) {
	t.Helper()
	data, err := hex.DecodeString(hexData)
	if err != nil {
		t.Fatal(err)
	}
	if res := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}); res != nil {
		t.Fatalf("entry %d: %v", index, res)
	}
}

// A log written by the previous release replays to the state it always
// did, and the same update written the new way (previous_spec left out)
// replays to the identical state and watch event.
func TestOldEntriesReplayIdentically(t *testing.T) {
	old := newTestFSM()
	applyBytes(t, old, 1, oldCreateEntry)
	sub, err := old.hub.watch(context.Background(), 0, []Kind{KindService})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	applyBytes(t, old, 2, oldUpdateEntry)
	want := &shoalv1.Service{
		Meta: &shoalv1.Meta{Id: "s1", Version: 2, CreatedAt: timestamppb.New(t0), UpdatedAt: timestamppb.New(t0.Add(time.Second))},
		Spec: goldenSpec("bbbbbbbb"), PreviousSpec: goldenSpec("aaaaaaaa"), SpecVersion: 2,
	}
	if got, _ := Get[*shoalv1.Service](old.view(), "s1"); !proto.Equal(got, want) {
		t.Fatalf("old log replays to\n%v\nwant\n%v", got, want)
	}
	oldEvent := collect(t, sub, 1)[0]

	// The new form of the same update.
	f := newTestFSM()
	applyBytes(t, f, 1, oldCreateEntry)
	sub2, err := f.hub.watch(context.Background(), 0, []Kind{KindService})
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	upd := &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1", Version: 1}, Spec: goldenSpec("bbbbbbbb"), SpecVersion: 2}
	op := opUpdate(upd, 1)
	op.PreviousSpecSource = shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC
	if err := applyDirect(t, f, 2, t0.Add(time.Second), op); err != nil {
		t.Fatal(err)
	}
	if dump(f.view()) != dump(old.view()) {
		t.Fatalf("new form applies to\n%s\nold form to\n%s", dump(f.view()), dump(old.view()))
	}
	if ev := collect(t, sub2, 1)[0]; !proto.Equal(ev, oldEvent) {
		t.Fatalf("new form's event %v, old form's %v", ev, oldEvent)
	}
	// An op that keeps previous_spec in the object encodes as before: the
	// new field is absent, so the previous release reads it too.
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(&shoalv1.StoreAction{
		Time: timestamppb.New(t0.Add(time.Second)),
		Ops: []*shoalv1.StoreOp{opUpdate(&shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1", Version: 1},
			Spec: goldenSpec("bbbbbbbb"), PreviousSpec: goldenSpec("aaaaaaaa"), SpecVersion: 2}, 1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(data) != oldUpdateEntry {
		t.Fatalf("an IN_OBJECT update encodes differently from the previous release")
	}
}

// Update leaves previous_spec out of the entry exactly when it is the
// stored spec the version check pins, and every replica's state is what the
// writer built.
func TestUpdateLeavesStoredPreviousSpecOutOfEntry(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, func(tx WriteTx) error { return tx.Create(benchService("s1", 0)) })
	entry := func(idx uint64) *shoalv1.StoreOp { t.Helper(); return entryOp(t, s, idx) }
	cases := []struct {
		name       string
		build      func(cur *shoalv1.Service) *shoalv1.Service
		wantSource shoalv1.PreviousSpecSource
	}{
		{"the stored spec, version checked", func(cur *shoalv1.Service) *shoalv1.Service {
			return &shoalv1.Service{Meta: proto.Clone(cur.GetMeta()).(*shoalv1.Meta), Spec: benchService("s1", 0).GetPreviousSpec(), PreviousSpec: cur.GetSpec(), SpecVersion: 9}
		}, shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC},
		{"an equal copy of the stored spec", func(cur *shoalv1.Service) *shoalv1.Service {
			return &shoalv1.Service{Meta: proto.Clone(cur.GetMeta()).(*shoalv1.Meta), Spec: benchService("s1", 0).GetSpec(), PreviousSpec: proto.Clone(cur.GetSpec()).(*shoalv1.ServiceSpec)}
		}, shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_IN_OBJECT},
		{"the stored spec without a version check", func(cur *shoalv1.Service) *shoalv1.Service {
			m := proto.Clone(cur.GetMeta()).(*shoalv1.Meta)
			m.Version = 0
			return &shoalv1.Service{Meta: m, Spec: benchService("s1", 0).GetSpec(), PreviousSpec: cur.GetSpec()}
		}, shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_IN_OBJECT},
		{"no previous spec", func(cur *shoalv1.Service) *shoalv1.Service {
			return &shoalv1.Service{Meta: proto.Clone(cur.GetMeta()).(*shoalv1.Meta), Spec: cur.GetSpec()}
		}, shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_IN_OBJECT},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cur, _ := Get[*shoalv1.Service](s.View(), "s1")
			var built *shoalv1.Service
			idx := mustUpdate(t, s, func(tx WriteTx) error {
				built = tc.build(cur)
				return tx.Update(built)
			})
			op := entry(idx)
			if op.GetPreviousSpecSource() != tc.wantSource {
				t.Fatalf("source %v, want %v", op.GetPreviousSpecSource(), tc.wantSource)
			}
			inEntry := op.GetObject().GetService().GetPreviousSpec() != nil
			if inEntry != (tc.wantSource == shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_IN_OBJECT && built.GetPreviousSpec() != nil) {
				t.Fatalf("previous_spec in the entry: %v", inEntry)
			}
			got, _ := Get[*shoalv1.Service](s.View(), "s1")
			if !proto.Equal(got.GetPreviousSpec(), built.GetPreviousSpec()) || !proto.Equal(got.GetSpec(), built.GetSpec()) || got.GetSpecVersion() != built.GetSpecVersion() {
				t.Fatalf("stored %v, built %v", got, built)
			}
			if built.GetMeta().GetVersion() != 0 && built.GetMeta().GetVersion() != cur.GetMeta().GetVersion() {
				t.Fatalf("the writer's object was changed: %v", built.GetMeta())
			}
		})
	}
}

// Followers decode the entry and take previous_spec from their own stored
// object: they end in the leader's state.
func TestFollowersResolveStoredPreviousSpec(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	c.update(createIfMissing(benchService("s1", 0)))
	idx := c.update(func(tx WriteTx) error {
		cur, _ := Get[*shoalv1.Service](tx, "s1")
		if cur.GetSpecVersion() == 4 {
			return nil // a retry after a commit
		}
		return tx.Update(&shoalv1.Service{Meta: proto.Clone(cur.GetMeta()).(*shoalv1.Meta),
			Spec: benchService("s1", 0).GetPreviousSpec(), PreviousSpec: cur.GetSpec(), SpecVersion: 4})
	})
	want := dump(c.leader().store.View())
	got, _ := Get[*shoalv1.Service](c.leader().store.View(), "s1")
	if !proto.Equal(got.GetPreviousSpec(), benchService("s1", 0).GetSpec()) {
		t.Fatalf("leader's previous_spec %v", got.GetPreviousSpec())
	}
	c.converge(want, idx)
}

// STORED_SPEC only makes sense on an update of a stored service; anything
// else fails the entry whole, on every replica alike.
func TestFSMRejectsMisplacedStoredSpec(t *testing.T) {
	f := newTestFSM()
	if err := applyDirect(t, f, 1, t0, opCreate(mkService("s1", "web")), opCreate(mkTask("t1", "s1", "", 0, 0))); err != nil {
		t.Fatal(err)
	}
	before := dump(f.view())
	stored := func(op *shoalv1.StoreOp) *shoalv1.StoreOp {
		op.PreviousSpecSource = shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC
		return op
	}
	for name, op := range map[string]*shoalv1.StoreOp{
		"create":         stored(opCreate(mkService("s2", "api"))),
		"task update":    stored(opUpdate(mkTask("t1", "s1", "", 0, 0), 1)),
		"unknown source": {Kind: shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE, Object: Wrap(mkService("s1", "web")), ExpectedVersion: 1, PreviousSpecSource: 7},
	} {
		err := applyDirect(t, f, 2, t0, opCreate(mkNetwork("n1", "net")), op)
		if err == nil || !strings.Contains(err.Error(), "previous spec") {
			t.Errorf("%s: %v, want a previous spec error", name, err)
		}
		if got := dump(f.view()); got != before {
			t.Errorf("%s: state changed:\n%s", name, got)
		}
	}
}

// serviceWithoutPreviousSpec must carry every other field of Service: this
// fails when a field is added to Service and not to the copy.
func TestServiceWithoutPreviousSpecCopiesEveryField(t *testing.T) {
	s := benchService("s1", 3)
	s.Vips = []*shoalv1.ServiceVIP{{NetworkId: "n1", Address: "10.0.0.2"}}
	s.UpdateStatus = &shoalv1.UpdateStatus{State: 1}
	s.JobStatus = &shoalv1.JobStatus{Iteration: 2}
	s.RebalanceRequested = true
	n := 0
	s.ProtoReflect().Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool { n++; return true })
	if all := s.ProtoReflect().Descriptor().Fields().Len(); n != all {
		t.Fatalf("the test sets %d of Service's %d fields; set the new one", n, all)
	}
	got := serviceWithoutPreviousSpec(s)
	want := proto.Clone(s).(*shoalv1.Service)
	want.PreviousSpec = nil
	if !proto.Equal(got, want) {
		t.Fatalf("copy %v, want %v", got, want)
	}
	if s.GetPreviousSpec() == nil {
		t.Fatal("the source lost its previous_spec")
	}
}
