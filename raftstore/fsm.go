package raftstore

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unsafe"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// fsm is the raft state machine: the tables (table.go) plus the index of the last
// entry applied. raft calls Apply, StoreConfiguration, Snapshot and Restore
// from its single FSM goroutine; everyone else only reads.
type fsm struct {
	log *slog.Logger
	hub *hub

	// mu guards db, applied and waitCh, so that a reader gets a read txn
	// and the index it reflects from the same instant. Only the FSM
	// goroutine writes them; it may read them without the lock.
	mu      sync.RWMutex
	db      *tableDB
	applied uint64
	// waitCh is closed (and cleared) when applied advances. It is made only
	// when somebody waits, so Apply allocates nothing in the common case.
	waitCh chan struct{}
	// oldManagers counts the manager nodes that do not report StoreFormat
	// (storeformat.go); guarded by mu like db, so a view carries the count
	// of its own state.
	oldManagers int
	// onApply receives each entry's apply time (Config.OnApply; metrics
	// only: the clock never decides anything here).
	onApply func(time.Duration)
	// txnOps bounds the ops of one transaction of a batch (batch.go;
	// 0: maxTxnOps). Tests lower it.
	txnOps int
	// undoFault, in tests only, makes undoing a failed entry inside a
	// batch fail (batch.go's fall-back).
	undoFault error
	// onReplaced, in tests only, runs in Restore between the state's
	// replacement and the end of the subscriptions.
	onReplaced func()

	// proposed maps the first byte of an entry this node proposed (the
	// leader's Apply hands the FSM the very slice Update encoded) to the
	// action it was encoded from, so that the leader copies the action
	// instead of decoding the bytes it has just encoded. See propose.
	proposed sync.Map // *byte -> *proposal
}

// proposal is an action as Update built it and the entry it encoded to.
type proposal struct {
	act  *shoalv1.StoreAction
	data []byte
	// specs are the specs the tx built for act's patch ops (tx.ops), which
	// the leader stores instead of patching the same spec again.
	specs []patchedSpec
	// applied is closed once the FSM has applied (or refused) the entry
	// and committed it; result (the FSM's verdict, as raft's future will
	// have it) and index are set before, and read only after it closes.
	// Update answers from them: raft answers the futures of a batch only
	// once the whole batch is applied, and a writer waiting for its own
	// entry need not wait for the rest (batch.go).
	applied chan struct{}
	result  any
	index   uint64
}

// propose registers act as the decoded form of data, which Update is about
// to hand to raft. applied is closed when Apply is done with the entry
// while it is registered. release unregisters it; Update calls it once
// the entry is applied or abandoned (an entry applied after that is
// decoded, as on a follower). The objects of act stay the caller's: Apply
// deep-copies them, so nothing the caller holds is aliased into the store.
func (f *fsm) propose(data []byte, act *shoalv1.StoreAction) (applied <-chan struct{}, release func()) {
	p, release := f.proposeEntry(data, act, nil)
	if p == nil {
		return nil, release
	}
	return p.applied, release
}

// proposeEntry is propose returning the proposal itself, whose result and
// index hold the FSM's verdict once applied is closed (nil for empty data),
// with the specs the tx built for act's patch ops (patchedSpec): those
// the FSM may store as they are (the tx owns them, not its caller).
func (f *fsm) proposeEntry(data []byte, act *shoalv1.StoreAction, specs []patchedSpec) (*proposal, func()) {
	if len(data) == 0 {
		return nil, func() {}
	}
	key := unsafe.SliceData(data)
	p := &proposal{act: act, data: data, specs: specs, applied: make(chan struct{})}
	f.proposed.Store(key, p)
	return p, func() { f.proposed.Delete(key) }
}

// proposalOf returns the registered proposal of exactly these bytes.
func (f *fsm) proposalOf(data []byte) *proposal {
	if len(data) == 0 {
		return nil
	}
	if v, ok := f.proposed.Load(unsafe.SliceData(data)); ok {
		if p := v.(*proposal); len(p.data) == len(data) {
			return p
		}
	}
	return nil
}

// decode returns the action of an entry: a copy of the proposal when this
// node proposed exactly these bytes (copyAction), else the bytes decoded.
// A copy is equal to decoding the entry and cheaper (BenchmarkApplyEntry).
func (f *fsm) decode(data []byte) (*shoalv1.StoreAction, error) {
	act, _, err := f.decodeProposed(data)
	return act, err
}

