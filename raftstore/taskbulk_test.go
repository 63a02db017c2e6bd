package raftstore

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func goldAssigned() *shoalv1.TaskStatus {
	return &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED, Message: "assigned", Timestamp: timestamppb.New(t0)}
}

// goldPending is t1 as the orchestrator creates it: no node yet.
func goldPending() *shoalv1.Task {
	tk := goldTask(0, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_PENDING, Message: "pending", Timestamp: timestamppb.New(t0)})
	tk.NodeId = ""
	return tk
}

// A TASK_CREATE entry and a TASK_ASSIGN entry replay to the state, and
// the events, the whole-task CREATE and UPDATE entries of the same
// changes give; the compact task holds its service's very spec.
func TestCompactTaskOpsApplyAsWholeOnes(t *testing.T) {
	apply := func(create, assign *shoalv1.StoreOp) (*fsm, []*shoalv1.WatchEvent) {
		f := newTestFSM()
		if err := applyDirect(t, f, 1, t0, opCreate(goldService())); err != nil {
			t.Fatal(err)
		}
		sub, err := f.hub.watch(context.Background(), 0, []Kind{KindTask})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		if err := applyDirect(t, f, 2, t0.Add(time.Second), create); err != nil {
			t.Fatal(err)
		}
		if err := applyDirect(t, f, 3, t0.Add(2*time.Second), assign); err != nil {
			t.Fatal(err)
		}
		return f, collect(t, sub, 2)
	}
	assigned := goldPending()
	assigned.Meta.Version, assigned.NodeId, assigned.Status = 2, "n1", goldAssigned()
	old, oldEvs := apply(opCreate(goldPending()), opUpdate(assigned, 2))
	f, evs := apply(createOp(goldPending()), assignOp("t1", 2, "n1", goldAssigned()))
	if dump(f.view()) != dump(old.view()) {
		t.Fatalf("compact ops apply to\n%s\nwhole ones to\n%s", dump(f.view()), dump(old.view()))
	}
	for i := range evs {
		if !proto.Equal(evs[i], oldEvs[i]) {
			t.Fatalf("event %d: %v, whole form's %v", i, evs[i], oldEvs[i])
		}
	}
	svc, _ := Get[*shoalv1.Service](f.view(), "s1")
	tk, _ := Get[*shoalv1.Task](f.view(), "t1")
	if tk.Spec != svc.Spec.Task || tk.GetNodeId() != "n1" || tk.GetMeta().GetVersion() != 3 ||
		!tk.GetMeta().GetCreatedAt().AsTime().Equal(t0.Add(time.Second)) || !tk.GetMeta().GetUpdatedAt().AsTime().Equal(t0.Add(2*time.Second)) {
		t.Fatalf("stored %v", tk)
	}
	if len(createOp(goldPending()).GetObject().GetTask().GetSpec().GetContainer().GetImage()) != 0 {
		t.Fatal("a TASK_CREATE op carries the spec")
	}
}

