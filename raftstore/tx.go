package raftstore

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// view is a Reader over a read transaction of the tables: an immutable
// snapshot that is safe to share between goroutines and costs nothing to
// keep.
type view struct {
	txn   *tableTxn
	index uint64
	// oldManagers is the fsm's count of managers not reporting StoreFormat
	// at this state: a write built on the view uses the compact entry
	// forms only when it is 0.
	oldManagers int
}

var _ Reader = (*view)(nil)

func (v *view) Index() uint64 { return v.index }

func (v *view) Get(kind Kind, id string) Object {
	return v.txn.get(kind, id)
}

func (v *view) List(kind Kind) []Object {
	var out []Object
	v.txn.ascendID(kind, "", func(o Object) bool { out = append(out, o); return true })
	return out
}

// Find returns nil for an index the kind does not have.
func (v *view) Find(kind Kind, index, value string) []Object {
	var out []Object
	if index == indexID {
		if o := v.txn.get(kind, value); o != nil {
			out = append(out, o)
		}
		return out
	}
	// A secondary index orders entries by value then id, so the result
	// is already sorted by id.
	v.txn.ascendIndex(kind, index, value, "", func(o Object) bool { out = append(out, o); return true })
	return out
}

func (v *view) withIDPrefix(kind Kind, prefix string) []Object {
	var out []Object
	v.txn.ascendID(kind, prefix, func(o Object) bool {
		if !strings.HasPrefix(o.GetMeta().GetId(), prefix) {
			return false
		}
		out = append(out, o)
		return true
	})
	return out
}

// objKey names one object.
type objKey struct {
	kind Kind
	id   string
}

// pendingOp is the net change a WriteTx makes to one object. Several calls
// on the same object collapse into one op, so that an entry carries at most
// one op (and produces one watch event) per object, and the version check
// is made once against the version read from the store.
type pendingOp struct {
	op       shoalv1.StoreOpKind
	obj      Object // nil for a delete
	expected uint64
	// form: obj is the base's task at version expected with only its
	// status (UpdateTaskStatus) or its node and status (AssignTask)
	// changed, so the entry may carry those alone. Any other write to the
	// object clears it.
	form compactForm
	// patch: for formPatch, what obj's spec changes of the stored one.
	patch *shoalv1.ServicePatch
}

// compactForm names the compact op a pending update may go out as.
type compactForm uint8

const (
	formWhole  compactForm = iota // the whole object
	formStatus                    // TASK_STATUS
	formAssign                    // TASK_ASSIGN
	formPatch                     // service UPDATE, STORED_SPEC_PATCHED
)

// writeTx overlays pending changes on a view. It is used by one goroutine,
// the one running the Update callback.
//
// Nothing is allocated for the overlay until the first write, and a small
// one is a slice searched in order, not a map: many transactions write
// nothing (an orchestrator pass reacting to an event it has nothing to do
// for), and most write one object (a service write, a status). The kinds
// written are a short list, not a map.
type writeTx struct {
	base *view
	// pending holds the changes in first-touch order, for a stable entry.
	pending []pendingEntry
	// byKey indexes pending once it holds more than smallTx changes (nil
	// until then).
	byKey   map[objKey]int
	touched []Kind // kinds written, each once (there are few kinds)
	// patched: the specs of the patch ops ops() wrote (patchedSpec).
	patched []patchedSpec
}

// pendingEntry is one object's pending change.
type pendingEntry struct {
	key objKey
	op  pendingOp
}

// smallTx is the most changes a tx looks up by scanning them.
const smallTx = 8

// lookup returns the pending change of k, if any. The pointer is valid
// until the next add or remove.
func (tx *writeTx) lookup(k objKey) (*pendingOp, bool) {
	if tx.byKey != nil {
		if i, ok := tx.byKey[k]; ok {
			return &tx.pending[i].op, true
		}
		return nil, false
	}
	for i := range tx.pending {
		if tx.pending[i].key == k {
			return &tx.pending[i].op, true
		}
	}
	return nil, false
}

var _ WriteTx = (*writeTx)(nil)

func newWriteTx(base *view) *writeTx {
	return &writeTx{base: base}
}

// hasTouched says whether the tx wrote an object of kind.
func (tx *writeTx) hasTouched(kind Kind) bool {
	return slices.Contains(tx.touched, kind)
}

func (tx *writeTx) Index() uint64 { return tx.base.Index() }

func (tx *writeTx) Get(kind Kind, id string) Object {
	if p, ok := tx.lookup(objKey{kind, id}); ok {
		return p.obj
	}
	return tx.base.Get(kind, id)
}

func (tx *writeTx) List(kind Kind) []Object {
	return tx.merge(kind, tx.base.List(kind), func(Object) bool { return true })
}

func (tx *writeTx) Find(kind Kind, index, value string) []Object {
	def := tableDefs[kind]
	if def == nil || def.indexes[index] == nil {
		return nil
	}
	fn := def.indexes[index]
	return tx.merge(kind, tx.base.Find(kind, index, value), func(o Object) bool {
		v, ok := fn(o)
		return ok && v == value
	})
}

