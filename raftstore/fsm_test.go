package raftstore

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func newTestFSM() *fsm { return newFSM(slog.New(slog.DiscardHandler), newHub(0)) }

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func opCreate(o Object) *shoalv1.StoreOp {
	return &shoalv1.StoreOp{Kind: shoalv1.StoreOpKind_STORE_OP_KIND_CREATE, Object: Wrap(o)}
}

func opUpdate(o Object, expected uint64) *shoalv1.StoreOp {
	return &shoalv1.StoreOp{Kind: shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE, Object: Wrap(o), ExpectedVersion: expected}
}

func opDelete(kind Kind, id string, expected uint64) *shoalv1.StoreOp {
	return &shoalv1.StoreOp{Kind: shoalv1.StoreOpKind_STORE_OP_KIND_DELETE, Object: Wrap(newObject(kind, id)), ExpectedVersion: expected}
}

// applyDirect feeds one entry to the FSM as raft would.
func applyDirect(t testing.TB, f *fsm, index uint64, at time.Time, ops ...*shoalv1.StoreOp) error {
	t.Helper()
	data, err := proto.Marshal(&shoalv1.StoreAction{Ops: ops, Time: timestamppb.New(at)})
	if err != nil {
		t.Fatal(err)
	}
	res := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
	if res == nil {
		return nil
	}
	return res.(error)
}

func TestFSMApply(t *testing.T) {
	// Every case starts from: services s1 "web", s2 "db" and task t1, all
	// created by entry 10.
	setup := func(t *testing.T) *fsm {
		f := newTestFSM()
		if err := applyDirect(t, f, 10, t0, opCreate(mkService("s1", "web")), opCreate(mkService("s2", "db")),
			opCreate(mkTask("t1", "s1", "n1", 0, 0))); err != nil {
			t.Fatal(err)
		}
		return f
	}
	renamed := func(id, name string) *shoalv1.Service { return mkService(id, name) }
	tests := []struct {
		name    string
		ops     []*shoalv1.StoreOp
		wantErr error
		wantMsg string
		check   func(t *testing.T, r Reader)
	}{
		{
			name:    "stale version rejects the whole entry",
			ops:     []*shoalv1.StoreOp{opCreate(mkTask("t2", "s1", "", 0, 0)), opUpdate(renamed("s1", "web2"), 9)},
			wantErr: ErrVersionConflict,
			wantMsg: `service "s1": version 9 is stale (current 10): version conflict`,
		},
		{
			name: "matching version applies",
			ops:  []*shoalv1.StoreOp{opUpdate(renamed("s1", "web2"), 10)},
			check: func(t *testing.T, r Reader) {
				s, _ := Get[*shoalv1.Service](r, "s1")
				if s.GetSpec().GetName() != "web2" || s.GetMeta().GetVersion() != 11 {
					t.Fatalf("s1 = %v", s)
				}
				if !s.GetMeta().GetCreatedAt().AsTime().Equal(t0) || !s.GetMeta().GetUpdatedAt().AsTime().Equal(t0.Add(time.Minute)) {
					t.Fatalf("timestamps: %v", s.GetMeta())
				}
			},
		},
		{
			name: "version 0 skips the check",
			ops:  []*shoalv1.StoreOp{opUpdate(renamed("s1", "web2"), 0), opDelete(KindTask, "t1", 0)},
		},
		{
			name:    "create with a taken name",
			ops:     []*shoalv1.StoreOp{opCreate(mkService("s3", "web"))},
			wantErr: ErrExists,
			wantMsg: `service name "web" is already in use`,
		},
		{
			name:    "rename to a taken name",
			ops:     []*shoalv1.StoreOp{opUpdate(renamed("s2", "web"), 10)},
			wantErr: ErrExists,
			wantMsg: `service name "web" is already in use`,
		},
		{
			name: "names swapped within one entry",
			ops:  []*shoalv1.StoreOp{opUpdate(renamed("s1", "db"), 10), opUpdate(renamed("s2", "web"), 10)},
			check: func(t *testing.T, r Reader) {
				if got := ids(Find[*shoalv1.Service](r, IndexName, "web")); len(got) != 1 || got[0] != "s2" {
					t.Fatalf("web = %v", got)
				}
			},
		},
		{
			name:    "create an existing id",
			ops:     []*shoalv1.StoreOp{opCreate(mkTask("t1", "", "", 0, 0))},
			wantErr: ErrExists,
			wantMsg: `task "t1": already exists`,
		},
		{
			name:    "delete a missing object",
			ops:     []*shoalv1.StoreOp{opDelete(KindTask, "t1", 10), opDelete(KindTask, "nope", 0)},
			wantErr: ErrNotFound,
			wantMsg: `task "nope": not found`,
		},
		{
			name:    "update a missing object",
			ops:     []*shoalv1.StoreOp{opUpdate(mkNetwork("n9", "x"), 0)},
			wantErr: ErrNotFound,
		},
		{
			name:    "delete with a stale version",
			ops:     []*shoalv1.StoreOp{opDelete(KindService, "s2", 3)},
			wantErr: ErrVersionConflict,
		},
		{
			name: "several changes in one entry",
			ops: []*shoalv1.StoreOp{
				opCreate(mkTask("t2", "s1", "", 0, 0)), opCreate(mkTask("t3", "s1", "", 0, 0)),
				opDelete(KindTask, "t1", 10), opUpdate(renamed("s2", "db2"), 10),
			},
			check: func(t *testing.T, r Reader) {
				for _, o := range []Object{r.Get(KindTask, "t2"), r.Get(KindTask, "t3"), r.Get(KindService, "s2")} {
					if o.GetMeta().GetVersion() != 11 {
						t.Fatalf("%v: version %d, want 11", o.GetMeta().GetId(), o.GetMeta().GetVersion())
					}
				}
				if r.Get(KindTask, "t1") != nil {
					t.Fatal("t1 not deleted")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t)
			before := dump(f.view())
			err := applyDirect(t, f, 11, t0.Add(time.Minute), tt.ops...)
			if f.appliedIndex() != 11 {
				t.Fatalf("applied index %d, want 11 even for a rejected entry", f.appliedIndex())
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if tt.check != nil {
					tt.check(t, f.view())
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %q, want it to contain %q", err, tt.wantMsg)
			}
			if after := dump(f.view()); after != before {
				t.Fatalf("rejected entry changed the state:\n%s\nwas:\n%s", after, before)
			}
		})
	}
}

func TestFSMRejectsMalformedEntries(t *testing.T) {
	f := newTestFSM()
	if res := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{0xff, 0xff}}); res == nil {
		t.Fatal("garbage applied")
	}
	if err := applyDirect(t, f, 2, t0, &shoalv1.StoreOp{Kind: shoalv1.StoreOpKind_STORE_OP_KIND_CREATE}); err == nil {
		t.Fatal("op without object applied")
	}
	if err := applyDirect(t, f, 3, t0, opCreate(&shoalv1.Task{})); err == nil {
		t.Fatal("object without id applied")
	}
	if err := applyDirect(t, f, 4, t0, &shoalv1.StoreOp{Object: Wrap(mkTask("x", "", "", 0, 0))}); err == nil {
		t.Fatal("op without kind applied")
	}
	if f.appliedIndex() != 4 || len(f.view().List(KindTask)) != 0 {
		t.Fatalf("applied %d, tasks %d", f.appliedIndex(), len(f.view().List(KindTask)))
	}
}

