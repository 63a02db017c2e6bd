package raftstore

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestMemDBTracksNoMutations: writes do not close memdb watch channels
// (the store does not use them, and tracking them made big entries walk
// whole indexes; see newMemDB).
func TestMemDBTracksNoMutations(t *testing.T) {
	db := newMemDB()
	it, err := db.Txn(false).Get(string(KindTask), indexID)
	if err != nil {
		t.Fatal(err)
	}
	ch := it.WatchCh()
	txn := db.Txn(true)
	if err := txn.Insert(string(KindTask), &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}}); err != nil {
		t.Fatal(err)
	}
	txn.Commit()
	select {
	case <-ch:
		t.Fatal("a write closed a memdb watch channel: mutations are tracked")
	default:
	}
	if got, err := db.Txn(false).First(string(KindTask), indexID, "t1"); err != nil || got == nil {
		t.Fatalf("the write is not visible: %v, %v", got, err)
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
	if ts := newSchema().Tables[string(KindTask)]; len(ts.Indexes) != len(want) {
		t.Errorf("the task table's schema has %d indexes, want %d", len(ts.Indexes), len(want))
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
