package raftstore

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/hashicorp/go-hclog"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestUpdate(t *testing.T) {
	s := single(t, options{})
	base := mustUpdate(t, s, createIfMissing(mkService("s1", "web"), mkService("s2", "db"),
		mkTask("t1", "s1", "n1", 0, 0)))
	tests := []struct {
		name      string
		fn        func(t *testing.T, tx WriteTx) error
		wantErr   error
		wantMsg   string
		wantEntry bool // a raft entry is proposed (and applied or rejected)
		check     func(t *testing.T, r Reader, idx uint64)
	}{
		{
			name: "stale version is caught before raft",
			fn: func(t *testing.T, tx WriteTx) error {
				svc := proto.Clone(tx.Get(KindService, "s1")).(*shoalv1.Service)
				svc.Meta.Version--
				return tx.Update(svc)
			},
			wantErr: ErrVersionConflict,
		},
		{
			name: "conflict found at apply time rejects the whole entry",
			fn: func(t *testing.T, tx WriteTx) error {
				read := proto.Clone(tx.Get(KindService, "s1")).(*shoalv1.Service)
				// Someone else changes s1 after we read it.
				mustUpdate(t, s, func(tx2 WriteTx) error {
					o := proto.Clone(tx2.Get(KindService, "s1")).(*shoalv1.Service)
					o.Spec.Replicas = 7
					return tx2.Update(o)
				})
				if err := tx.Create(mkTask("t-new", "s1", "", 0, 0)); err != nil {
					return err
				}
				read.Spec.Replicas = 2
				return tx.Update(read)
			},
			wantErr:   ErrVersionConflict,
			wantMsg:   `service "s1": version`,
			wantEntry: true,
			check: func(t *testing.T, r Reader, _ uint64) {
				if r.Get(KindTask, "t-new") != nil {
					t.Fatal("part of a rejected entry was applied")
				}
				if s, _ := Get[*shoalv1.Service](r, "s1"); s.GetSpec().GetReplicas() != 7 {
					t.Fatalf("s1 replicas %d", s.GetSpec().GetReplicas())
				}
			},
		},
		{
			name:    "duplicate service name",
			fn:      func(t *testing.T, tx WriteTx) error { return tx.Create(mkService("", "web")) },
			wantErr: ErrExists,
			wantMsg: `service name "web" is already in use: already exists`,
		},
		{
			name:    "delete of a missing object",
			fn:      func(t *testing.T, tx WriteTx) error { return tx.Delete(KindTask, "nope", 0) },
			wantErr: ErrNotFound,
			wantMsg: `task "nope": not found`,
		},
		{
			name: "an error from fn proposes nothing",
			fn: func(t *testing.T, tx WriteTx) error {
				if err := tx.Create(mkTask("t-x", "", "", 0, 0)); err != nil {
					return err
				}
				return errors.New("changed my mind")
			},
			wantMsg: "changed my mind",
			check: func(t *testing.T, r Reader, _ uint64) {
				if r.Get(KindTask, "t-x") != nil {
					t.Fatal("created anyway")
				}
			},
		},
		{
			name: "no changes, no entry",
			fn: func(t *testing.T, tx WriteTx) error {
				if err := tx.Create(mkTask("t-y", "", "", 0, 0)); err != nil {
					return err
				}
				return tx.Delete(KindTask, "t-y", 0)
			},
			check: func(t *testing.T, r Reader, idx uint64) {
				if idx != 0 {
					t.Fatalf("index %d for an empty change", idx)
				}
			},
		},
		{
			name: "changing a stored object in place is refused",
			fn: func(t *testing.T, tx WriteTx) error {
				return tx.Update(tx.Get(KindService, "s2"))
			},
			wantMsg: "Clone before changing",
		},
		{
			name: "several changes are one atomic entry",
			fn: func(t *testing.T, tx WriteTx) error {
				if err := tx.Create(mkTask("t2", "s1", "", 0, 0)); err != nil {
					return err
				}
				net := mkNetwork("", "backend")
				if err := tx.Create(net); err != nil {
					return err
				}
				if len(net.Meta.Id) != 25 {
					t.Errorf("assigned id %q", net.Meta.Id)
				}
				svc := proto.Clone(tx.Get(KindService, "s2")).(*shoalv1.Service)
				svc.Spec.Name = "web" // taken by s1 ... which is renamed below
				s1 := proto.Clone(tx.Get(KindService, "s1")).(*shoalv1.Service)
				s1.Spec.Name = "web-old"
				if err := tx.Update(s1); err != nil {
					return err
				}
				if err := tx.Update(svc); err != nil {
					return err
				}
				return tx.Delete(KindTask, "t1", tx.Get(KindTask, "t1").GetMeta().GetVersion())
			},
			wantEntry: true,
			check: func(t *testing.T, r Reader, idx uint64) {
				for _, o := range append(r.List(KindNetwork), r.Get(KindTask, "t2"), r.Get(KindService, "s1"), r.Get(KindService, "s2")) {
					if o.GetMeta().GetVersion() != idx {
						t.Errorf("%s version %d, want %d", o.GetMeta().GetId(), o.GetMeta().GetVersion(), idx)
					}
				}
				if r.Get(KindTask, "t1") != nil {
					t.Error("t1 not deleted")
				}
				if got := ids(Find[*shoalv1.Service](r, IndexName, "web")); len(got) != 1 || got[0] != "s2" {
					t.Errorf("web is %v", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.AppliedIndex()
			idx, err := s.Update(context.Background(), func(tx WriteTx) error { return tt.fn(t, tx) })
			switch {
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			case tt.wantErr == nil && tt.wantMsg == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tt.wantMsg != "" && (err == nil || !strings.Contains(err.Error(), tt.wantMsg)):
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantMsg)
			}
			if tt.wantErr != nil && !tt.wantEntry {
				// The nested update of other cases aside, a failed early
				// check must not reach raft.
				if s.AppliedIndex() != before {
					t.Fatalf("applied index moved %d -> %d", before, s.AppliedIndex())
				}
			}
			if tt.check != nil {
				tt.check(t, s.View(), idx)
			}
		})
	}
	if s.AppliedIndex() <= base {
		t.Fatal("no entries applied")
	}
}

