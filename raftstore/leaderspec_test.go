package raftstore

import (
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// txPatchEntry builds, over f's state, the entry of a PatchService of s1 and
// the specs its tx built.
func txPatchEntry(t *testing.T, f *fsm, patch *shoalv1.ServicePatch) ([]byte, *shoalv1.StoreAction, *writeTx) {
	t.Helper()
	tx := newWriteTx(f.view())
	cur, _ := Get[*shoalv1.Service](tx, "s1")
	svc := &shoalv1.Service{Meta: copyMeta(cur.GetMeta()), PreviousSpec: cur.GetSpec(), SpecVersion: cur.GetSpecVersion()}
	if err := tx.PatchService(svc, patch); err != nil {
		t.Fatal(err)
	}
	act := &shoalv1.StoreAction{Ops: tx.ops(), Time: timestamppb.New(t0)}
	data, err := proto.Marshal(act)
	if err != nil {
		t.Fatal(err)
	}
	return data, act, tx
}

// The leader stores the spec its tx patched (no PatchSpec at apply), and
// the state equals a follower's that decodes and patches the entry. Specs
// given for another op, or over a spec that is not the stored one, are
// not used.
func TestLeaderStoresTheTxPatchedSpec(t *testing.T) {
	patch := &shoalv1.ServicePatch{LabelsAdd: map[string]string{"bench": "new", "k": "v"}, Replicas: int64p(2)}
	for _, tc := range []struct {
		name  string
		specs func(tx *writeTx) []patchedSpec
		used  bool
	}{
		{"the tx's", func(tx *writeTx) []patchedSpec { return tx.patched }, true},
		{"another op's", func(tx *writeTx) []patchedSpec {
			return []patchedSpec{{op: 1, base: tx.patched[0].base, spec: tx.patched[0].spec}}
		}, false},
		{"over another spec", func(tx *writeTx) []patchedSpec {
			wrong := PatchSpec(tx.patched[0].base, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"wrong": "x"}})
			return []patchedSpec{{op: 0, base: proto.Clone(tx.patched[0].base).(*shoalv1.ServiceSpec), spec: wrong}}
		}, false},
	} {
		leader, follower := newTestFSM(), newTestFSM()
		for _, f := range []*fsm{leader, follower} {
			if err := applyDirect(t, f, 1, t0, opCreate(benchService("s1", 0))); err != nil {
				t.Fatal(err)
			}
		}
		data, act, tx := txPatchEntry(t, leader, patch)
		if len(tx.patched) != 1 || tx.patched[0].op != 0 {
			t.Fatalf("%s: the tx's patched specs %v", tc.name, tx.patched)
		}
		_, release := leader.proposeEntry(data, act, tc.specs(tx))
		res := leader.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data})
		release()
		if res != nil {
			t.Fatalf("%s: %v", tc.name, res)
		}
		if res := follower.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data}); res != nil {
			t.Fatal(res)
		}
		if l, f := dump(leader.view()), dump(follower.view()); l != f {
			t.Fatalf("%s: leader\n%s\nfollower\n%s", tc.name, l, f)
		}
		stored, _ := Get[*shoalv1.Service](leader.view(), "s1")
		if used := stored.GetSpec() == tx.patched[0].spec; used != tc.used {
			t.Errorf("%s: the tx's spec stored: %v, want %v", tc.name, used, tc.used)
		}
		if stored.GetSpec().GetLabels()["k"] != "v" || stored.GetSpec().GetReplicas() != 2 {
			t.Errorf("%s: stored %v", tc.name, stored.GetSpec())
		}
	}
}

// Through the store: the spec a PatchService tx reads is the one stored.
func TestPatchServiceStoresTheTxSpec(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, func(tx WriteTx) error { return tx.Create(benchService("s1", 0)) })
	var read *shoalv1.ServiceSpec
	mustUpdate(t, s, func(tx WriteTx) error {
		cur, _ := Get[*shoalv1.Service](tx, "s1")
		svc := &shoalv1.Service{Meta: copyMeta(cur.GetMeta()), PreviousSpec: cur.GetSpec(), SpecVersion: cur.GetSpecVersion()}
		if err := tx.PatchService(svc, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"bench": "v"}}); err != nil {
			return err
		}
		got, _ := Get[*shoalv1.Service](tx, "s1")
		read = got.GetSpec()
		return nil
	})
	stored, _ := Get[*shoalv1.Service](s.View(), "s1")
	if stored.GetSpec() != read || stored.GetSpec().GetLabels()["bench"] != "v" {
		t.Fatalf("stored %p %v, the tx read %p", stored.GetSpec(), stored.GetSpec(), read)
	}
}