// memSink is an in-memory raft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Close() error  { m.closed = true; return nil }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

func TestSnapshotRoundTrip(t *testing.T) {
	src := newTestFSM()
	var objs []*shoalv1.StoreOp
	objs = append(objs, opCreate(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c"}, Name: "shoal", CaKeyPem: []byte("k")}))
	objs = append(objs, opCreate(mkNode("n1", "", "host1")), opCreate(mkNetwork("net", "backend")), opCreate(mkService("s1", "web")))
	for _, id := range []string{"t1", "t2", "t3"} {
		objs = append(objs, opCreate(mkTask(id, "s1", "n1", shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_RUNNING)))
	}
	if err := applyDirect(t, src, 7, t0, objs...); err != nil {
		t.Fatal(err)
	}
	src.StoreConfiguration(8, raft.Configuration{})

	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Changes after Snapshot() do not leak into the persisted snapshot.
	if err := applyDirect(t, src, 9, t0, opDelete(KindTask, "t1", 0)); err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil || !sink.closed {
		t.Fatalf("persist: %v (closed %v)", err, sink.closed)
	}
	snap.Release()

	dst := newTestFSM()
	if err := applyDirect(t, dst, 1, t0, opCreate(mkService("old", "old"))); err != nil {
		t.Fatal(err)
	}
	sub, err := dst.hub.watch(context.Background(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Restore(readCloser{bytes.NewReader(sink.Bytes())}); err != nil {
		t.Fatal(err)
	}
	if got := dst.appliedIndex(); got != 8 {
		t.Fatalf("restored applied index %d, want 8", got)
	}
	v := dst.view()
	if v.Get(KindTask, "t1") == nil || len(v.List(KindTask)) != 3 {
		t.Fatalf("restored state:\n%s", dump(v))
	}
	srcAt8 := newTestFSM()
	_ = applyDirect(t, srcAt8, 7, t0, objs...)
	if dump(v) != dump(srcAt8.view()) {
		t.Fatalf("restored state differs:\n%s\nwant:\n%s", dump(v), dump(srcAt8.view()))
	}
	if got := Find[*shoalv1.Task](v, IndexNodeID, "n1"); len(got) != 3 {
		t.Fatalf("indexes not rebuilt: %v", ids(got))
	}
	if err := ended(t, sub); !errors.Is(err, ErrRestored) {
		t.Fatalf("subscription ended with %v", err)
	}
	if _, err := dst.hub.watch(context.Background(), 3, nil); !errors.Is(err, ErrCompacted) {
		t.Fatalf("watch from before the snapshot: %v", err)
	}
	if _, err := dst.hub.watch(context.Background(), 9, nil); err != nil {
		t.Fatalf("watch from after the snapshot: %v", err)
	}

	for name, data := range map[string][]byte{
		"empty":     nil,
		"bad magic": append([]byte{5}, "hello"...),
		"truncated": sink.Bytes()[:len(sink.Bytes())-3],
	} {
		if err := newTestFSM().Restore(readCloser{bytes.NewReader(data)}); err == nil {
			t.Errorf("%s snapshot restored", name)
		}
	}
}