// The FSM refuses a TASK_CREATE whose service is gone or whose spec
// version moved as a version conflict (the writer plans again), and a
// malformed compact op as an error; nothing of the entry is applied.
func TestFSMRefusesStaleOrMalformedCompactTaskOps(t *testing.T) {
	f := newTestFSM()
	if err := applyDirect(t, f, 1, t0, opCreate(goldService()), opCreate(goldPending())); err != nil {
		t.Fatal(err)
	}
	before := dump(f.view())
	task := func(mut func(*shoalv1.Task)) *shoalv1.StoreOp {
		tk := goldPending()
		tk.Meta.Id = "t2"
		mut(tk)
		return createOp(tk)
	}
	withSpec := task(func(*shoalv1.Task) {})
	withSpec.Object.GetTask().Spec = goldTaskSpec()
	extra := assignOp("t1", 1, "n1", goldAssigned())
	extra.Object.GetTask().Slot = 4
	for name, tc := range map[string]struct {
		op       *shoalv1.StoreOp
		want     string
		conflict bool
	}{
		"spec version moved": {task(func(tk *shoalv1.Task) { tk.SpecVersion = 2 }), "planned against spec version 2", true},
		"unknown service":    {task(func(tk *shoalv1.Task) { tk.ServiceId = "s9" }), "is gone", true},
		"no service":         {task(func(tk *shoalv1.Task) { tk.ServiceId = "" }), "without service_id", false},
		"carrying a spec":    {withSpec, "carrying spec", false},
		"existing task":      {task(func(tk *shoalv1.Task) { tk.Meta.Id = "t1" }), "exists", false},
		"assign stale":       {assignOp("t1", 7, "n1", goldAssigned()), "stale", true},
		"assign no version":  {assignOp("t1", 0, "n1", goldAssigned()), "without the version", false},
		"assign no node":     {assignOp("t1", 1, "", goldAssigned()), "without node_id", false},
		"assign more fields": {extra, "carrying slot", false},
		"assign missing":     {assignOp("t9", 1, "n1", goldAssigned()), "not found", false},
		"assign a service":   {&shoalv1.StoreOp{Kind: shoalv1.StoreOpKind_STORE_OP_KIND_TASK_ASSIGN, Object: Wrap(mkService("s1", "web")), ExpectedVersion: 1}, "assign op for a service", false},
		"create a service":   {&shoalv1.StoreOp{Kind: shoalv1.StoreOpKind_STORE_OP_KIND_TASK_CREATE, Object: Wrap(mkService("s2", "db"))}, "create op for a service", false},
	} {
		err := applyDirect(t, f, 2, t0, opCreate(mkNetwork("n1", "net")), tc.op)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
		if errors.Is(err, ErrVersionConflict) != tc.conflict {
			t.Errorf("%s: %v: a version conflict: %v, want %v", name, err, !tc.conflict, tc.conflict)
		}
		if got := dump(f.view()); got != before {
			t.Errorf("%s: state changed:\n%s", name, got)
		}
	}
	// The spec version moving inside the entry, after a create of the
	// same service read it: the next create sees the new version.
	svc2 := goldService()
	svc2.SpecVersion = 2
	err := applyDirect(t, f, 2, t0, task(func(*shoalv1.Task) {}), opUpdate(svc2, 1),
		task(func(tk *shoalv1.Task) { tk.Meta.Id = "t3" }))
	if !errors.Is(err, ErrVersionConflict) || !strings.Contains(err.Error(), `"t3"`) {
		t.Errorf("a create after its service moved in the same entry: %v", err)
	}
	if got := dump(f.view()); got != before {
		t.Errorf("state changed:\n%s", got)
	}
}

