package raftstore

import (
	"fmt"

	"github.com/hashicorp/go-memdb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// indexID is the primary index of every table: meta.id, unique.
const indexID = "id"

// indexFunc extracts the value an object has in one index. ok=false leaves
// the object out of that index (for example a service without a name).
type indexFunc func(Object) (value string, ok bool)

// tableDef describes one table. The same index functions feed memdb and the
// overlay of a WriteTx, so both always agree on what Find matches.
type tableDef struct {
	kind Kind
	// indexes maps index name to extractor; it includes indexID.
	indexes map[string]indexFunc
	// uniqueName: no two objects may share a non-empty IndexName value.
	// memdb does not enforce uniqueness of secondary indexes (a duplicate
	// would silently corrupt a unique index), so the index is stored as
	// non-unique and the rule is checked by WriteTx and again by the FSM.
	uniqueName bool
}

var tableDefs = map[Kind]*tableDef{
	KindCluster: {kind: KindCluster, indexes: map[string]indexFunc{indexID: idOf}},
	KindNode: {kind: KindNode, indexes: map[string]indexFunc{
		indexID: idOf,
		IndexName: func(o Object) (string, bool) {
			n := o.(*shoalv1.Node)
			name := n.GetSpec().GetName()
			if name == "" {
				name = n.GetDescription().GetHostname()
			}
			return name, name != ""
		},
	}},
	KindService: {kind: KindService, uniqueName: true, indexes: map[string]indexFunc{
		indexID: idOf,
		IndexName: func(o Object) (string, bool) {
			name := o.(*shoalv1.Service).GetSpec().GetName()
			return name, name != ""
		},
	}},
	// Every write of a task re-inserts it in each of its indexes (a path
	// copy in each radix tree: the bulk of the FSM's apply time when
	// 100,000 tasks are scheduled), so a task has only the indexes that
	// something looks up: no desired-state index, and only pending tasks
	// in the state index (TestTaskIndexesAreRead).
	KindTask: {kind: KindTask, indexes: map[string]indexFunc{
		indexID: idOf,
		// An empty service id is indexed too. An empty node id is not:
		// nothing looks up the tasks without a node by node (the
		// scheduler finds them in the state index), and leaving them out
		// saves every created task an insert and every assignment a
		// delete in this index (TestNodeIndexLeavesOutUnassigned).
		IndexServiceID: func(o Object) (string, bool) { return o.(*shoalv1.Task).GetServiceId(), true },
		IndexNodeID: func(o Object) (string, bool) {
			id := o.(*shoalv1.Task).GetNodeId()
			return id, id != ""
		},
		// Only PENDING tasks are in the state index: the scheduler and
		// the allocator look up the tasks waiting for them, and nothing
		// looks up another state, so a task leaves the index when it is
		// assigned and its agent's reports (ACCEPTED, RUNNING, its end)
		// do not touch it.
		IndexState: func(o Object) (string, bool) {
			st := o.(*shoalv1.Task).GetStatus().GetState()
			return st.String(), st == shoalv1.TaskState_TASK_STATE_PENDING
		},
	}},
	KindNetwork: {kind: KindNetwork, uniqueName: true, indexes: map[string]indexFunc{
		indexID: idOf,
		IndexName: func(o Object) (string, bool) {
			name := o.(*shoalv1.Network).GetSpec().GetName()
			return name, name != ""
		},
	}},
}

func idOf(o Object) (string, bool) {
	id := o.GetMeta().GetId()
	return id, id != ""
}

// nameOf returns an object's IndexName value, if its kind has that index.
func nameOf(o Object) (string, bool) {
	def := tableDefs[KindOf(o)]
	if def == nil {
		return "", false
	}
	fn := def.indexes[IndexName]
	if fn == nil {
		return "", false
	}
	return fn(o)
}

// newSchema builds the memdb schema from tableDefs.
func newSchema() *memdb.DBSchema {
	s := &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{}}
	for kind, def := range tableDefs {
		ts := &memdb.TableSchema{Name: string(kind), Indexes: map[string]*memdb.IndexSchema{}}
		for name, fn := range def.indexes {
			ts.Indexes[name] = &memdb.IndexSchema{
				Name:         name,
				Unique:       name == indexID,
				AllowMissing: name != indexID,
				Indexer:      funcIndexer{fn: fn, nonUnique: name != indexID},
			}
		}
		s.Tables[string(kind)] = ts
	}
	return s
}

// newMemDB returns an empty database without memdb's watch channels: the
// store never waits on them (its watches are the hub's), and keeping them
// cost every write a walk of the whole of each index it touched once the
// write changed more than 8,192 radix nodes (go-immutable-radix's
// slowNotify), which an entry of 1,000 tasks does: 22 % of the CPU and most
// of each entry's apply time when scheduling 100,000 tasks. memdb tracks
// mutations only in its primary database, not in a snapshot of it, so the
// store works on an (empty) snapshot.
func newMemDB() *memdb.MemDB {
	db, err := memdb.NewMemDB(newSchema())
	if err != nil {
		// The schema is static; failing here is a programming error.
		panic(fmt.Sprintf("raftstore: invalid memdb schema: %v", err))
	}
	return db.Snapshot()
}

// funcIndexer adapts an indexFunc to memdb. Keys are the value followed by a
// NUL, so that an exact lookup of "ab" does not match "abc"; prefix lookups
// (used to resolve id prefixes) leave the NUL off.
type funcIndexer struct {
	fn indexFunc
	// nonUnique: memdb appends the object's primary key (its id and a
	// NUL) to this index's key, for the new and for the replaced object
	// of every write. The key is allocated with room for it, so that
	// append does not copy it again: two allocations fewer per
	// secondary index per task write (TestSecondaryKeyHasRoomForTheID).
	nonUnique bool
}

func (x funcIndexer) FromObject(raw any) (bool, []byte, error) {
	o, ok := raw.(Object)
	if !ok {
		return false, nil, fmt.Errorf("raftstore: cannot index a %T", raw)
	}
	v, ok := x.fn(o)
	if !ok {
		return false, nil, nil
	}
	n := len(v) + 1
	if x.nonUnique {
		n += len(o.GetMeta().GetId()) + 1
	}
	key := append(make([]byte, 0, n), v...)
	return true, append(key, 0), nil
}

func (x funcIndexer) FromArgs(args ...any) ([]byte, error) {
	v, err := oneString(args)
	if err != nil {
		return nil, err
	}
	return append([]byte(v), 0), nil
}

func (x funcIndexer) PrefixFromArgs(args ...any) ([]byte, error) {
	v, err := oneString(args)
	if err != nil {
		return nil, err
	}
	return []byte(v), nil
}

func oneString(args []any) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("raftstore: index lookup takes one argument, got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return "", fmt.Errorf("raftstore: index lookup takes a string, got %T", args[0])
	}
	return s, nil
}
