package raftstore

import (
	"bytes"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// compactUpdateEntry is a compact service update of s1 (expected version
// expected, STORED_SPEC) whose object carries meta, as the raft entry at
// index.
func compactUpdateEntry(t *testing.T, index, expected uint64, meta *shoalv1.Meta, spec *shoalv1.ServiceSpec, specVersion uint64) (*raft.Log, *shoalv1.StoreAction) {
	t.Helper()
	op := opUpdate(&shoalv1.Service{Meta: meta, Spec: spec, SpecVersion: specVersion}, expected)
	op.PreviousSpecSource = shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC
	act := &shoalv1.StoreAction{Ops: []*shoalv1.StoreOp{op}, Time: timestamppb.New(t0.Add(time.Duration(index) * time.Second))}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(act)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Type: raft.LogCommand, Data: data}, act
}

// A log of compact service updates whose objects carry the id alone (as
// written since entryMeta) and the same log as the previous release wrote
// it (the whole meta the handler copied from the stored service, or a
// writer's stale or wrong one) end every replica in the identical state:
// a follower applying entry by entry, a follower applying the log as one
// batch, the leader applying the copies of its own proposals; the same
// events; snapshots of byte-identical content that restore to that state.
// The previous release's apply is this one's (raftstore/fsm.go and
// batch.go are unchanged by the change, and every release since the first
// stamps version, created_at and updated_at on an update and checks the
// op's expected_version, never the object's).
func TestIDOnlyCompactUpdatesReplayLikeWholeMeta(t *testing.T) {
	create, err := hex.DecodeString(oldCreateEntry)
	if err != nil {
		t.Fatal(err)
	}
	created := timestamppb.New(t0)
	metas := map[string]func(index, version uint64) *shoalv1.Meta{
		"id only (entryMeta)": func(_, version uint64) *shoalv1.Meta {
			return entryMeta(&shoalv1.Meta{Id: "s1", Version: version, CreatedAt: created})
		},
		"whole, as the handler copies it": func(index, version uint64) *shoalv1.Meta {
			return &shoalv1.Meta{Id: "s1", Version: version, CreatedAt: created, UpdatedAt: timestamppb.New(t0.Add(time.Duration(index-1) * time.Second))}
		},
		"whole, wrong values": func(uint64, uint64) *shoalv1.Meta {
			return &shoalv1.Meta{Id: "s1", Version: 99, CreatedAt: timestamppb.New(t0.Add(-time.Hour)), UpdatedAt: timestamppb.New(t0.Add(time.Hour))}
		},
	}
	type replica struct{ state, events string }
	var want *replica
	var wantSnap []byte
	for name, meta := range metas {
		logs := []*raft.Log{{Index: 1, Type: raft.LogCommand, Data: create}}
		var acts []*shoalv1.StoreAction
		for i, v := range []string{"bbbbbbbb", "cccccccc", "cccccccc"} {
			index := uint64(i + 2)
			l, act := compactUpdateEntry(t, index, index-1, meta(index, index-1), goldenSpec(v), uint64(i+2))
			logs, acts = append(logs, l), append(acts, act)
		}
		newF := func() *fsm { return newFSM(slog.New(slog.DiscardHandler), newHub(1<<10)) }
		oneByOne, batch, leader := newF(), newF(), newF()
		for _, r := range applyOneByOne(oneByOne, logs) {
			if r != nil {
				t.Fatalf("%s: entry by entry: %v", name, r)
			}
		}
		for _, r := range batch.ApplyBatch(logs) {
			if r != nil {
				t.Fatalf("%s: batch: %v", name, r)
			}
		}
		for i, act := range acts {
			_, release := leader.propose(logs[i+1].Data, act)
			defer release()
		}
		for _, r := range leader.ApplyBatch(logs) {
			if r != nil {
				t.Fatalf("%s: leader: %v", name, r)
			}
		}
		for rname, f := range map[string]*fsm{"entry by entry": oneByOne, "batch": batch, "leader": leader} {
			got := &replica{stateOf(t, f), eventsOf(t, f)}
			snap := persisted(t, f)
			if want == nil {
				want, wantSnap = got, snap
				svc, _ := Get[*shoalv1.Service](f.view(), "s1")
				m := svc.GetMeta()
				if m.GetVersion() != 4 || !proto.Equal(m.GetCreatedAt(), created) || !proto.Equal(m.GetUpdatedAt(), timestamppb.New(t0.Add(4*time.Second))) ||
					!proto.Equal(svc.GetPreviousSpec(), goldenSpec("cccccccc")) || svc.GetSpecVersion() != 4 {
					t.Fatalf("%s, %s: stored %v", name, rname, svc)
				}
				continue
			}
			if got.state != want.state {
				t.Errorf("%s, %s: state\n%s\nwant\n%s", name, rname, got.state, want.state)
			}
			if got.events != want.events {
				t.Errorf("%s, %s: events\n%s\nwant\n%s", name, rname, got.events, want.events)
			}
			if !bytes.Equal(snap, wantSnap) {
				t.Errorf("%s, %s: the snapshot's bytes differ", name, rname)
			}
		}
	}
	restored := newTestFSM()
	if err := restored.Restore(readCloser{bytes.NewReader(wantSnap)}); err != nil {
		t.Fatal(err)
	}
	if got := stateOf(t, restored); got != want.state {
		t.Errorf("restored state\n%s\nwant\n%s", got, want.state)
	}
}

// The id-only compact update's bytes, pinned: what a manager of this
// release writes for the golden update (the old entries' test data) and
// what managers of the previous release, which read STORED_SPEC, apply.
// A change to them is a change of the log format.
func TestIDOnlyCompactUpdateGoldenBytes(t *testing.T) {
	const want = "0a650802125d1a5b0a040a02733112510a067376632d733112110a0562656e6368120862626262626262622a1d0a1b0a0b64656d6f3a6c617465737412052f64656d6f12057365727665321508011a057061757365220a73746f702d6669727374200218012001120608a19d90d806"
	stored := &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1", Version: 1, CreatedAt: timestamppb.New(t0), UpdatedAt: timestamppb.New(t0)}, Spec: goldenSpec("aaaaaaaa"), SpecVersion: 1}
	upd := &shoalv1.Service{Meta: proto.Clone(stored.GetMeta()).(*shoalv1.Meta), Spec: goldenSpec("bbbbbbbb"), PreviousSpec: stored.GetSpec(), SpecVersion: 2}
	obj, src := elidePreviousSpec(upd, 1, stored)
	if src != shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC {
		t.Fatal("not the compact form")
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(&shoalv1.StoreAction{
		Time: timestamppb.New(t0.Add(time.Second)),
		Ops:  []*shoalv1.StoreOp{{Kind: shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE, Object: Wrap(obj), ExpectedVersion: 1, PreviousSpecSource: src}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(data); got != want {
		t.Errorf("the compact update encodes to\n%s\nwant\n%s", got, want)
	}
	f := newTestFSM()
	applyBytes(t, f, 1, oldCreateEntry)
	applyBytes(t, f, 2, want)
	old := newTestFSM()
	applyBytes(t, old, 1, oldCreateEntry)
	applyBytes(t, old, 2, oldUpdateEntry)
	if dump(f.view()) != dump(old.view()) {
		t.Errorf("the id-only entry applies to\n%s\nthe previous release's update entry to\n%s", dump(f.view()), dump(old.view()))
	}
}