func (tx *writeTx) withIDPrefix(kind Kind, prefix string) []Object {
	return tx.merge(kind, tx.base.withIDPrefix(kind, prefix), func(o Object) bool {
		return strings.HasPrefix(o.GetMeta().GetId(), prefix)
	})
}

// merge applies the overlay to base results: objects changed in the tx are
// replaced (or dropped if they no longer match), deleted ones dropped, new
// ones added when they match.
func (tx *writeTx) merge(kind Kind, base []Object, match func(Object) bool) []Object {
	if !tx.hasTouched(kind) {
		return base
	}
	out := make([]Object, 0, len(base))
	for _, o := range base {
		if _, ok := tx.lookup(objKey{kind, o.GetMeta().GetId()}); !ok {
			out = append(out, o)
		}
	}
	for i := range tx.pending {
		if p := &tx.pending[i].op; tx.pending[i].key.kind == kind && p.obj != nil && match(p.obj) {
			out = append(out, p.obj)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetMeta().GetId() < out[j].GetMeta().GetId() })
	return out
}

// Create adds o; an empty meta.id gets NewID(), written into o. The tx owns
// o from here on: the caller must not change it.
func (tx *writeTx) Create(o Object) error {
	kind, err := kindChecked(o)
	if err != nil {
		return err
	}
	m := ensureMeta(o)
	if m.Id == "" {
		m.Id = NewID()
	}
	k := objKey{kind, m.Id}
	if tx.Get(kind, m.Id) != nil {
		return errExists(kind, m.Id)
	}
	if err := tx.checkName(o, nil); err != nil {
		return err
	}
	if p, ok := tx.lookup(k); ok {
		// Deleted earlier in this tx: the net change replaces the object,
		// still guarded by the version the delete was checked against.
		p.op, p.obj, p.form, p.patch = shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE, o, formWhole, nil
		return nil
	}
	tx.add(k, pendingOp{op: shoalv1.StoreOpKind_STORE_OP_KIND_CREATE, obj: o})
	return nil
}

// Update replaces an object. o.meta.version must be the version read (0
// writes without a check, for internal writers holding no read version).
// The tx owns o from here on.
func (tx *writeTx) Update(o Object) error {
	kind, err := kindChecked(o)
	if err != nil {
		return err
	}
	id := o.GetMeta().GetId()
	cur := tx.Get(kind, id)
	if cur == o && tx.base.Get(kind, id) == o {
		// The caller changed the shared stored object in place, which also
		// corrupts every reader's view and the indexes.
		return fmt.Errorf("raftstore: %s %q: the stored object itself was passed to Update; Clone before changing", kind, id)
	}
	if err := checkCurrent(kind, id, o.GetMeta().GetVersion(), cur); err != nil {
		return err
	}
	if err := tx.checkName(o, cur); err != nil {
		return err
	}
	k := objKey{kind, id}
	if p, ok := tx.lookup(k); ok {
		p.obj, p.form, p.patch = o, formWhole, nil // a pending create stays a create; an update keeps its check
		return nil
	}
	tx.add(k, pendingOp{op: shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE, obj: o, expected: o.GetMeta().GetVersion()})
	return nil
}

// Delete removes an object; expectedVersion 0 skips the version check.
func (tx *writeTx) Delete(kind Kind, id string, expectedVersion uint64) error {
	if tableDefs[kind] == nil {
		return fmt.Errorf("raftstore: unknown kind %q", kind)
	}
	if err := checkCurrent(kind, id, expectedVersion, tx.Get(kind, id)); err != nil {
		return err
	}
	k := objKey{kind, id}
	if p, ok := tx.lookup(k); ok {
		if p.op == shoalv1.StoreOpKind_STORE_OP_KIND_CREATE {
			tx.remove(k) // created and deleted in the same tx: nothing to do
			return nil
		}
		p.op, p.obj, p.form, p.patch = shoalv1.StoreOpKind_STORE_OP_KIND_DELETE, nil, formWhole, nil
		return nil
	}
	tx.add(k, pendingOp{op: shoalv1.StoreOpKind_STORE_OP_KIND_DELETE, expected: expectedVersion})
	return nil
}

// add records the first change of k in the tx (the caller looked it up).
func (tx *writeTx) add(k objKey, p pendingOp) {
	tx.pending = append(tx.pending, pendingEntry{key: k, op: p})
	switch n := len(tx.pending); {
	case tx.byKey != nil:
		tx.byKey[k] = n - 1
	case n > smallTx:
		tx.index()
	}
	if !tx.hasTouched(k.kind) {
		tx.touched = append(tx.touched, k.kind)
	}
}

// index builds byKey from pending.
func (tx *writeTx) index() {
	tx.byKey = make(map[objKey]int, 2*len(tx.pending))
	for i, e := range tx.pending {
		tx.byKey[e.key] = i
	}
}

func (tx *writeTx) remove(k objKey) {
	for i := range tx.pending {
		if tx.pending[i].key == k {
			tx.pending = append(tx.pending[:i], tx.pending[i+1:]...)
			break
		}
	}
	if tx.byKey != nil {
		tx.index() // the positions after k moved
	}
}