func TestWriteTxSeesItsOwnWrites(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(mkTask("a", "s1", "n1", 0, 0), mkTask("b", "s1", "n1", 0, 0), mkTask("c", "s1", "", 0, 0)))
	mustUpdate(t, s, func(tx WriteTx) error {
		if err := tx.Create(mkTask("d", "s1", "n1", 0, 0)); err != nil {
			return err
		}
		moved := proto.Clone(tx.Get(KindTask, "a")).(*shoalv1.Task)
		moved.NodeId = "n2"
		if err := tx.Update(moved); err != nil {
			return err
		}
		if err := tx.Delete(KindTask, "b", 0); err != nil {
			return err
		}
		checks := []struct {
			what string
			got  []string
			want string
		}{
			{"list", ids(List[*shoalv1.Task](tx)), "a c d"},
			{"find n1", ids(Find[*shoalv1.Task](tx, IndexNodeID, "n1")), "d"},
			{"find n2", ids(Find[*shoalv1.Task](tx, IndexNodeID, "n2")), "a"},
			{"find unassigned", ids(Find[*shoalv1.Task](tx, IndexNodeID, "")), ""}, // not in the node index
			{"find service", ids(Find[*shoalv1.Task](tx, IndexServiceID, "s1")), "a c d"},
		}
		for _, c := range checks {
			if got := strings.Join(c.got, " "); got != c.want {
				t.Errorf("%s: %q, want %q", c.what, got, c.want)
			}
		}
		if tx.Get(KindTask, "b") != nil || tx.Get(KindTask, "d") == nil {
			t.Error("Get does not see the tx's writes")
		}
		// The view below the tx is untouched.
		if s.View().Get(KindTask, "d") != nil {
			t.Error("uncommitted create visible outside the tx")
		}
		// Updating an object twice in one tx makes one op, checked once.
		again := proto.Clone(tx.Get(KindTask, "a")).(*shoalv1.Task)
		again.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN
		if err := tx.Update(again); err != nil {
			t.Errorf("second update in the tx: %v", err)
		}
		// Deleted then created again: a replacement.
		if err := tx.Create(mkTask("b", "s2", "", 0, 0)); err != nil {
			t.Errorf("re-create: %v", err)
		}
		return nil
	})
	v := s.View()
	a, _ := Get[*shoalv1.Task](v, "a")
	b, _ := Get[*shoalv1.Task](v, "b")
	if a.GetNodeId() != "n2" || a.GetDesiredState() != shoalv1.TaskState_TASK_STATE_SHUTDOWN || b.GetServiceId() != "s2" {
		t.Fatalf("a = %v, b = %v", a, b)
	}
}

func TestIndexes(t *testing.T) {
	s := single(t, options{})
	const run, shut = shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_SHUTDOWN
	mustUpdate(t, s, createIfMissing(
		mkTask("t1", "s1", "n1", run, run), mkTask("t2", "s1", "n2", run, shoalv1.TaskState_TASK_STATE_PENDING),
		mkTask("t3", "s2", "n1", shut, shoalv1.TaskState_TASK_STATE_COMPLETE), mkTask("t4", "s2", "", run, 0),
		mkNode("n1", "alpha", "host-a"), mkNode("n2", "", "host-b"), mkNode("n3", "", "host-b"),
		mkNetwork("net1", "backend"),
	))
	v := s.View()
	tests := []struct {
		kind         Kind
		index, value string
		want         string
	}{
		{KindTask, IndexServiceID, "s1", "t1 t2"},
		{KindTask, IndexServiceID, "s3", ""},
		{KindTask, IndexNodeID, "n1", "t1 t3"},
		{KindTask, IndexNodeID, "", ""}, // tasks without a node are not in the node index
		{KindTask, IndexState, "TASK_STATE_PENDING", "t2"},
		{KindTask, IndexState, "TASK_STATE_NEW", ""},     // only pending tasks are in the state index
		{KindTask, IndexState, "TASK_STATE_RUNNING", ""}, // (TestTaskIndexesAreRead)
		{KindNode, IndexName, "alpha", "n1"},
		{KindNode, IndexName, "host-a", ""}, // spec.name wins over the hostname
		{KindNode, IndexName, "host-b", "n2 n3"},
		{KindNetwork, IndexName, "backend", "net1"},
		{KindTask, IndexName, "x", ""}, // tasks have no name index
		{"bogus", IndexName, "x", ""},
	}
	for _, tt := range tests {
		if got := strings.Join(ids(v.Find(tt.kind, tt.index, tt.value)), " "); got != tt.want {
			t.Errorf("Find(%s, %s, %q) = %q, want %q", tt.kind, tt.index, tt.value, got, tt.want)
		}
	}
}

