package raftstore

import (
	"encoding/hex"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A patch op keeps the stored name, so apply does not search the name
// index for it (it could only find the service itself while names are
// unique): on a state where, against the invariant, another service holds
// the same name, the patch applies; an entry whose other op takes the
// patched service's name is still refused, by that op's own check.
func TestPatchOpSkipsOnlyItsOwnNameCheck(t *testing.T) {
	create, err := hex.DecodeString(oldCreateEntry)
	if err != nil {
		t.Fatal(err)
	}
	stored := func() *shoalv1.Service {
		return &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}, Spec: goldenSpec("aaaaaaaa"), SpecVersion: 2}
	}
	name := goldenSpec("aaaaaaaa").GetName()
	patch := &shoalv1.ServicePatch{LabelsAdd: map[string]string{"k": "v"}}
	fresh := func() *fsm {
		f := newFSM(slog.New(slog.DiscardHandler), newHub(1<<10))
		if r := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: create}); r != nil {
			t.Fatalf("create: %v", r)
		}
		return f
	}

	// The invariant broken on purpose: s2 takes s1's name behind apply's back.
	f := fresh()
	txn := f.db.Txn(true)
	twin := mkService("s2", name)
	twin.Meta.Version = 1
	if err := txn.Insert(string(KindService), twin); err != nil {
		t.Fatal(err)
	}
	txn.Commit()
	l, _ := patchEntry(t, 2, patchOp(stored(), 1, proto.Clone(patch).(*shoalv1.ServicePatch)))
	if r := f.Apply(l); r != nil {
		t.Fatalf("the patch searched the name index: %v", r)
	}
	if svc, _ := Get[*shoalv1.Service](f.view(), "s1"); svc.GetSpec().GetLabels()["k"] != "v" {
		t.Fatalf("patch not applied: %v", svc)
	}

	// With names unique, a create in the same entry taking the patched
	// service's name is refused, and nothing of the entry is applied.
	f = fresh()
	act := &shoalv1.StoreAction{Ops: []*shoalv1.StoreOp{
		patchOp(stored(), 1, proto.Clone(patch).(*shoalv1.ServicePatch)),
		{Kind: shoalv1.StoreOpKind_STORE_OP_KIND_CREATE, Object: Wrap(mkService("s3", name))},
	}, Time: timestamppb.New(t0.Add(2 * time.Second))}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(act)
	if err != nil {
		t.Fatal(err)
	}
	r := f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data})
	if err, _ := r.(error); err == nil || !errors.Is(err, ErrExists) {
		t.Fatalf("a create taking the patched service's name: got %v, want name in use", r)
	}
	if svc, _ := Get[*shoalv1.Service](f.view(), "s1"); svc.GetSpec().GetLabels()["k"] != "" {
		t.Fatalf("a refused entry's patch was applied: %v", svc)
	}
}