// decodeProposed is decode with the specs the leader's tx built for the
// entry's patch ops (nil when this node did not propose it).
func (f *fsm) decodeProposed(data []byte) (*shoalv1.StoreAction, []patchedSpec, error) {
	if p := f.proposalOf(data); p != nil {
		return copyAction(p.act), p.specs, nil
	}
	act := new(shoalv1.StoreAction)
	if err := proto.Unmarshal(data, act); err != nil {
		return nil, nil, err
	}
	return act, nil, nil
}

// The FSM also receives configuration entries so that its applied index
// moves with every entry that reaches it, which ReadLinearizable relies on.
var _ raft.ConfigurationStore = (*fsm)(nil)

func newFSM(log *slog.Logger, h *hub) *fsm {
	return &fsm{log: log, hub: h, db: newMemDB()}
}

// Apply applies one StoreAction all-or-nothing. It must be deterministic:
// it reads only the entry and the current state (never the clock), so every
// replica ends in the same state and returns the same error. Raft calls
// ApplyBatch (batch.go) instead; Apply is the one-entry form, an entry in
// a transaction of its own, which the batch's tests compare with.
func (f *fsm) Apply(l *raft.Log) any {
	res := f.apply(l)
	f.markApplied(l, res)
	return res
}

// markApplied tells the Update that proposed l's bytes, if it is still
// waiting, that the entry is applied (or refused) with verdict res. Only
// the FSM goroutine closes applied; the check makes a second apply of the
// same bytes harmless (and leaves the first verdict).
func (f *fsm) markApplied(l *raft.Log, res any) {
	if p := f.proposalOf(l.Data); p != nil {
		select {
		case <-p.applied:
		default:
			p.result, p.index = res, l.Index
			close(p.applied)
		}
	}
}

func (f *fsm) apply(l *raft.Log) any {
	if f.onApply != nil {
		start := time.Now()
		defer func() { f.onApply(time.Since(start)) }()
	}
	act, specs, err := f.decodeProposed(l.Data)
	if err != nil {
		f.advance(l.Index)
		f.log.Error("undecodable raft entry skipped", "index", l.Index, "err", err)
		return fmt.Errorf("raft entry %d: decoding the store action: %w", l.Index, err)
	}
	txn := f.db.Txn(true)
	events, prevs, err := applyProposed(txn, act, l.Index, specs, f.hub.wantsPrev())
	if err != nil {
		txn.Abort()
		f.advance(l.Index)
		return err
	}
	delta := oldManagersDelta(f.db, txn, events)
	f.mu.Lock()
	txn.Commit()
	f.oldManagers += delta
	f.setAppliedLocked(l.Index)
	f.mu.Unlock()
	// Publish after the commit: a subscriber that sees index i and then
	// takes a View gets a state that includes i.
	f.hub.publishEntry(events, prevs, l.Index)
	return nil
}

// StoreConfiguration only advances the applied index; membership itself is
// raft's business.
func (f *fsm) StoreConfiguration(index uint64, _ raft.Configuration) {
	f.advance(index)
}

// advance records an entry that changed nothing.
func (f *fsm) advance(index uint64) {
	f.mu.Lock()
	f.setAppliedLocked(index)
	f.mu.Unlock()
	f.hub.publish(nil, index)
}

func (f *fsm) setAppliedLocked(index uint64) {
	if index > f.applied {
		f.applied = index
	}
	if f.waitCh != nil {
		close(f.waitCh)
		f.waitCh = nil
	}
}

func (f *fsm) appliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

// view returns a consistent read-only view of the current state.
func (f *fsm) view() *view {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &view{txn: f.db.Txn(false), index: f.applied, oldManagers: f.oldManagers}
}

// waitApplied blocks until the applied index reaches index, ctx ends or done
// is closed. Apply wakes it; there is no polling.
func (f *fsm) waitApplied(ctx context.Context, index uint64, done <-chan struct{}) error {
	for {
		f.mu.Lock()
		if f.applied >= index {
			f.mu.Unlock()
			return nil
		}
		if f.waitCh == nil {
			f.waitCh = make(chan struct{})
		}
		ch := f.waitCh
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for index %d to be applied: %w", index, ctx.Err())
		case <-done:
			return ErrClosed
		}
	}
}

