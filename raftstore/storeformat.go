package raftstore

import (
	"errors"
	"fmt"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// The store-format gate. A manager of the previous release applies an
// entry of a newer form wrongly (it ignores the unknown previous_spec_source
// and stores the service without previous_spec), and its state then drifts
// from the others'. So the leader writes the compact forms only while every
// manager node of the cluster reports StoreFormat in its description: the
// FSM counts the manager nodes that do not, and a write built on a view
// whose count is not 0 keeps every previous_spec in the entry.
//
// The count is kept incrementally, O(1) per node object an entry writes (a
// large cluster writes node objects all the time), and recomputed from the
// state on a snapshot restore. It depends only on the state, so it is the
// same on every replica; and it only chooses what the leader writes: every
// replica of this release reads both forms, so entries replay identically
// whichever form they were written in.

// oldManager reports whether n counts against the gate: a node that is or
// is meant to be a manager (its certificate's role or the wanted one: a
// promoted node joins raft before its certificate changes, a demoted one
// leaves it after) and does not report StoreFormat — a node that has not
// reported a description yet included, so the gate fails closed.
func oldManager(n *shoalv1.Node) bool {
	if n == nil {
		return false
	}
	manager := n.GetRole() == shoalv1.NodeRole_NODE_ROLE_MANAGER ||
		n.GetSpec().GetDesiredRole() == shoalv1.NodeRole_NODE_ROLE_MANAGER
	return manager && n.GetDescription().GetStoreFormat() < StoreFormat
}

// oldManagersDelta is the change an applied entry makes to the count: for
// every node it touched, the node as txn (the entry applied, not yet
// committed) has it against the node as db (the state before the entry)
// had it. events are the entry's; an entry without node events costs one
// pass over them.
func oldManagersDelta(db *tableDB, txn *tableTxn, events []*shoalv1.WatchEvent) int {
	var before *tableTxn
	var first string
	var seen map[string]bool // made at the second node: most entries touch one
	delta := 0
	for _, ev := range events {
		n := ev.GetObject().GetNode()
		if n == nil {
			continue
		}
		id := n.GetMeta().GetId()
		if before == nil {
			before, first = db.Txn(false), id
		} else {
			if seen == nil {
				seen = map[string]bool{first: true}
			}
			if seen[id] {
				continue // an entry may touch a node twice; count it once
			}
			seen[id] = true
		}
		delta += b2i(oldManager(nodeIn(txn, id))) - b2i(oldManager(nodeIn(before, id)))
	}
	return delta
}

// countOldManagers counts from scratch (snapshot restore).
func countOldManagers(db *tableDB) int {
	n := 0
	db.Txn(false).ascendID(KindNode, "", func(o Object) bool {
		n += b2i(oldManager(o.(*shoalv1.Node)))
		return true
	})
	return n
}

func nodeIn(txn *tableTxn, id string) *shoalv1.Node {
	n, _ := txn.get(KindNode, id).(*shoalv1.Node)
	return n
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// dataDirFormatKey names, in raft.db's stable store, the newest StoreFormat
// of a binary that has opened the data dir. A manager of format N may hold
// entries of format N in its log as soon as every manager reports N, and a
// binary of an older format refuses those entries as unknown ops at replay
// (silently drifting from its peers), so a data dir marked newer than the
// binary is refused at open instead: downgrading a data dir is not
// supported. Data dirs of releases before the mark carry none and open.
var dataDirFormatKey = []byte("ShoalStoreFormat")

// formatStable is the part of raft's stable store the mark needs.
type formatStable interface {
	GetUint64(key []byte) (uint64, error)
	SetUint64(key []byte, val uint64) error
}

// checkDataDirFormat refuses a data dir marked by a binary of a newer
// StoreFormat than this one (at dir, for the message) and otherwise marks it
// with this binary's format. errNotFound is the stable store's "no such
// key" error.
func checkDataDirFormat(st formatStable, dir string, errNotFound error) error {
	marked, err := st.GetUint64(dataDirFormatKey)
	switch {
	case errors.Is(err, errNotFound):
		marked = 0
	case err != nil:
		return fmt.Errorf("reading the data dir's store format: %w", err)
	}
	if marked > StoreFormat {
		return fmt.Errorf("data dir %s was written by a newer shoal (store format %d; this binary reads up to %d): downgrading a manager's data dir is not supported — run the newer binary, or remove the node from the cluster and join it again with an empty data dir", dir, marked, StoreFormat)
	}
	if marked < StoreFormat {
		if err := st.SetUint64(dataDirFormatKey, StoreFormat); err != nil {
			return fmt.Errorf("marking the data dir's store format: %w", err)
		}
	}
	return nil
}
