package raftstore

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestWriteTouchesOnlyChangedIndexes: a write re-inserts a secondary key
// only where the index's value changed, so a status report (the bulk of a
// task's writes) leaves every secondary tree as it was (not even cloned),
// and an assignment touches the node and state indexes but not the
// service index.
func TestWriteTouchesOnlyChangedIndexes(t *testing.T) {
	db := newMemDB()
	write := func(task *shoalv1.Task) {
		t.Helper()
		txn := db.Txn(true)
		if err := txn.Insert(string(KindTask), task); err != nil {
			t.Fatal(err)
		}
		txn.Commit()
	}
	trees := func() map[string]any {
		ts := db.Txn(false).root.tables[KindTask]
		out := map[string]any{indexID: ts.primary}
		for i, ix := range ts.def.secondary {
			out[ix.name] = ts.secondary[i]
		}
		return out
	}
	task := func(node string, st shoalv1.TaskState) *shoalv1.Task {
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}, ServiceId: "s1", NodeId: node, Status: &shoalv1.TaskStatus{State: st}}
	}
	write(task("", shoalv1.TaskState_TASK_STATE_PENDING))
	for _, step := range []struct {
		task    *shoalv1.Task
		changed []string
	}{
		{task("n1", shoalv1.TaskState_TASK_STATE_ASSIGNED), []string{indexID, IndexNodeID, IndexState}},
		{task("n1", shoalv1.TaskState_TASK_STATE_ACCEPTED), []string{indexID}},
		{task("n1", shoalv1.TaskState_TASK_STATE_RUNNING), []string{indexID}},
	} {
		before := trees()
		write(step.task)
		after := trees()
		var changed []string
		for name, tree := range after {
			if before[name] != tree {
				changed = append(changed, name)
			}
		}
		slices.Sort(changed)
		slices.Sort(step.changed)
		if !slices.Equal(changed, step.changed) {
			t.Errorf("writing %v changed trees %q, want %q", step.task.GetStatus().GetState(), changed, step.changed)
		}
	}
}

// TestCompactOpsStoreTheDecodedTask: a TASK_STATUS or TASK_ASSIGN op
// stores the task it decoded (made the stored task with the op's changes)
// and publishes the op's own wrapper, not a copy of each; a CREATE
// publishes the op's wrapper too. The result is the state the copying
// apply stored.
func TestCompactOpsStoreTheDecodedTask(t *testing.T) {
	db := newMemDB()
	apply := func(index uint64, ops ...*shoalv1.StoreOp) []*shoalv1.WatchEvent {
		t.Helper()
		txn := db.Txn(true)
		evs, err := applyAction(txn, &shoalv1.StoreAction{Ops: ops, Time: timestamppb.New(t0)}, index)
		if err != nil {
			t.Fatal(err)
		}
		txn.Commit()
		return evs
	}
	stored := func() *shoalv1.Task {
		raw, err := db.Txn(false).First(string(KindTask), indexID, "t1")
		if err != nil || raw == nil {
			t.Fatalf("t1: %v, %v", raw, err)
		}
		return raw.(*shoalv1.Task)
	}
	created := opCreate(goldTask(0, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_PENDING}))
	created.GetObject().GetTask().NodeId = ""
	evs := apply(1, opCreate(goldService()), created)
	if evs[1].GetObject() != created.GetObject() {
		t.Fatal("a create published a second wrapper of its task")
	}
	before := stored()

	accepted := &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED}
	assign := assignOp("t1", 1, "n7", accepted)
	evs = apply(2, assign)
	got := stored()
	if got != assign.GetObject().GetTask() || evs[0].GetObject() != assign.GetObject() {
		t.Fatal("an assignment stored or published a copy of its decoded task")
	}
	want := proto.Clone(before).(*shoalv1.Task)
	want.NodeId, want.Status, want.Meta.Version, want.Meta.UpdatedAt = "n7", accepted, 2, timestamppb.New(t0)
	if !proto.Equal(got, want) || got.Spec != before.Spec || &got.Networks[0] != &before.Networks[0] {
		t.Fatalf("assigned %v, want %v sharing the stored spec and networks", got, want)
	}

	status := statusOp("t1", 2, goldRunning())
	evs = apply(3, status)
	got = stored()
	if got != status.GetObject().GetTask() || evs[0].GetObject() != status.GetObject() {
		t.Fatal("a status update stored or published a copy of its decoded task")
	}
	want.Status, want.Meta.Version = goldRunning(), 3
	if !proto.Equal(got, want) || got.NodeId != "n7" {
		t.Fatalf("after the status %v, want %v", got, want)
	}

	// A newer writer's unknown field is not stored: the op's task is
	// copied as before.
	odd := statusOp("t1", 3, goldRunning())
	odd.GetObject().GetTask().ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 999, protowire.VarintType), 1))
	evs = apply(4, odd)
	got = stored()
	if got == odd.GetObject().GetTask() || len(got.ProtoReflect().GetUnknown()) != 0 || evs[0].GetObject().GetTask() != got {
		t.Fatal("an op carrying unknown fields was stored as decoded")
	}
	want.Meta.Version = 4
	if !proto.Equal(got, want) {
		t.Fatalf("after the odd status %v, want %v", got, want)
	}
}

// TestTaskWriteCopiesMetaOnce: a status update or an assignment in a tx
// copies the stored task's meta shallowly (one allocation, sharing its
// timestamps), not by a reflective deep clone (three); the stored meta
// is left as it was.
func TestTaskWriteCopiesMetaOnce(t *testing.T) {
	f := newTestFSM()
	task := goldTask(0, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED})
	if err := applyDirect(t, f, 1, t0, opCreate(goldService()), opCreate(task)); err != nil {
		t.Fatal(err)
	}
	v := f.view()
	stored := v.Get(KindTask, "t1").(*shoalv1.Task)
	st := goldRunning()
	writes := map[string]func(tx *writeTx) error{
		"status": func(tx *writeTx) error { return tx.UpdateTaskStatus("t1", 1, st) },
		"assign": func(tx *writeTx) error { return tx.AssignTask("t1", 1, "n2", st) },
	}
	for name, write := range writes {
		tx := newWriteTx(v)
		if err := write(tx); err != nil {
			t.Fatal(err)
		}
		got := tx.Get(KindTask, "t1").(*shoalv1.Task)
		if got.Meta == stored.Meta || !proto.Equal(got.Meta, stored.Meta) || got.Meta.CreatedAt != stored.Meta.CreatedAt {
			t.Fatalf("%s: meta %v is not a new copy sharing the stored %v's timestamps", name, got.Meta, stored.Meta)
		}
	}
	if stored.GetMeta().GetVersion() != 1 || stored.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_ASSIGNED {
		t.Fatal("the stored task changed")
	}
}
