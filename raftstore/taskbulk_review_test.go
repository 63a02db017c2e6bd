package raftstore

import (
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A status update and an assignment of the same task in one tx, in either
// order, store both changes: the entry's op carries the node as well as
// the last status (a TASK_STATUS op would drop the node the tx reads).
func TestStatusThenAssignKeepsTheNode(t *testing.T) {
	pending := func() *shoalv1.TaskStatus {
		return &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_PENDING, Message: "no suitable node"}
	}
	for name, tc := range map[string]struct {
		steps     func(tx WriteTx, v uint64) error
		wantState shoalv1.TaskState
	}{
		"status then assign": {func(tx WriteTx, v uint64) error {
			if err := tx.UpdateTaskStatus("t1", v, pending()); err != nil {
				return err
			}
			return tx.AssignTask("t1", v, "n1", goldAssigned())
		}, shoalv1.TaskState_TASK_STATE_ASSIGNED},
		"assign then status": {func(tx WriteTx, v uint64) error {
			if err := tx.AssignTask("t1", v, "n1", goldAssigned()); err != nil {
				return err
			}
			return tx.UpdateTaskStatus("t1", v, pending())
		}, shoalv1.TaskState_TASK_STATE_PENDING},
	} {
		t.Run(name, func(t *testing.T) {
			s := single(t, options{})
			mustUpdate(t, s, createIfMissing(goldService(), goldPending()))
			cur, _ := Get[*shoalv1.Task](s.View(), "t1")
			var inTx *shoalv1.Task
			idx := mustUpdate(t, s, func(tx WriteTx) error {
				if err := tc.steps(tx, cur.GetMeta().GetVersion()); err != nil {
					return err
				}
				inTx, _ = Get[*shoalv1.Task](tx, "t1")
				return nil
			})
			got, _ := Get[*shoalv1.Task](s.View(), "t1")
			if got.GetNodeId() != "n1" || got.GetStatus().GetState() != tc.wantState {
				t.Fatalf("stored node %q state %v (entry op %v); the tx read node %q state %v",
					got.GetNodeId(), got.GetStatus().GetState(), entryOp(t, s, idx), inTx.GetNodeId(), inTx.GetStatus().GetState())
			}
			if !proto.Equal(got.GetStatus(), inTx.GetStatus()) {
				t.Fatalf("stored status %v, the tx read %v", got.GetStatus(), inTx.GetStatus())
			}
		})
	}
}