func TestResolveRef(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(mkService("abc111", "web"), mkService("abc222", "db"), mkService("xyz999", "abc"),
		mkNode("n1", "", "twin"), mkNode("n2", "", "twin")))
	v := s.View()
	tests := []struct {
		ref     string
		want    string
		wantErr error
		wantMsg string
	}{
		{ref: "abc111", want: "abc111"},
		{ref: "web", want: "abc111"},
		{ref: "abc", want: "xyz999"}, // a name beats an id prefix
		{ref: "abc2", want: "abc222"},
		{ref: "x", want: "xyz999"},
		{ref: "ab", wantErr: ErrAmbiguous, wantMsg: `"abc111", "abc222"`},
		{ref: "nope", wantErr: ErrNotFound, wantMsg: `service "nope": not found`},
		{ref: "", wantErr: ErrNotFound},
	}
	for _, tt := range tests {
		got, err := ResolveRef[*shoalv1.Service](v, tt.ref)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("ResolveRef(%q): err %v, want %v containing %q", tt.ref, err, tt.wantErr, tt.wantMsg)
			}
			continue
		}
		if err != nil || got.GetMeta().GetId() != tt.want {
			t.Errorf("ResolveRef(%q) = %v, %v; want %s", tt.ref, got.GetMeta().GetId(), err, tt.want)
		}
	}
	if _, err := ResolveRef[*shoalv1.Node](v, "twin"); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("two nodes named twin: %v", err)
	}
	// Inside a tx, resolution sees the tx's writes.
	mustUpdate(t, s, func(tx WriteTx) error {
		if err := tx.Create(mkService("abd333", "api")); err != nil {
			return err
		}
		if got, err := ResolveRef[*shoalv1.Service](tx, "abd"); err != nil || got.GetMeta().GetId() != "abd333" {
			t.Errorf("prefix in tx: %v %v", got, err)
		}
		if got, err := ResolveRef[*shoalv1.Service](tx, "api"); err != nil || got.GetMeta().GetId() != "abd333" {
			t.Errorf("name in tx: %v %v", got, err)
		}
		return nil
	})
}

func TestReadLinearizable(t *testing.T) {
	s := single(t, options{})
	idx := mustUpdate(t, s, createIfMissing(mkService("s1", "web")))
	r, err := s.ReadLinearizable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Index() < idx || r.Get(KindService, "s1") == nil {
		t.Fatalf("index %d < %d", r.Index(), idx)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Update(context.Background(), createIfMissing(mkService("s2", "x"))); !errors.Is(err, ErrClosed) {
		t.Fatalf("Update after Close: %v", err)
	}
	if _, err := s.ReadLinearizable(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadLinearizable after Close: %v", err)
	}
	if s.IsLeader() {
		t.Fatal("closed store leads")
	}
	if s.View().Get(KindService, "s1") == nil {
		t.Fatal("View after Close lost the state")
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewID()
		if len(id) != 25 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("bad id %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
}

func TestRaftLogsGoThroughSlog(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	single(t, options{}, func(c *Config) { c.Logger = logger })
	out := buf.String()
	if !strings.Contains(out, "component=raftstore") || !strings.Contains(out, "logger=raft") ||
		!strings.Contains(out, "entering leader state") {
		t.Fatalf("raft log output:\n%s", out)
	}
	h := NewHCLog(logger, "x").Named("y").With("k", "v")
	h.Info("hello", "a", 1)
	if !strings.Contains(buf.String(), "logger=x.y k=v a=1") || h.Name() != "x.y" || !h.IsDebug() {
		t.Fatalf("adapter output:\n%s", buf.String())
	}
}

// TestHCLogLevelFloor: a floor set with SetLevel (the manager keeps raft's
// network transport to errors) drops what is below it.
func TestHCLogLevelFloor(t *testing.T) {
	var buf syncBuffer
	h := NewHCLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "raft-net")
	h.SetLevel(hclog.Error)
	h.Warn("dropped")
	h.Error("kept", "err", "x")
	if out := buf.String(); strings.Contains(out, "dropped") || !strings.Contains(out, "logger=raft-net err=x") {
		t.Fatalf("output:\n%s", out)
	}
	if h.IsWarn() || !h.IsError() || h.GetLevel() != hclog.Error {
		t.Errorf("levels: warn %v, error %v, level %v", h.IsWarn(), h.IsError(), h.GetLevel())
	}
}
