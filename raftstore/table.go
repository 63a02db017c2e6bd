package raftstore

import (
	"fmt"
	"sync/atomic"

	"github.com/google/btree"
)

// The store's tables: one copy-on-write B-tree per table for the objects,
// keyed by id, and one per secondary index holding only keys (value, id),
// which reads resolve through the id tree. They replace go-memdb, whose
// radix trees cost a task write a path copy in every index (a channel per
// copied node, an LRU of writable nodes) and ~3 KB of radix nodes per
// stored task. Here a write re-inserts a secondary key only when that
// index's value changed, so a status report touches the id tree alone, and
// a stored task costs about 32 bytes per index entry (docs/performance.md).
//
// Concurrency: a published tableRoot is never written again. A write txn
// clones (btree.Clone, O(1), lazily copying the nodes it changes) a tree on
// its first write to it, and Commit publishes the txn's root. Only one
// goroutine writes (the FSM's); btree's contract allows reading the
// original tree while it is cloned and while its clone is written, so
// views are consistent and isolated from later writes for free.

// tableDegree is the B-trees' degree (nodes of 31 to 63 items of 32
// bytes). BenchmarkTableTaskWrites allocated within 2 % at 16, 32 and 64
// (their times could not be told apart on a loaded machine); 32 keeps a
// copied node at 2 KiB and 100,000 keys 3 levels deep.
const tableDegree = 32

// primaryItem is an object keyed by its id.
type primaryItem struct {
	id  string
	obj Object
}

// secondaryItem is a key of a secondary index: the object's value in the
// index and its id (both the object's own strings: no allocation), in
// (value, id) order, so one value's objects are contiguous and in id order.
type secondaryItem struct {
	val, id string
}

func lessPrimary(a, b primaryItem) bool { return a.id < b.id }

func lessSecondary(a, b secondaryItem) bool {
	return a.val < b.val || (a.val == b.val && a.id < b.id)
}

// tableState is one table at one state: the id tree and the secondary
// index trees, in the order of tableDef.secondary.
type tableState struct {
	def       *tableDef
	primary   *btree.BTreeG[primaryItem]
	secondary []*btree.BTreeG[secondaryItem]
}

// tableRoot is the whole state: immutable once committed.
type tableRoot struct {
	tables map[Kind]*tableState
}

// tableDB holds the committed state. Readers take it with Txn(false) from
// any goroutine; one goroutine at a time writes.
type tableDB struct {
	root atomic.Pointer[tableRoot]
}

// newMemDB returns an empty database.
func newMemDB() *tableDB {
	r := &tableRoot{tables: make(map[Kind]*tableState, len(tableDefs))}
	for kind, def := range tableDefs {
		ts := &tableState{def: def, primary: btree.NewG(tableDegree, lessPrimary)}
		for range def.secondary {
			ts.secondary = append(ts.secondary, btree.NewG(tableDegree, lessSecondary))
		}
		r.tables[kind] = ts
	}
	db := &tableDB{}
	db.root.Store(r)
	return db
}

// Txn starts a read (write=false: a consistent view of the committed
// state, safe to share and free to keep) or write transaction.
func (db *tableDB) Txn(write bool) *tableTxn {
	r := db.root.Load()
	if !write {
		return &tableTxn{root: r}
	}
	own := &tableRoot{tables: make(map[Kind]*tableState, len(r.tables))}
	for k, ts := range r.tables {
		own.tables[k] = ts
	}
	return &tableTxn{db: db, root: own, owned: map[Kind]*ownedTable{}}
}

// ownedTable records which trees of a table a write txn has cloned.
type ownedTable struct {
	ts        *tableState // the txn's copy of the table
	primary   bool
	secondary []bool
}

// tableTxn is a read or write transaction. A write txn is used by one
// goroutine; a read txn by any number.
type tableTxn struct {
	db    *tableDB // nil for a read txn
	root  *tableRoot
	owned map[Kind]*ownedTable
	done  bool
}

