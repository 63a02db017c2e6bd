package raftstore

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// The two bulk writes of scheduling at scale, in compact forms (store
// format 4).
//
// Task creation. The orchestrator creates a service's tasks from the
// service's current TaskSpec, thousands to an entry. Written as CREATEs,
// every task carries a copy of that spec: the leader encodes it, copies it
// out of the proposal, and every replica decodes it and compares it with
// the service's (internTaskSpec's proto.Equal) only to drop it for the
// service's own pointer. A TASK_CREATE op carries the task without its
// spec: the replica takes the spec of the stored service, which the op
// names (service_id) at the spec version it was planned against
// (spec_version). When that service is gone or its spec version moved, the
// task would not be the one the writer planned, so the op is refused as a
// version conflict and the writer plans again. WriteTx picks the form by
// itself: a created task whose spec is its service's (as the entry will
// have the service when the op applies) at that spec version goes out
// compact.
//
// Assignment. The scheduler changes a pending task's node and status and
// nothing else; WriteTx.AssignTask writes that as a TASK_ASSIGN op of the
// id, the version read, the node and the status, applied as the stored
// task with those two fields replaced (sharing every other sub-message),
// so the entry holds no spec and the leader copies no whole task out of
// its proposal.
//
// Both forms are written only while every manager reads StoreFormat 4
// (storeformat.go); before that the same changes go out as whole-task
// CREATEs and UPDATEs, and the state is the same either way.

// AssignTask records task id, which must be at version (the version the
// writer read, not 0), as placed on nodeID with status. The tx's reads see
// the change; the entry carries only the node and the status when the
// task has no other pending change in the tx and every manager reads the
// compact op. status is owned by the tx from here on.
func (tx *writeTx) AssignTask(id string, version uint64, nodeID string, status *shoalv1.TaskStatus) error {
	if version == 0 {
		return fmt.Errorf("raftstore: task %q: an assignment needs the version read", id)
	}
	if nodeID == "" {
		return fmt.Errorf("raftstore: task %q: an assignment needs a node", id)
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
	nt.NodeId = nodeID
	k := objKey{KindTask, id}
	if p, ok := tx.lookup(k); ok {
		// Whatever the tx wrote before stays the op's form, but for a
		// status-only change: its TASK_STATUS op would drop the node
		// (TestStatusThenAssignKeepsTheNode). An assignment carries the
		// status as well, so it covers both.
		p.obj = nt
		if p.form == formStatus {
			p.form = formAssign
		}
		return nil
	}
	tx.add(k, pendingOp{op: shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE, obj: nt, expected: version, form: formAssign})
	return nil
}

// assignOp is the compact op of an assignment.
func assignOp(id string, expected uint64, nodeID string, status *shoalv1.TaskStatus) *shoalv1.StoreOp {
	return &shoalv1.StoreOp{
		Kind:            shoalv1.StoreOpKind_STORE_OP_KIND_TASK_ASSIGN,
		Object:          Wrap(&shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, NodeId: nodeID, Status: status}),
		ExpectedVersion: expected,
	}
}

// createOp is the compact op of a created task: t without its spec
// (a shallow copy: t stays as the tx holds it).
func createOp(t *shoalv1.Task) *shoalv1.StoreOp {
	c := taskWithStatus(t, t.GetMeta(), t.GetStatus())
	c.Spec = nil
	return &shoalv1.StoreOp{Kind: shoalv1.StoreOpKind_STORE_OP_KIND_TASK_CREATE, Object: Wrap(c)}
}

// compactCreate reports whether created task t may go out as a TASK_CREATE
// op applied against svc, the service as the FSM will have it when the op
// applies (nil: none): its spec must be the service's current one, at the
// service's spec version.
func compactCreate(t *shoalv1.Task, svc *shoalv1.Service) bool {
	if svc == nil || t.GetSpec() == nil || t.GetServiceId() == "" {
		return false
	}
	s := svc.GetSpec().GetTask()
	if s == nil || t.GetSpecVersion() != svc.GetSpecVersion() {
		return false
	}
	return t.Spec == s || proto.Equal(t.Spec, s)
}

