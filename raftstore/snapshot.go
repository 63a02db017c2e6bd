package raftstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Snapshot format: a sequence of records, each a uvarint length followed by
// that many bytes. The first record is snapshotMagic followed by the uvarint
// applied index the snapshot reflects (FSM.Restore is not told the raft
// index, and the watch ring must restart from the right place). Every
// further record is a marshalled shoalv1.StoreObject.
const snapshotMagic = "shoal-raftstore-v1\x00"

// maxSnapshotRecord bounds one record, so a corrupt length cannot make
// Restore allocate without limit.
const maxSnapshotRecord = 64 << 20

// Snapshot captures the state in O(1): a read txn holds immutable trees
// that later Applies do not disturb.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{txn: f.db.Txn(false), index: f.applied}, nil
}

type fsmSnapshot struct {
	txn   *tableTxn
	index uint64
}

// Persist writes the snapshot; raft runs it concurrently with Apply.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persisting the store snapshot at index %d: %w", s.index, err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	var buf []byte
	record := func(b []byte) error {
		buf = binary.AppendUvarint(buf[:0], uint64(len(b)))
		if _, err := bw.Write(buf); err != nil {
			return err
		}
		_, err := bw.Write(b)
		return err
	}
	if err := record(binary.AppendUvarint([]byte(snapshotMagic), s.index)); err != nil {
		return err
	}
	var msg []byte
	for _, kind := range Kinds {
		var err error
		s.txn.ascendID(kind, "", func(o Object) bool {
			// Deterministic: maps (labels) in key order, so equal states
			// persist to equal bytes (TestSnapshotBytesDeterministic).
			msg, err = proto.MarshalOptions{Deterministic: true}.MarshalAppend(msg[:0], Wrap(o))
			if err != nil {
				err = fmt.Errorf("%s %q: %w", kind, o.GetMeta().GetId(), err)
				return false
			}
			err = record(msg)
			return err == nil
		})
		if err != nil {
			return err
		}
	}
	return bw.Flush()
}

func (s *fsmSnapshot) Release() {}

// Restore replaces the whole state with a snapshot's. Subscriptions end with
// ErrRestored: the change cannot be expressed as events, so consumers must
// read the state again.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	db, index, n, err := readSnapshot(bufio.NewReaderSize(rc, 256<<10))
	if err != nil {
		return fmt.Errorf("restoring the store snapshot: %w", err)
	}
	// Live subscriptions report the restore (Err) from before the state
	// is replaced until reset ends them: a cache keyed on a subscription
	// being live (manager/transport.StoreGeneration: the admin index, the
	// raft peers' verdicts) is not reused in between, when a fresh view
	// already holds the restored state (TestSubscriptionErrCoversRestore).
	f.hub.beginRestore()
	f.replace(db, index)
	if f.onReplaced != nil {
		f.onReplaced()
	}
	f.hub.reset(index, ErrRestored)
	f.log.Info("store restored from snapshot", "index", index, "objects", n)
	return nil
}

func readSnapshot(r *bufio.Reader) (db *tableDB, index uint64, n int, err error) {
	next := func() ([]byte, error) {
		size, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, err // io.EOF here is the clean end
		}
		if size > maxSnapshotRecord {
			return nil, fmt.Errorf("record of %d bytes is larger than the limit", size)
		}
		b := make([]byte, size)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("truncated record: %w", err)
		}
		return b, nil
	}
	head, err := next()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("reading the header: %w", err)
	}
	rest, ok := bytes.CutPrefix(head, []byte(snapshotMagic))
	if !ok {
		return nil, 0, 0, errors.New("not a raftstore snapshot (bad header)")
	}
	index, k := binary.Uvarint(rest)
	if k <= 0 {
		return nil, 0, 0, errors.New("bad index in the header")
	}
	db = newMemDB()
	txn := db.Txn(true)
	defer txn.Abort()
	for {
		b, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, 0, fmt.Errorf("record %d: %w", n+1, err)
		}
		var so shoalv1.StoreObject
		if err := proto.Unmarshal(b, &so); err != nil {
			return nil, 0, 0, fmt.Errorf("record %d: %w", n+1, err)
		}
		o := Unwrap(&so)
		if o == nil || o.GetMeta().GetId() == "" {
			return nil, 0, 0, fmt.Errorf("record %d: no object or no id", n+1)
		}
		if t, ok := o.(*shoalv1.Task); ok {
			internTaskSpec(txn, t, nil) // services come first (Kinds)
		}
		if err := txn.Insert(string(KindOf(o)), o); err != nil {
			return nil, 0, 0, fmt.Errorf("record %d: %w", n+1, err)
		}
		n++
	}
	txn.Commit()
	return db, index, n, nil
}
