package raftstore

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Raft hands the FSM the entries committed together (up to
// MaxAppendEntries of them) in one ApplyBatch call. Applying each in a
// transaction of its own pays, per entry, a transaction (a clone of each
// tree it writes, whose nodes near the root it then copies), a commit and
// the lock; 256
// writers' entries arrive ~7 to an append (docs/performance.md). A batch
// is applied in one transaction instead: the nodes near the roots are
// copied once per batch, not once per entry, and there is one commit.
//
// What readers see is unchanged: the applied index moves to the batch's
// last entry in the same critical section as the commit, so a view still
// holds exactly the entries up to its index; events are published per
// entry, in index order, after the commit, so a subscriber that sees index
// i and then takes a view gets a state that includes i; each entry gets
// its own result (nil, or its error).
//
// An entry that fails (version conflict, name in use, undecodable) must
// leave no trace while the others apply. Failures are rare, so entries are
// applied optimistically and a failed one is undone inside the
// transaction (undo): every object its ops name is put back as it was
// before the entry. That costs the failed entry's ops, where aborting and
// replaying the batch would cost every entry before it.

// maxTxnOps bounds the ops applied in one transaction of a batch: the
// scheduler's entries carry up to a thousand tasks each, and a batch of
// them in one transaction would hold the applied index (and so every
// waiting writer and reader) still for the whole batch. A batch goes on
// in a new transaction after the entry that reaches it.
const maxTxnOps = 8192

var _ raft.BatchingFSM = (*fsm)(nil)

// batchEntry is one entry of a transaction of a batch, awaiting the
// commit.
type batchEntry struct {
	log    *raft.Log
	events []*shoalv1.WatchEvent
	prevs  []Object // ringEntry.prev of each event (nil: none)
	// took is the entry's own apply time (when onApply is set).
	took time.Duration
}

// ApplyBatch applies committed entries (commands and configuration
// changes, in index order, without gaps) in as few transactions as
// maxTxnOps allows, and returns each entry's result in its slot. It is
// deterministic like Apply: every replica ends in the same state and
// returns the same results whatever batches raft cut the log into
// (TestApplyBatchMatchesApply).
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	res := make([]any, len(logs))
	for done := 0; done < len(logs); {
		done += f.applyTxn(logs[done:], res[done:])
	}
	return res
}

// applyTxn applies entries from the head of logs in one transaction, until
// logs end or an entry brings the transaction to maxTxnOps ops, commits,
// publishes, and returns how many entries it took (at least one).
func (f *fsm) applyTxn(logs []*raft.Log, res []any) int {
	limit := f.txnOps
	wantPrev := f.hub.wantsPrev()
	if limit <= 0 {
		limit = maxTxnOps
	}
	txn := f.db.Txn(true)
	var (
		entries   = make([]batchEntry, 0, len(logs))
		nodeEvs   []*shoalv1.WatchEvent // every node event, for the old-manager count
		undoState *batchUndo
		ops       int
	)
	for _, l := range logs {
		if ops >= limit {
			break
		}
		e := batchEntry{log: l}
		if l.Type != raft.LogCommand {
			// A configuration entry only moves the applied index
			// (StoreConfiguration's rule); membership is raft's.
			entries = append(entries, e)
			continue
		}
		var start time.Time
		if f.onApply != nil {
			start = time.Now()
		}
		i := len(entries)
		act, specs, err := f.decodeProposed(l.Data)
		if err != nil {
			f.log.Error("undecodable raft entry skipped", "index", l.Index, "err", err)
			res[i] = fmt.Errorf("raft entry %d: decoding the store action: %w", l.Index, err)
		} else {
			ops += len(act.GetOps())
			events, prevs, err := applyProposed(txn, act, l.Index, specs, wantPrev)
			if err == nil {
				e.events, e.prevs = events, prevs
				for _, ev := range events {
					if ev.GetObject().GetNode() != nil {
						nodeEvs = append(nodeEvs, ev)
					}
				}
			} else {
				res[i] = err
				if undoState == nil {
					undoState = &batchUndo{before: f.db.Txn(false), written: map[objKey]Object{}}
				}
				undoState.record(entries)
				if uerr := f.undo(txn, act, undoState); uerr != nil {
					// Cannot happen with the tables (putting back a
					// stored object cannot fail), but if it did the
					// transaction holds a partial entry: drop it and
					// apply these entries one by one instead.
					txn.Abort()
					f.log.Error("undoing a failed raft entry inside a batch; applying the batch entry by entry", "index", l.Index, "err", uerr)
					n := len(entries) + 1
					f.applyEach(logs[:n], res[:n])
					return n
				}
			}
		}
		if f.onApply != nil {
			e.took = time.Since(start)
		}
		entries = append(entries, e)
	}

	start := time.Now()
	// The count's change over the whole transaction is the sum of its
	// entries' (each entry's change of a node telescopes from the state
	// before the transaction to the state after it), and nobody sees the
	// state between two entries of one transaction.
	delta := oldManagersDelta(f.db, txn, nodeEvs)
	last := entries[len(entries)-1].log.Index
	f.mu.Lock()
	txn.Commit()
	f.oldManagers += delta
	f.setAppliedLocked(last)
	f.mu.Unlock()
	for i, e := range entries {
		f.hub.publishEntry(e.events, e.prevs, e.log.Index)
		if e.log.Type == raft.LogCommand {
			f.markApplied(e.log, res[i])
		}
	}
	if f.onApply != nil {
		// Each entry is charged its own apply and an equal share of the
		// commit and the publishing.
		share := time.Since(start) / time.Duration(len(entries))
		for _, e := range entries {
			if e.log.Type == raft.LogCommand {
				f.onApply(e.took + share)
			}
		}
	}
	return len(entries)
}