// onlyFields fails when o sets a field other than those named: a compact
// op carries exactly its fields, and a replica never guesses what else the
// writer meant.
func onlyFields(index uint64, i int, kind shoalv1.StoreOpKind, t *shoalv1.Task, allowed ...protoreflect.Name) error {
	var extra protoreflect.Name
	t.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		for _, a := range allowed {
			if fd.Name() == a {
				return true
			}
		}
		extra = fd.Name()
		return false
	})
	if extra != "" {
		return fmt.Errorf("raft entry %d: op %d: task %q: a %v op carrying %s", index, i, t.GetMeta().GetId(), kind, extra)
	}
	return nil
}

// applyTaskCreate builds the task a TASK_CREATE op stores: the op's task
// with the spec of its service as txn has it, which must exist at the
// task's spec_version (else a version conflict: the writer planned against
// another spec).
func applyTaskCreate(txn *tableTxn, svcs *serviceCache, index uint64, i int, o Object) (Object, error) {
	t, ok := o.(*shoalv1.Task)
	if !ok {
		return nil, fmt.Errorf("raft entry %d: op %d: a task create op for a %s", index, i, KindOf(o))
	}
	id := t.GetMeta().GetId()
	if t.Spec != nil {
		return nil, fmt.Errorf("raft entry %d: op %d: task %q: a task create op carrying spec", index, i, id)
	}
	if t.GetServiceId() == "" {
		return nil, fmt.Errorf("raft entry %d: op %d: task %q: a task create op without service_id", index, i, id)
	}
	svc, err := svcs.get(txn, t.GetServiceId())
	if err != nil {
		return nil, err
	}
	if svc == nil {
		return nil, fmt.Errorf("task %q: its service %q is gone: %w", id, t.GetServiceId(), ErrVersionConflict)
	}
	spec := svc.GetSpec().GetTask()
	if spec == nil || svc.GetSpecVersion() != t.GetSpecVersion() {
		return nil, fmt.Errorf("task %q: planned against spec version %d of service %q (current %d): %w",
			id, t.GetSpecVersion(), t.GetServiceId(), svc.GetSpecVersion(), ErrVersionConflict)
	}
	t.Spec = spec
	return t, nil
}

// applyTaskAssign builds the object a TASK_ASSIGN op stores: the stored
// task cur (whose version the caller checked) with the op's node and
// status and the op object's meta (the caller stamps it).
func applyTaskAssign(index uint64, i int, op *shoalv1.StoreOp, o, cur Object) (Object, error) {
	t, ok := o.(*shoalv1.Task)
	stored, ok2 := cur.(*shoalv1.Task)
	if !ok || !ok2 {
		return nil, fmt.Errorf("raft entry %d: op %d: a task assign op for a %s", index, i, KindOf(o))
	}
	if op.GetExpectedVersion() == 0 {
		return nil, fmt.Errorf("raft entry %d: op %d: task %q: an assign op without the version it applies to", index, i, t.GetMeta().GetId())
	}
	if t.GetNodeId() == "" {
		return nil, fmt.Errorf("raft entry %d: op %d: task %q: an assign op without node_id", index, i, t.GetMeta().GetId())
	}
	if err := onlyFields(index, i, op.GetKind(), t, "meta", "node_id", "status"); err != nil {
		return nil, err
	}
	return adoptStored(t, stored, t.NodeId), nil
}

// serviceCache holds the service the last TASK_CREATE op of an entry read:
// an entry creates up to thousands of tasks of one service, and the
// lookup is one per entry instead of one per task. applyAction empties it
// at any op on a service.
type serviceCache struct {
	id  string
	svc *shoalv1.Service
}

func (c *serviceCache) get(txn *tableTxn, id string) (*shoalv1.Service, error) {
	if c.id == id && c.svc != nil {
		return c.svc, nil
	}
	svc, _ := txn.get(KindService, id).(*shoalv1.Service)
	c.id, c.svc = id, svc
	return svc, nil
}
