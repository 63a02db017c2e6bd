package raftstore

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestViewIsolatedFromLaterWrites: a read txn taken before a write sees
// none of it, in the id tree or in any index, while a later one sees all of
// it (the trees are cloned on write, never changed once published).
func TestViewIsolatedFromLaterWrites(t *testing.T) {
	db := newMemDB()
	txn := db.Txn(true)
	if err := txn.Insert(string(KindTask), &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}, ServiceId: "s1"}); err != nil {
		t.Fatal(err)
	}
	txn.Commit()
	before := db.Txn(false)
	txn = db.Txn(true)
	if err := txn.Insert(string(KindTask), &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}, ServiceId: "s2", NodeId: "n1"}); err != nil {
		t.Fatal(err)
	}
	if err := txn.Insert(string(KindTask), &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t2"}, ServiceId: "s1"}); err != nil {
		t.Fatal(err)
	}
	txn.Commit()
	ids := func(tx *tableTxn, index string, args ...string) string {
		it, err := tx.Get(string(KindTask), index, args...)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for o := it.Next(); o != nil; o = it.Next() {
			out = append(out, o.GetMeta().GetId()+"/"+o.(*shoalv1.Task).GetServiceId())
		}
		return strings.Join(out, ",")
	}
	for _, c := range []struct {
		tx                *tableTxn
		all, s1, s2, node string
	}{
		{before, "t1/s1", "t1/s1", "", ""},
		{db.Txn(false), "t1/s2,t2/s1", "t2/s1", "t1/s2", "t1/s2"},
	} {
		if got := ids(c.tx, indexID); got != c.all {
			t.Errorf("all: %q, want %q", got, c.all)
		}
		if got := ids(c.tx, IndexServiceID, "s1"); got != c.s1 {
			t.Errorf("service s1: %q, want %q", got, c.s1)
		}
		if got := ids(c.tx, IndexServiceID, "s2"); got != c.s2 {
			t.Errorf("service s2: %q, want %q", got, c.s2)
		}
		if got := ids(c.tx, IndexNodeID, "n1"); got != c.node {
			t.Errorf("node n1: %q, want %q", got, c.node)
		}
	}
}

// TestTaskIndexesAreRead: a task is indexed only where something looks it
// up (by service, by node, by state), since every write of a task
// re-inserts it in each of its indexes. The desired-state index had no
// reader and cost a fifth of the inserts.
func TestTaskIndexesAreRead(t *testing.T) {
	var got []string
	for name := range tableDefs[KindTask].indexes {
		got = append(got, name)
	}
	slices.Sort(got)
	want := []string{indexID, IndexNodeID, IndexServiceID, IndexState}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("task indexes %q, want %q", got, want)
	}
	if ts := newMemDB().root.Load().tables[KindTask]; len(ts.secondary)+1 != len(want) {
		t.Errorf("the task table has %d trees, want %d", len(ts.secondary)+1, len(want))
	}
}

// TestStateIndexHoldsPendingOnly: only pending tasks are in the state
// index (the scheduler's and the allocator's lookup), so an assigned
// task's reports do not re-insert it there; a task leaves it when it is
// assigned, in memdb and in a WriteTx's overlay alike.
func TestStateIndexHoldsPendingOnly(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(
		mkTask("p1", "s1", "", shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_PENDING),
		mkTask("r1", "s1", "n1", shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_RUNNING),
	))
	find := func(r Reader, st shoalv1.TaskState) string {
		return strings.Join(ids(r.Find(KindTask, IndexState, st.String())), " ")
	}
	if got := find(s.View(), shoalv1.TaskState_TASK_STATE_PENDING); got != "p1" {
		t.Errorf("pending: %q, want p1", got)
	}
	if got := find(s.View(), shoalv1.TaskState_TASK_STATE_RUNNING); got != "" {
		t.Errorf("running tasks are in the state index: %q", got)
	}
	mustUpdate(t, s, func(tx WriteTx) error {
		cur, _ := Get[*shoalv1.Task](tx, "p1")
		tk := proto.Clone(cur).(*shoalv1.Task)
		tk.NodeId, tk.Status.State = "n1", shoalv1.TaskState_TASK_STATE_ASSIGNED
		if err := tx.Update(tk); err != nil {
			return err
		}
		if got := find(tx, shoalv1.TaskState_TASK_STATE_PENDING); got != "" {
			t.Errorf("pending in the transaction after the assignment: %q", got)
		}
		return nil
	})
	if got := find(s.View(), shoalv1.TaskState_TASK_STATE_PENDING); got != "" {
		t.Errorf("pending after the assignment: %q", got)
	}
}

// TestNodeIndexLeavesOutUnassigned: a task without a node is not in the
// node index (nothing looks it up there; the scheduler uses the state
// index), in memdb and in a WriteTx's overlay alike; once assigned it is.
func TestNodeIndexLeavesOutUnassigned(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(
		mkTask("p1", "s1", "", shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_PENDING),
		mkTask("r1", "s1", "n1", shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_RUNNING),
	))
	find := func(r Reader, node string) string { return strings.Join(ids(r.Find(KindTask, IndexNodeID, node)), " ") }
	if got := find(s.View(), ""); got != "" {
		t.Errorf("tasks without a node in the node index: %q", got)
	}
	mustUpdate(t, s, func(tx WriteTx) error {
		if got := find(tx, ""); got != "" {
			return fmt.Errorf("the overlay finds tasks without a node: %q", got)
		}
		cur, _ := Get[*shoalv1.Task](tx, "p1")
		if err := tx.AssignTask("p1", cur.GetMeta().GetVersion(), "n1", &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED}); err != nil {
			return err
		}
		if got := find(tx, "n1"); got != "p1 r1" {
			return fmt.Errorf("the overlay finds %q on n1", got)
		}
		return nil
	})
	if got := find(s.View(), "n1"); got != "p1 r1" {
		t.Errorf("on n1: %q, want p1 r1", got)
	}
}