// applyEach applies logs one transaction per entry (Apply's way), after a
// batch transaction had to be dropped.
func (f *fsm) applyEach(logs []*raft.Log, res []any) {
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			res[i] = f.Apply(l)
		} else {
			f.StoreConfiguration(l.Index, raft.Configuration{})
			res[i] = nil
		}
	}
}

// batchUndo knows, for a failed entry inside a transaction, what each
// object was before that entry: as the transaction's earlier entries wrote
// it (written: the last write of each, nil for a delete), else as the
// state before the transaction had it (before).
type batchUndo struct {
	before  *tableTxn
	written map[objKey]Object
	// seen is how many of the transaction's entries written covers.
	seen int
}

// record adds the writes of entries not yet covered.
func (u *batchUndo) record(entries []batchEntry) {
	for _, e := range entries[u.seen:] {
		for _, ev := range e.events {
			o := Unwrap(ev.GetObject())
			k := objKey{KindOf(o), o.GetMeta().GetId()}
			if ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE {
				u.written[k] = nil
			} else {
				u.written[k] = o
			}
		}
	}
	u.seen = len(entries)
}

// prior is the object k named before the failed entry (nil: none).
func (u *batchUndo) prior(k objKey) (Object, error) {
	if o, ok := u.written[k]; ok {
		return o, nil
	}
	return u.before.get(k.kind, k.id), nil
}

// undo puts back in txn every object the failed entry act may have
// written, as it was before the entry. An op writes only the object it
// names (its kind and meta.id: applyAction's rule), so those are all the
// entry can have changed; an object the entry did not reach is left as it
// is. Putting an object back rewrites it in every index whose value differs
// (Insert replaces the entry's version's index keys with its own), so the
// tables, indexes included, hold what they held before the entry
// (TestApplyBatchMatchesApply compares every index).
func (f *fsm) undo(txn *tableTxn, act *shoalv1.StoreAction, u *batchUndo) error {
	if f.undoFault != nil {
		return f.undoFault
	}
	var errs []error
	for _, op := range act.GetOps() {
		o := Unwrap(op.GetObject())
		if o == nil || o.GetMeta().GetId() == "" {
			continue // refused before anything was written
		}
		k := objKey{KindOf(o), o.GetMeta().GetId()}
		if _, ok := tableDefs[k.kind]; !ok {
			continue
		}
		prior, err := u.prior(k)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: reading the state before the entry: %w", k.kind, k.id, err))
			continue
		}
		cur := txn.get(k.kind, k.id)
		switch {
		case cur == prior:
			// Not reached, or already put back (an entry may name an
			// object twice).
		case prior == nil:
			if err := txn.Delete(string(k.kind), cur); err != nil {
				errs = append(errs, fmt.Errorf("%s %q: removing: %w", k.kind, k.id, err))
			}
		default:
			if err := txn.Insert(string(k.kind), prior); err != nil {
				errs = append(errs, fmt.Errorf("%s %q: putting back: %w", k.kind, k.id, err))
			}
		}
	}
	return errors.Join(errs...)
}