// With every manager at StoreFormat, a created task holding its service's
// spec at its spec version goes out as TASK_CREATE (also after a service
// update earlier in the same entry), and AssignTask as TASK_ASSIGN; a task
// of another spec, or created before its service's update in the entry, is
// written whole. The tx reads its own writes.
func TestBulkTaskWritesGoCompact(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(gateNode("m1", roleManager, roleManager, StoreFormat), goldService()))
	svc, _ := Get[*shoalv1.Service](s.View(), "s1")
	idx := mustUpdate(t, s, func(tx WriteTx) error {
		tk := goldPending()
		tk.Spec = svc.Spec.Task
		return tx.Create(tk)
	})
	if op := entryOp(t, s, idx); !proto.Equal(op, createOp(goldPending())) {
		t.Fatalf("entry op %v", op)
	}
	stored, _ := Get[*shoalv1.Task](s.View(), "t1")
	if stored.Spec != svc.Spec.Task {
		t.Fatal("the created task does not share its service's spec")
	}
	idx = mustUpdate(t, s, func(tx WriteTx) error {
		if err := tx.AssignTask("t1", stored.GetMeta().GetVersion(), "n1", goldAssigned()); err != nil {
			return err
		}
		if got, _ := Get[*shoalv1.Task](tx, "t1"); got.GetNodeId() != "n1" || got.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_ASSIGNED {
			return errors.New("the tx does not read its assignment")
		}
		return nil
	})
	if op := entryOp(t, s, idx); !proto.Equal(op, assignOp("t1", stored.GetMeta().GetVersion(), "n1", goldAssigned())) {
		t.Fatalf("entry op %v", op)
	}
	got, _ := Get[*shoalv1.Task](s.View(), "t1")
	want := proto.Clone(stored).(*shoalv1.Task)
	want.NodeId, want.Status, want.Meta.Version, want.Meta.UpdatedAt = "n1", goldAssigned(), idx, got.GetMeta().GetUpdatedAt()
	if !proto.Equal(got, want) || got.Spec != stored.Spec {
		t.Fatalf("stored %v, want %v sharing the spec", got, want)
	}

	// A service update then tasks of its new spec: compact; a task created
	// before the update in the entry, or of another spec: whole.
	svc2 := proto.Clone(svc).(*shoalv1.Service)
	svc2.Spec.Task.Container.Image, svc2.SpecVersion = "demo:v2", 2
	mk := func(id string, spec *shoalv1.TaskSpec, sv uint64) *shoalv1.Task {
		tk := goldPending()
		tk.Meta.Id, tk.Spec, tk.SpecVersion = id, spec, sv
		return tk
	}
	idx = mustUpdate(t, s, func(tx WriteTx) error {
		if err := tx.Create(mk("before", svc2.Spec.Task, 2)); err != nil { // the FSM applies it before the update
			return err
		}
		if err := tx.Update(svc2); err != nil {
			return err
		}
		for _, tk := range []*shoalv1.Task{mk("after", svc2.Spec.Task, 2), mk("other", goldTaskSpec(), 2), mk("oldver", svc2.Spec.Task, 1)} {
			if err := tx.Create(tk); err != nil {
				return err
			}
		}
		return nil
	})
	kinds := map[string]shoalv1.StoreOpKind{}
	for _, op := range entryOps(t, s, idx) {
		kinds[Unwrap(op.GetObject()).GetMeta().GetId()] = op.GetKind()
	}
	wantKinds := map[string]shoalv1.StoreOpKind{
		"before": shoalv1.StoreOpKind_STORE_OP_KIND_CREATE, "s1": shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE,
		"after": shoalv1.StoreOpKind_STORE_OP_KIND_TASK_CREATE, "other": shoalv1.StoreOpKind_STORE_OP_KIND_CREATE,
		"oldver": shoalv1.StoreOpKind_STORE_OP_KIND_CREATE,
	}
	for id, k := range wantKinds {
		if kinds[id] != k {
			t.Errorf("%s: op %v, want %v", id, kinds[id], k)
		}
	}
	nsvc, _ := Get[*shoalv1.Service](s.View(), "s1")
	if tk, _ := Get[*shoalv1.Task](s.View(), "after"); tk.Spec != nsvc.Spec.Task {
		t.Error("a compact task does not share the service's new spec")
	}
	if tk, _ := Get[*shoalv1.Task](s.View(), "before"); !proto.Equal(tk.GetSpec(), nsvc.Spec.Task) {
		t.Errorf("the task created before the update holds %v", tk.GetSpec())
	}
}

// While a manager reads only StoreFormat 3, creations and assignments go
// out whole, and the state is the same.
func TestBulkTaskWritesWholeWhileAManagerIsOld(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(gateNode("m1", roleManager, roleManager, StoreFormat), gateNode("m2", roleManager, roleManager, StoreFormat-1), goldService()))
	svc, _ := Get[*shoalv1.Service](s.View(), "s1")
	idx := mustUpdate(t, s, func(tx WriteTx) error {
		tk := goldPending()
		tk.Spec = svc.Spec.Task
		return tx.Create(tk)
	})
	if op := entryOp(t, s, idx); op.GetKind() != shoalv1.StoreOpKind_STORE_OP_KIND_CREATE || !proto.Equal(op.GetObject().GetTask().GetSpec(), goldTaskSpec()) {
		t.Fatalf("with an old manager the create is %v", op)
	}
	stored, _ := Get[*shoalv1.Task](s.View(), "t1")
	idx = mustUpdate(t, s, func(tx WriteTx) error {
		return tx.AssignTask("t1", stored.GetMeta().GetVersion(), "n1", goldAssigned())
	})
	op := entryOp(t, s, idx)
	if op.GetKind() != shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE || op.GetObject().GetTask().GetNodeId() != "n1" || op.GetObject().GetTask().GetSpec() == nil {
		t.Fatalf("with an old manager the assignment is %v", op)
	}
	if got, _ := Get[*shoalv1.Task](s.View(), "t1"); got.GetNodeId() != "n1" || got.Spec != svc.Spec.Task {
		t.Fatalf("stored %v", got)
	}
}