// checkName fails when o would take a unique name another object holds, as
// the tx sees the store. cur is the object o replaces as the tx sees it
// (nil for a create): when it already holds the name, no other object can
// (every write the tx or the FSM accepts keeps names unique), so the name
// index is not searched — an update that keeps its name (every service
// update: UpdateService refuses a rename) costs no lookup and no slice.
// cur being o itself (an object the tx holds pending, changed in place by
// its caller) proves nothing: its name is already o's new one, so the
// index is searched (TestUpdateOfAPendingObjectChangedInPlaceIsChecked).
func (tx *writeTx) checkName(o, cur Object) error {
	kind := KindOf(o)
	if !tableDefs[kind].uniqueName {
		return nil
	}
	name, ok := nameOf(o)
	if !ok {
		return nil
	}
	if cur != nil && cur != o {
		if held, ok := nameOf(cur); ok && held == name {
			return nil
		}
	}
	for _, other := range tx.Find(kind, IndexName, name) {
		if other.GetMeta().GetId() != o.GetMeta().GetId() {
			return errNameInUse(kind, name)
		}
	}
	return nil
}

// ops returns the tx's changes as log ops, in first-touch order: in the
// compact forms while every manager reads them (tx.base.oldManagers == 0).
// The specs of its patch ops are left in tx.patched. Called once.
func (tx *writeTx) ops() []*shoalv1.StoreOp {
	out := make([]*shoalv1.StoreOp, 0, len(tx.pending))
	compact := tx.base.oldManagers == 0
	for i := range tx.pending {
		k, p := tx.pending[i].key, &tx.pending[i].op
		if compact {
			switch {
			case p.op == shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE && p.form == formStatus:
				out = append(out, statusOp(k.id, p.expected, p.obj.(*shoalv1.Task).GetStatus()))
				continue
			case p.op == shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE && p.form == formPatch:
				svc := p.obj.(*shoalv1.Service)
				if isPatchOf(svc.Spec, svc.PreviousSpec, p.patch) { // still as PatchService left it
					tx.patched = append(tx.patched, patchedSpec{op: len(out), base: svc.PreviousSpec, spec: svc.Spec})
				}
				out = append(out, patchOp(svc, p.expected, p.patch))
				continue
			case p.op == shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE && p.form == formAssign:
				t := p.obj.(*shoalv1.Task)
				out = append(out, assignOp(k.id, p.expected, t.GetNodeId(), t.GetStatus()))
				continue
			case p.op == shoalv1.StoreOpKind_STORE_OP_KIND_CREATE && k.kind == KindTask:
				t := p.obj.(*shoalv1.Task)
				svc, written := tx.serviceBefore(i, t.GetServiceId())
				if !written {
					svc, _ = tx.base.Get(KindService, t.GetServiceId()).(*shoalv1.Service)
				}
				if compactCreate(t, svc) {
					out = append(out, createOp(t))
					continue
				}
			}
		}
		obj := p.obj
		if obj == nil {
			obj = newObject(k.kind, k.id) // a delete needs only kind and id
		}
		src := shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_IN_OBJECT
		if p.op == shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE && compact {
			obj, src = elidePreviousSpec(obj, p.expected, tx.base.Get(k.kind, k.id))
		}
		out = append(out, &shoalv1.StoreOp{Kind: p.op, Object: Wrap(obj), ExpectedVersion: p.expected, PreviousSpecSource: src})
	}
	return out
}

// serviceBefore returns the service id as the entry's ops before op i
// leave it, as the FSM will have it when it applies op i (nil: deleted);
// written is false when none of them writes it.
func (tx *writeTx) serviceBefore(i int, id string) (svc *shoalv1.Service, written bool) {
	k := objKey{KindService, id}
	if tx.byKey != nil {
		j, ok := tx.byKey[k]
		if !ok || j >= i {
			return nil, false
		}
		svc, _ = tx.pending[j].op.obj.(*shoalv1.Service)
		return svc, true
	}
	for j := range tx.pending[:i] {
		if tx.pending[j].key == k {
			svc, _ = tx.pending[j].op.obj.(*shoalv1.Service)
			return svc, true
		}
	}
	return nil, false
}

func kindChecked(o Object) (Kind, error) {
	kind := KindOf(o)
	if kind == "" {
		return "", fmt.Errorf("raftstore: cannot store a %T", o)
	}
	if isNilPointer(o) {
		return "", fmt.Errorf("raftstore: nil %s", kind)
	}
	return kind, nil
}

// isNilPointer reports whether o is a typed nil pointer of a stored kind.
func isNilPointer(o Object) bool {
	switch v := o.(type) {
	case *shoalv1.Cluster:
		return v == nil
	case *shoalv1.Node:
		return v == nil
	case *shoalv1.Service:
		return v == nil
	case *shoalv1.Task:
		return v == nil
	case *shoalv1.Network:
		return v == nil
	}
	return o == nil
}