func (tx *tableTxn) table(kind string) (*tableState, error) {
	ts := tx.root.tables[Kind(kind)]
	if ts == nil {
		return nil, fmt.Errorf("raftstore: unknown table %q", kind)
	}
	return ts, nil
}

// get returns the object of kind with id, nil if none.
func (tx *tableTxn) get(kind Kind, id string) Object {
	ts := tx.root.tables[kind]
	if ts == nil {
		return nil
	}
	it, ok := ts.primary.Get(primaryItem{id: id})
	if !ok {
		return nil
	}
	return it.obj
}

// ascendID calls fn for each object of kind whose id is >= from, in id
// order, until fn returns false.
func (tx *tableTxn) ascendID(kind Kind, from string, fn func(Object) bool) {
	ts := tx.root.tables[kind]
	if ts == nil {
		return
	}
	ts.primary.AscendGreaterOrEqual(primaryItem{id: from}, func(it primaryItem) bool { return fn(it.obj) })
}

// ascendIndex calls fn for each object whose value in the secondary index
// is val and whose id is >= from, in id order, until fn returns false. It
// reports false for an index the kind does not have.
func (tx *tableTxn) ascendIndex(kind Kind, index, val, from string, fn func(Object) bool) bool {
	ts := tx.root.tables[kind]
	if ts == nil {
		return false
	}
	i := ts.def.secondaryPos(index)
	if i < 0 {
		return false
	}
	ts.secondary[i].AscendGreaterOrEqual(secondaryItem{val: val, id: from}, func(it secondaryItem) bool {
		if it.val != val {
			return false
		}
		o, ok := ts.primary.Get(primaryItem{id: it.id})
		if !ok {
			// A key without its object would be a bug of Insert/Delete;
			// the differential test checks they cannot part.
			panic(fmt.Sprintf("raftstore: %s index %s holds %q=%q, not in the table", kind, index, it.val, it.id))
		}
		return fn(o.obj)
	})
	return true
}

// First returns the first object of table whose index has args[0] (indexID:
// the object with that id); nil when none. First and Get are the tests'
// window on the tables (the shape of go-memdb's, which they were written
// against); the store itself reads through get, ascendID and ascendIndex.
func (tx *tableTxn) First(table, index string, args ...string) (Object, error) {
	var out Object
	err := tx.walk(table, index, args, func(o Object) bool { out = o; return false })
	return out, err
}

// Get returns an iterator over the objects of table in index order:
// every object of the index with no argument, those with value args[0]
// with one.
func (tx *tableTxn) Get(table, index string, args ...string) (*tableIter, error) {
	it := &tableIter{}
	if err := tx.walk(table, index, args, func(o Object) bool { it.objs = append(it.objs, o); return true }); err != nil {
		return nil, err
	}
	return it, nil
}

func (tx *tableTxn) walk(table, index string, args []string, fn func(Object) bool) error {
	ts, err := tx.table(table)
	if err != nil {
		return err
	}
	kind := Kind(table)
	if len(args) > 1 {
		return fmt.Errorf("raftstore: index lookup takes at most one argument, got %d", len(args))
	}
	switch {
	case index == indexID && len(args) == 0:
		tx.ascendID(kind, "", fn)
	case index == indexID:
		if o := tx.get(kind, args[0]); o != nil {
			fn(o)
		}
	case len(args) == 0:
		i := ts.def.secondaryPos(index)
		if i < 0 {
			return fmt.Errorf("raftstore: table %q has no index %q", table, index)
		}
		ts.secondary[i].Ascend(func(it secondaryItem) bool {
			o, _ := ts.primary.Get(primaryItem{id: it.id})
			return fn(o.obj)
		})
	default:
		if !tx.ascendIndex(kind, index, args[0], "", fn) {
			return fmt.Errorf("raftstore: table %q has no index %q", table, index)
		}
	}
	return nil
}