// replace swaps in a restored database (Restore runs on the FSM goroutine).
func (f *fsm) replace(db *tableDB, index uint64) {
	old := countOldManagers(db)
	f.mu.Lock()
	f.db = db
	f.oldManagers = old
	f.applied = index
	if f.waitCh != nil {
		close(f.waitCh)
		f.waitCh = nil
	}
	f.mu.Unlock()
}

// applyAction validates and applies every op of an action inside txn and
// returns the watch events. On error the caller aborts txn, so nothing of
// the action is applied.
func applyAction(txn *tableTxn, act *shoalv1.StoreAction, index uint64) ([]*shoalv1.WatchEvent, error) {
	events, _, err := applyProposed(txn, act, index, nil, false)
	return events, err
}

// applyProposed is applyAction with the specs the leader's tx built for
// the action's patch ops (decodeProposed), and, with wantPrev, the
// services its updates replaced (ringEntry.prev; nil when none).
func applyProposed(txn *tableTxn, act *shoalv1.StoreAction, index uint64, specs []patchedSpec, wantPrev bool) ([]*shoalv1.WatchEvent, []Object, error) {
	ts := act.GetTime()
	events := make([]*shoalv1.WatchEvent, 0, len(act.GetOps()))
	// The entry's events in one allocation rather than one per op.
	evs := make([]shoalv1.WatchEvent, len(act.GetOps()))
	var named []Object
	var svcs serviceCache
	var prevs []Object // the services updated replaced (ringEntry.prev); nil if none
	for i, op := range act.GetOps() {
		o := Unwrap(op.GetObject())
		if o == nil {
			return nil, nil, fmt.Errorf("raft entry %d: op %d carries no object", index, i)
		}
		kind := KindOf(o)
		if kind == KindService {
			svcs = serviceCache{} // the entry changes a service: read it again
		}
		m := ensureMeta(o)
		id := m.GetId()
		if id == "" {
			return nil, nil, fmt.Errorf("raft entry %d: op %d: %s without meta.id", index, i, kind)
		}
		cur := txn.get(kind, id)
		var (
			action shoalv1.WatchAction
			err    error
		)
		switch op.GetKind() {
		case shoalv1.StoreOpKind_STORE_OP_KIND_CREATE:
			if cur != nil {
				return nil, nil, errExists(kind, id)
			}
			action = shoalv1.WatchAction_WATCH_ACTION_CREATE
			m.Version, m.CreatedAt, m.UpdatedAt = index, ts, ts
		case shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE:
			if err := checkCurrent(kind, id, op.GetExpectedVersion(), cur); err != nil {
				return nil, nil, err
			}
			action = shoalv1.WatchAction_WATCH_ACTION_UPDATE
			m.Version, m.CreatedAt, m.UpdatedAt = index, cur.GetMeta().GetCreatedAt(), ts
		case shoalv1.StoreOpKind_STORE_OP_KIND_TASK_STATUS:
			if err := checkCurrent(kind, id, op.GetExpectedVersion(), cur); err != nil {
				return nil, nil, err
			}
			if o, err = applyTaskStatus(index, i, op, o, cur); err != nil {
				return nil, nil, err
			}
			action = shoalv1.WatchAction_WATCH_ACTION_UPDATE
			m.Version, m.CreatedAt, m.UpdatedAt = index, cur.GetMeta().GetCreatedAt(), ts
		case shoalv1.StoreOpKind_STORE_OP_KIND_TASK_CREATE:
			if cur != nil {
				return nil, nil, errExists(kind, id)
			}
			if o, err = applyTaskCreate(txn, &svcs, index, i, o); err != nil {
				return nil, nil, err
			}
			action = shoalv1.WatchAction_WATCH_ACTION_CREATE
			m.Version, m.CreatedAt, m.UpdatedAt = index, ts, ts
		case shoalv1.StoreOpKind_STORE_OP_KIND_TASK_ASSIGN:
			if err := checkCurrent(kind, id, op.GetExpectedVersion(), cur); err != nil {
				return nil, nil, err
			}
			if o, err = applyTaskAssign(index, i, op, o, cur); err != nil {
				return nil, nil, err
			}
			action = shoalv1.WatchAction_WATCH_ACTION_UPDATE
			m.Version, m.CreatedAt, m.UpdatedAt = index, cur.GetMeta().GetCreatedAt(), ts
		case shoalv1.StoreOpKind_STORE_OP_KIND_DELETE:
			if err := checkCurrent(kind, id, op.GetExpectedVersion(), cur); err != nil {
				return nil, nil, err
			}
			if err := txn.Delete(string(kind), cur); err != nil {
				return nil, nil, fmt.Errorf("%s %q: deleting: %w", kind, id, err)
			}
			ev := &evs[i]
			ev.Index, ev.Action, ev.Object = index, shoalv1.WatchAction_WATCH_ACTION_DELETE, Wrap(cur)
			events = append(events, ev)
			continue
		default:
			return nil, nil, fmt.Errorf("raft entry %d: op %d: unknown op kind %v", index, i, op.GetKind())
		}
		if err := resolvePreviousSpec(index, i, op, o, cur, specs); err != nil {
			return nil, nil, err
		}
		if t, ok := o.(*shoalv1.Task); ok && (op.GetKind() == shoalv1.StoreOpKind_STORE_OP_KIND_CREATE || op.GetKind() == shoalv1.StoreOpKind_STORE_OP_KIND_UPDATE) {
			// The compact task ops share their spec already.
			internTaskSpec(txn, t, cur)
		}
		if err := txn.Insert(string(kind), o); err != nil {
			return nil, nil, fmt.Errorf("%s %q: inserting: %w", kind, id, err)
		}
		if op.GetPreviousSpecSource() != shoalv1.PreviousSpecSource_PREVIOUS_SPEC_SOURCE_STORED_SPEC_PATCHED {
			// A patch keeps the stored name (PatchSpec copies it), and
			// names are unique before the entry, so its own check could
			// only find itself; a conflict with another op of the entry
			// is found by that op's check. (A rule of the patch op since
			// its first release: every replica that applies it skips.)
			named = append(named, o)
		}
		ev := &evs[i]
		ev.Index, ev.Action = index, action
		if Unwrap(op.GetObject()) == o {
			// The op's own wrapper of o (decoded for this apply, so the
			// FSM's): no second wrapper per op.
			ev.Object = op.GetObject()
		} else {
			ev.Object = Wrap(o)
		}
		events = append(events, ev)
		if wantPrev && action == shoalv1.WatchAction_WATCH_ACTION_UPDATE {
			if p := prevOf(kind, cur); p != nil {
				if prevs == nil {
					prevs = make([]Object, len(act.GetOps()))
				}
				prevs[len(events)-1] = p
			}
		}
	}
	// Unique names are checked on the entry's final state, so that the
	// order of ops inside one entry (say, a rename and a create taking the
	// old name) does not matter — the same rule WriteTx applies.
	for _, o := range named {
		if err := checkUniqueName(txn, o); err != nil {
			return nil, nil, err
		}
	}
	return events, prevs, nil
}

