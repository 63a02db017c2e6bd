package raftstore

import (
	"maps"
	"slices"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// indexID is the primary index of every table: meta.id, unique.
const indexID = "id"

// indexFunc extracts the value an object has in one index. ok=false leaves
// the object out of that index (for example a service without a name).
type indexFunc func(Object) (value string, ok bool)

// tableDef describes one table. The same index functions feed the tables
// (table.go) and the overlay of a WriteTx, so both always agree on what Find matches.
type tableDef struct {
	kind Kind
	// indexes maps index name to extractor; it includes indexID.
	indexes map[string]indexFunc
	// uniqueName: no two objects may share a non-empty IndexName value.
	// The tables' secondary indexes are all non-unique (keys are value and
	// id), so the rule is checked by WriteTx and again by the FSM.
	uniqueName bool
	// secondary lists the indexes other than indexID (set by init).
	secondary []secondaryIndex
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
	// A task has only the indexes that something looks up: no
	// desired-state index, and only pending tasks in the state index
	// (TestTaskIndexesAreRead), so that a task's life writes few index
	// keys (a write touches an index only when its value changes).
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

// secondaryIndex is one secondary index of a table: its name and
// extractor.
type secondaryIndex struct {
	name string
	fn   indexFunc
}

// init derives each table's secondary indexes, in name order (so every
// replica builds the same trees in the same order), from its indexes.
func init() {
	for _, def := range tableDefs {
		for _, name := range slices.Sorted(maps.Keys(def.indexes)) {
			if name != indexID {
				def.secondary = append(def.secondary, secondaryIndex{name: name, fn: def.indexes[name]})
			}
		}
	}
}

// secondaryPos is the position of a secondary index in def.secondary, -1
// for none.
func (def *tableDef) secondaryPos(index string) int {
	for i, ix := range def.secondary {
		if ix.name == index {
			return i
		}
	}
	return -1
}