// writable returns the txn's own copy of a table, cloning the table record
// on the txn's first write to it (its trees are cloned one by one, on
// their first write: a write that leaves an index's value alone does not
// clone that index).
func (tx *tableTxn) writable(table string) (*ownedTable, error) {
	if tx.db == nil || tx.done {
		return nil, fmt.Errorf("raftstore: write to a read-only or finished transaction")
	}
	kind := Kind(table)
	if ot := tx.owned[kind]; ot != nil {
		return ot, nil
	}
	ts, err := tx.table(table)
	if err != nil {
		return nil, err
	}
	cp := &tableState{def: ts.def, primary: ts.primary, secondary: append([]*btree.BTreeG[secondaryItem](nil), ts.secondary...)}
	ot := &ownedTable{ts: cp, secondary: make([]bool, len(cp.secondary))}
	tx.owned[kind] = ot
	tx.root.tables[kind] = cp
	return ot, nil
}

func (ot *ownedTable) primaryTree() *btree.BTreeG[primaryItem] {
	if !ot.primary {
		ot.ts.primary = ot.ts.primary.Clone()
		ot.primary = true
	}
	return ot.ts.primary
}

func (ot *ownedTable) secondaryTree(i int) *btree.BTreeG[secondaryItem] {
	if !ot.secondary[i] {
		ot.ts.secondary[i] = ot.ts.secondary[i].Clone()
		ot.secondary[i] = true
	}
	return ot.ts.secondary[i]
}

// Insert stores o in table, replacing the object with its id. A secondary
// index is written only where o's value differs from the replaced
// object's.
func (tx *tableTxn) Insert(table string, o Object) error {
	id := o.GetMeta().GetId()
	if id == "" {
		return fmt.Errorf("raftstore: inserting a %s without meta.id", table)
	}
	ot, err := tx.writable(table)
	if err != nil {
		return err
	}
	if KindOf(o) != Kind(table) {
		return fmt.Errorf("raftstore: cannot insert a %T in table %q", o, table)
	}
	old, replaced := ot.primaryTree().ReplaceOrInsert(primaryItem{id: id, obj: o})
	for i, ix := range ot.ts.def.secondary {
		nv, nok := ix.fn(o)
		var ov string
		var ook bool
		if replaced {
			ov, ook = ix.fn(old.obj)
		}
		if nok == ook && (!nok || nv == ov) {
			continue // in neither, or under the same value
		}
		t := ot.secondaryTree(i)
		if ook {
			t.Delete(secondaryItem{val: ov, id: id})
		}
		if nok {
			t.ReplaceOrInsert(secondaryItem{val: nv, id: id})
		}
	}
	return nil
}

// Delete removes the object with o's id from table, and its index keys as
// the stored object has them.
func (tx *tableTxn) Delete(table string, o Object) error {
	id := o.GetMeta().GetId()
	ot, err := tx.writable(table)
	if err != nil {
		return err
	}
	old, ok := ot.primaryTree().Delete(primaryItem{id: id})
	if !ok {
		return fmt.Errorf("raftstore: %s %q: not found", table, id)
	}
	for i, ix := range ot.ts.def.secondary {
		if v, ok := ix.fn(old.obj); ok {
			ot.secondaryTree(i).Delete(secondaryItem{val: v, id: id})
		}
	}
	return nil
}

// Commit publishes a write txn's state; a read txn has nothing to commit.
func (tx *tableTxn) Commit() {
	if tx.db == nil || tx.done {
		return
	}
	tx.done = true
	tx.db.root.Store(tx.root)
}

// Abort drops a write txn's changes (the published state never saw them).
func (tx *tableTxn) Abort() { tx.done = true }

// tableIter iterates over a Get's result.
type tableIter struct {
	objs []Object
	i    int
}

// Next returns the next object, nil at the end.
func (it *tableIter) Next() Object {
	if it.i >= len(it.objs) {
		return nil
	}
	o := it.objs[it.i]
	it.i++
	return o
}
