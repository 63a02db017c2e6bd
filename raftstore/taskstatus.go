package raftstore

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Two savings for the table a large cluster writes most: tasks.
//
// A status write (an agent's ACCEPTED, RUNNING, ...) changes one small
// message of a task whose spec, networks and ids stay as they are. Written
// as an UPDATE it ships the whole task in the entry, the leader copies it
// and every follower decodes it. WriteTx.UpdateTaskStatus writes it instead
// as a STORE_OP_KIND_TASK_STATUS op carrying only the id, the version read
// and the status; every replica applies it as the stored task at that
// version with that status, sharing every other sub-message with the
// stored object (stored objects are immutable, so sharing is safe). The op
// is written only while every manager reads StoreFormat 3 (storeformat.go);
// before that the same change goes out as a whole-task UPDATE.
//
// A task built from a service carries a copy of the service's TaskSpec;
// 100,000 replicas hold 100,000 equal copies, which cost memory and GC scan
// time on every replica. At apply time a task whose spec equals its
// service's (or the one its stored version holds) takes that very pointer
// instead (internTaskSpec), on every replica and on a snapshot restore, so
// followers save too.

// UpdateTaskStatus records status as the new status of task id, which must
// be at version (the version the writer read, not 0). The tx's reads see
// the task with the new status; the entry carries only the status when the
// task has no other pending change in the tx and every manager reads the
// compact op. status is owned by the tx from here on.
func (tx *writeTx) UpdateTaskStatus(id string, version uint64, status *shoalv1.TaskStatus) error {
	if version == 0 {
		return fmt.Errorf("raftstore: task %q: a status update needs the version read", id)
	}
	cur, _ := tx.Get(KindTask, id).(*shoalv1.Task)
	if cur == nil {
		return errNotFound(KindTask, id)
	}
	if err := checkCurrent(KindTask, id, version, cur); err != nil {
		return err
	}
	meta := copyMeta(cur.GetMeta())
	nt := taskWithStatus(cur, meta, status)
	k := objKey{KindTask, id}
	if p, ok := tx.lookup(k); ok {
		p.obj = nt // whatever the tx wrote before stays the op's form
		return nil
	}
	tx.add(k, pendingOp{op: shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE, obj: nt, expected: version, form: formStatus})
	return nil
}

// copyMeta is a new Meta with m's fields, sharing its timestamps (stored
// objects are immutable, and the store replaces a meta's timestamps, never
// writes into them): one allocation where proto.Clone made three and
// walked the message by reflection, for every status and assignment a
// tx writes (TestTaskWriteCopiesMetaOnce; TestTaskWithStatusCopiesEveryField
// fails when Meta gains a field).
func copyMeta(m *shoalv1.Meta) *shoalv1.Meta {
	if m == nil {
		return &shoalv1.Meta{}
	}
	return &shoalv1.Meta{Id: m.Id, Version: m.Version, CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt}
}

// statusOp is the compact op of a status-only change.
func statusOp(id string, expected uint64, status *shoalv1.TaskStatus) *shoalv1.StoreOp {
	return &shoalv1.StoreOp{
		Kind:            shoalv1.StoreOpKind_STORE_OP_KIND_TASK_STATUS,
		Object:          Wrap(&shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, Status: status}),
		ExpectedVersion: expected,
	}
}

// taskWithStatus is a shallow copy of t with meta and status replaced,
// sharing every other field (TestTaskWithStatusCopiesEveryField fails when
// a field is added to Task and not here).
func taskWithStatus(t *shoalv1.Task, meta *shoalv1.Meta, status *shoalv1.TaskStatus) *shoalv1.Task {
	nt := &shoalv1.Task{Meta: meta, NodeId: t.NodeId, Status: status}
	copyUnchanged(nt, t)
	return nt
}

// copyUnchanged sets on dst every field of t that a status update or an
// assignment leaves as it was (all but meta, node_id and status). It is
// the one list of them, for taskWithStatus and adoptStored alike: a Task
// field missing here is lost by every status update, on the replicas that
// decode the entry as on the leader (TestTaskWithStatusCopiesEveryField,
// TestAdoptStoredCopiesEveryField).
func copyUnchanged(dst, t *shoalv1.Task) {
	dst.ServiceId = t.ServiceId
	dst.ServiceName = t.ServiceName
	dst.Slot = t.Slot
	dst.DesiredState = t.DesiredState
	dst.Spec = t.Spec
	dst.SpecVersion = t.SpecVersion
	dst.Networks = t.Networks
	dst.JobIteration = t.JobIteration
}

// applyTaskStatus builds the object a TASK_STATUS op stores: the stored
// task cur (whose version the caller checked) with the op's status and the
// op object's meta (the caller stamps it). The op object must carry nothing
// but meta and status, and the version must be named: a replica never
// guesses which task the writer read.
func applyTaskStatus(index uint64, i int, op *shoalv1.StoreOp, o, cur Object) (Object, error) {
	t, ok := o.(*shoalv1.Task)
	stored, ok2 := cur.(*shoalv1.Task)
	if !ok || !ok2 {
		return nil, fmt.Errorf("raft entry %d: op %d: a task status op for a %s", index, i, KindOf(o))
	}
	if op.GetExpectedVersion() == 0 {
		return nil, fmt.Errorf("raft entry %d: op %d: task %q: a status op without the version it applies to", index, i, t.GetMeta().GetId())
	}
	var extra protoreflect.Name
	t.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if n := fd.Name(); n != "meta" && n != "status" {
			extra = n
			return false
		}
		return true
	})
	if extra != "" {
		return nil, fmt.Errorf("raft entry %d: op %d: task %q: a status op carrying %s", index, i, t.GetMeta().GetId(), extra)
	}
	return adoptStored(t, stored, stored.NodeId), nil
}

// adoptStored returns op object t (decoded, or cloned from the proposal,
// for this apply: the FSM's own) made the stored task with t's meta and
// status and node nodeID: taskWithStatus without allocating another task
// per op (TestCompactOpsStoreTheDecodedTask). A t carrying unknown fields
// (a newer writer's) is copied instead, so the stored task is the same on
// every replica whichever binary wrote the entry.
func adoptStored(t, stored *shoalv1.Task, nodeID string) *shoalv1.Task {
	if len(t.ProtoReflect().GetUnknown()) != 0 {
		nt := taskWithStatus(stored, t.GetMeta(), t.GetStatus())
		nt.NodeId = nodeID
		return nt
	}
	copyUnchanged(t, stored)
	t.NodeId = nodeID
	return t
}

// internTaskSpec makes t share an equal TaskSpec already in the store: its
// service's (as txn has it) or, failing that, the one cur (t's stored
// version, nil if none) holds. Equal specs encode alike, so the state every
// replica keeps is the same whichever pointer it holds.
func internTaskSpec(txn *tableTxn, t *shoalv1.Task, cur Object) {
	if t.Spec == nil {
		return
	}
	if t.ServiceId != "" {
		if svc, ok := txn.get(KindService, t.ServiceId).(*shoalv1.Service); ok {
			if svcSpec := svc.GetSpec().GetTask(); svcSpec != nil {
				if t.Spec == svcSpec {
					return
				}
				if proto.Equal(t.Spec, svcSpec) {
					t.Spec = svcSpec
					return
				}
			}
		}
	}
	if prev, ok := cur.(*shoalv1.Task); ok && prev.Spec != nil && prev.Spec != t.Spec && proto.Equal(t.Spec, prev.Spec) {
		t.Spec = prev.Spec
	}
}