// prevOf is what the watch ring keeps of cur, the stored object an update
// replaced (ringEntry.prev): a service less its previous_spec, which the
// filters do not read and nothing else holds once the service has moved
// on (TestWatchRingKeepsNoPreviousSpecOfPrev); a task or a node as it
// was (an update shares its spec and networks with the stored one, so
// the ring keeps the old task's own few fields alive, not a second copy
// of the task: TestWatchRingPrevTaskSharesTheStoredOnes); nil for the
// other kinds, whose filters have nothing to compare.
func prevOf(kind Kind, cur Object) Object {
	switch kind {
	case KindService:
		return serviceWithoutPreviousSpec(cur.(*shoalv1.Service))
	case KindTask, KindNode:
		return cur
	}
	return nil
}

// checkCurrent checks that an object to update or delete exists and that
// the writer read its current version (0 skips the version check).
func checkCurrent(kind Kind, id string, expected uint64, cur Object) error {
	if cur == nil {
		return errNotFound(kind, id)
	}
	if v := cur.GetMeta().GetVersion(); expected != 0 && expected != v {
		return errStale(kind, id, expected, v)
	}
	return nil
}

// checkUniqueName fails when another object of o's kind has o's name.
func checkUniqueName(txn *tableTxn, o Object) error {
	kind := KindOf(o)
	if !tableDefs[kind].uniqueName {
		return nil
	}
	name, ok := nameOf(o)
	if !ok {
		return nil
	}
	taken := false
	txn.ascendIndex(kind, IndexName, name, "", func(other Object) bool {
		taken = other.GetMeta().GetId() != o.GetMeta().GetId()
		return !taken
	})
	if taken {
		return errNameInUse(kind, name)
	}
	return nil
}