// AssignTask refuses a missing version or node and a stale read, and
// another write of the task in the same tx makes the whole-task op with
// every change in it.
func TestAssignTaskChecksAndMixes(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(goldService(), goldPending()))
	cur, _ := Get[*shoalv1.Task](s.View(), "t1")
	v := cur.GetMeta().GetVersion()
	for name, fn := range map[string]func(WriteTx) error{
		"no version": func(tx WriteTx) error { return tx.AssignTask("t1", 0, "n1", goldAssigned()) },
		"no node":    func(tx WriteTx) error { return tx.AssignTask("t1", v, "", goldAssigned()) },
		"stale":      func(tx WriteTx) error { return tx.AssignTask("t1", v-1, "n1", goldAssigned()) },
		"missing":    func(tx WriteTx) error { return tx.AssignTask("t9", v, "n1", goldAssigned()) },
	} {
		if _, err := s.Update(context.Background(), fn); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if s.View().Index() != v {
		t.Fatal("a refused assignment was proposed")
	}
	idx := mustUpdate(t, s, func(tx WriteTx) error {
		if err := tx.AssignTask("t1", v, "n1", goldAssigned()); err != nil {
			return err
		}
		c, _ := Get[*shoalv1.Task](tx, "t1")
		c = proto.Clone(c).(*shoalv1.Task)
		c.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN
		return tx.Update(c)
	})
	op := entryOp(t, s, idx)
	if op.GetKind() != shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE || op.GetObject().GetTask().GetNodeId() != "n1" ||
		op.GetObject().GetTask().GetDesiredState() != shoalv1.TaskState_TASK_STATE_SHUTDOWN {
		t.Fatalf("entry op %v", op)
	}
}

// A snapshot of a state written with the compact ops restores to the same
// state, the tasks sharing their service's spec.
func TestCompactTaskOpsSnapshotRestore(t *testing.T) {
	f := newTestFSM()
	if err := applyDirect(t, f, 1, t0, opCreate(goldService()), createOp(goldPending())); err != nil {
		t.Fatal(err)
	}
	if err := applyDirect(t, f, 2, t0, assignOp("t1", 1, "n1", goldAssigned())); err != nil {
		t.Fatal(err)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	restored := newTestFSM()
	if err := restored.Restore(readCloser{bytes.NewReader(sink.Bytes())}); err != nil {
		t.Fatal(err)
	}
	if dump(restored.view()) != dump(f.view()) {
		t.Fatalf("restored\n%s\nwant\n%s", dump(restored.view()), dump(f.view()))
	}
	rsvc, _ := Get[*shoalv1.Service](restored.view(), "s1")
	if rt1, _ := Get[*shoalv1.Task](restored.view(), "t1"); rt1.Spec != rsvc.Spec.Task || rt1.GetNodeId() != "n1" {
		t.Fatalf("restored task %v does not share its service's spec", rt1)
	}
}

// Followers apply both compact ops from their own stored service and task
// and end in the leader's state.
func TestFollowersApplyCompactTaskOps(t *testing.T) {
	c := newCluster(t, 3, clusterOpts{})
	c.update(createIfMissing(goldService()))
	c.update(func(tx WriteTx) error {
		if tx.Get(KindTask, "t1") != nil {
			return nil // a retry after a commit
		}
		svc, _ := Get[*shoalv1.Service](tx, "s1")
		tk := goldPending()
		tk.Spec = svc.Spec.Task
		return tx.Create(tk)
	})
	idx := c.update(func(tx WriteTx) error {
		cur, _ := Get[*shoalv1.Task](tx, "t1")
		if cur.GetNodeId() != "" {
			return nil
		}
		return tx.AssignTask("t1", cur.GetMeta().GetVersion(), "n1", goldAssigned())
	})
	if op := entryOp(t, c.leader().store, idx); op.GetKind() != shoalv1.StoreOpKind_STORE_OP_KIND_TASK_ASSIGN {
		t.Fatalf("entry op %v", op)
	}
	c.converge(dump(c.leader().store.View()), idx)
	for _, nd := range c.nodes {
		task, _ := Get[*shoalv1.Task](nd.store.View(), "t1")
		svc, _ := Get[*shoalv1.Service](nd.store.View(), "s1")
		if task.GetNodeId() != "n1" || task.Spec != svc.GetSpec().GetTask() {
			t.Fatalf("%s: task %v does not share its service's spec", nd.id, task)
		}
	}
}

// entryOps returns every op of entry idx of s's log.
func entryOps(t *testing.T, s *Store, idx uint64) []*shoalv1.StoreOp {
	t.Helper()
	var l raft.Log
	if err := s.logs.GetLog(idx, &l); err != nil {
		t.Fatal(err)
	}
	act := new(shoalv1.StoreAction)
	if err := proto.Unmarshal(l.Data, act); err != nil {
		t.Fatal(err)
	}
	return act.GetOps()
}
