package raftstore

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Review of the compact task ops' adoption of the op's task: adoptStored
// must give the stored task with the op's meta, status and node on every
// path (the op decoded plain, the op carrying a newer writer's unknown
// field), keep every other field of the stored task (a Task field it
// forgot would be dropped by every status update on every replica), share
// the unchanged parts and leave the stored task as it was.
func TestAdoptStoredCopiesEveryField(t *testing.T) {
	for _, tc := range []struct {
		name    string
		unknown bool
		node    string
	}{
		{name: "status", node: "n1"},
		{name: "assign", node: "n2"},
		{name: "unknown field", unknown: true, node: "n3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stored := goldTask(7, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ASSIGNED})
			stored.JobIteration = 3
			n := 0
			stored.ProtoReflect().Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool { n++; return true })
			if all := stored.ProtoReflect().Descriptor().Fields().Len(); n != all {
				t.Fatalf("the test sets %d of Task's %d fields; set the new one", n, all)
			}
			before := proto.Clone(stored).(*shoalv1.Task)
			meta := &shoalv1.Meta{Id: "t1", Version: 9}
			op := &shoalv1.Task{Meta: meta, Status: goldRunning()}
			if tc.unknown {
				op.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 999, protowire.VarintType), 1))
			}
			got := adoptStored(op, stored, tc.node)
			want := proto.Clone(stored).(*shoalv1.Task)
			want.Meta, want.Status, want.NodeId = meta, goldRunning(), tc.node
			got.ProtoReflect().SetUnknown(nil)
			if !proto.Equal(got, want) {
				t.Fatalf("stored %v, want %v", got, want)
			}
			if got == stored || got.Spec != stored.Spec || &got.Networks[0] != &stored.Networks[0] || got.Meta != meta {
				t.Fatal("the new version does not share the unchanged parts, or is the stored task")
			}
			if !proto.Equal(stored, before) {
				t.Fatalf("the stored task changed: %v, was %v", stored, before)
			}
		})
	}
}

// The status a writer hands UpdateTaskStatus stays the writer's: the
// leader's apply stores a copy of the proposal, so a caller reusing or
// changing its status value after Update returns does not reach the store
// (nor the watch events, nor what a follower decoded).
func TestUpdateTaskStatusDoesNotAliasTheCallersStatus(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(gateNode("m1", roleManager, roleManager, StoreFormat)))
	prev := createGold(t, s)
	st := goldRunning()
	mustUpdate(t, s, func(tx WriteTx) error {
		return tx.UpdateTaskStatus("t1", prev.GetMeta().GetVersion(), st)
	})
	st.State, st.Message = shoalv1.TaskState_TASK_STATE_FAILED, "changed by the caller"
	got, _ := Get[*shoalv1.Task](s.View(), "t1")
	if got.GetStatus() == st || !proto.Equal(got.GetStatus(), goldRunning()) {
		t.Fatalf("stored status %v aliases the caller's", got.GetStatus())
	}
}
