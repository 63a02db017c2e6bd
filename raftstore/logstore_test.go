package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// legacyDataDir writes a data dir the way shoal did before the log left
// raft.db: raft bootstrapped on a raft-boltdb store holding both the log
// and the stable store, then n committed entries each creating service
// svc-<i>. It returns the index of the last entry.
func legacyDataDir(t *testing.T, dir, id string, n int) uint64 {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, retainedSnapshots, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	_, trans := raft.NewInmemTransport(raft.ServerAddress(id + ":4242"))
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: trans.LocalAddr()}}}
	if err := raft.BootstrapCluster(rc, bolt, bolt, snaps, trans, conf); err != nil {
		t.Fatal(err)
	}
	last, err := bolt.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := 0; i < n; i++ {
		svc := mkService(fmt.Sprintf("svc-%d", i), fmt.Sprintf("svc-%d", i))
		data, err := proto.Marshal(&shoalv1.StoreAction{
			Ops:  []*shoalv1.StoreOp{{Kind: shoalv1.StoreOpKind_STORE_OP_KIND_CREATE, Object: Wrap(svc)}},
			Time: timestamppb.New(time.Unix(1700000000, 0)),
		})
		if err != nil {
			t.Fatal(err)
		}
		last++
		logs = append(logs, &raft.Log{Index: last, Term: 1, Type: raft.LogCommand, Data: data})
	}
	if err := bolt.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	return last
}

// boltLogRange reopens raft.db after the store closed and returns its log's
// first and last index and the current term of its stable store.
func boltLogRange(t *testing.T, dir string) (first, last, term uint64) {
	t.Helper()
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	if first, err = bolt.FirstIndex(); err != nil {
		t.Fatal(err)
	}
	if last, err = bolt.LastIndex(); err != nil {
		t.Fatal(err)
	}
	if term, err = bolt.GetUint64([]byte("CurrentTerm")); err != nil {
		t.Fatal(err)
	}
	return first, last, term
}

func openDiskSolo(t *testing.T, dir string) *Store {
	t.Helper()
	_, trans := raft.NewInmemTransportWithTimeout("solo:4242", rpcTimeout)
	s, err := Open(Config{
		NodeID: "solo", DataDir: dir, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: testTimeout, ElectionTimeout: testTimeout, LeaderLeaseTimeout: testTimeout,
		CommitTimeout: 5 * time.Millisecond, Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	eventually(t, "solo leads", func() error {
		if !s.IsLeader() {
			return errors.New("not leader")
		}
		return nil
	})
	return s
}

func TestOpenMigratesBoltLog(t *testing.T) {
	const n = 700 // more than one batch of the copy
	tests := []struct {
		name string
		// crash sets up what a crash during an earlier migration left.
		crash func(t *testing.T, dir string)
	}{
		{name: "data dir of the old layout"},
		{name: "crash while copying: a partial copy is discarded", crash: func(t *testing.T, dir string) {
			tmp := filepath.Join(dir, walDirName+walMigratingSuffix)
			if err := os.MkdirAll(tmp, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(tmp, "00000000000000000001-0000000000000001.wal"), []byte("half a segment"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "crash after the copy, before raft.db's log was deleted", crash: func(t *testing.T, dir string) {
			bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
			if err != nil {
				t.Fatal(err)
			}
			defer bolt.Close()
			first, _ := bolt.FirstIndex()
			last, _ := bolt.LastIndex()
			if err := copyBoltLog(filepath.Join(dir, walDirName), bolt, first, last, false, hclog.NewNullLogger()); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			last := legacyDataDir(t, dir, "solo", n)
			if tt.crash != nil {
				tt.crash(t, dir)
			}

			s := openDiskSolo(t, dir)
			if err := s.fsm.waitApplied(t.Context(), last, s.done); err != nil {
				t.Fatal(err)
			}
			if got := len(List[*shoalv1.Service](s.View())); got != n {
				t.Fatalf("%d services after the migration, want %d", got, n)
			}
			next := mustUpdate(t, s, createIfMissing(mkService("after", "after")))
			if next <= last {
				t.Fatalf("new entry %d at or before the migrated log's last %d", next, last)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			if first, blast, term := boltLogRange(t, dir); first != 0 || blast != 0 || term == 0 {
				t.Errorf("raft.db after the migration: log %d..%d (want empty), current term %d (want kept)", first, blast, term)
			}
			if _, err := os.Stat(filepath.Join(dir, walDirName+walMigratingSuffix)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the migration's temporary log is still there: %v", err)
			}

			// Opened again, the store reads everything from the new log.
			s = openDiskSolo(t, dir)
			if err := s.fsm.waitApplied(t.Context(), next, s.done); err != nil {
				t.Fatal(err)
			}
			if got := len(List[*shoalv1.Service](s.View())); got != n+1 {
				t.Fatalf("%d services after reopening, want %d", got, n+1)
			}
		})
	}
}

// walSegment returns the path of the only segment file under dir.
func walSegment(t *testing.T, dir string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil || len(m) != 1 {
		t.Fatalf("segments in %s: %v %v", dir, m, err)
	}
	return m[0]
}

// writtenEnd is the end of the data in a preallocated segment: the offset
// after its last non-zero byte.
func writtenEnd(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(bytes.TrimRight(b, "\x00")))
}

func logData(i uint64) []byte {
	return []byte(strings.Repeat(fmt.Sprintf("entry %d;", i), 12))
}

// TestLogStoreTornTail crashes the log in the middle of an append (the
// tail of the file as a power cut can leave it) and checks that reopening
// keeps every entry of every append that returned, drops the torn one, and
// appends again after it.
func TestLogStoreTornTail(t *testing.T) {
	tests := []struct {
		name string
		// tear damages the segment whose last append (entries 9..12) was
		// the one in flight; acked is the last entry that must survive.
		tear  func(t *testing.T, f *os.File, lastBatchStart, end int64)
		acked uint64
	}{
		{"last append lost its final sector", func(t *testing.T, f *os.File, _, end int64) {
			zero(t, f, end-8, 8)
		}, 8},
		{"last append half written", func(t *testing.T, f *os.File, start, end int64) {
			zero(t, f, start+(end-start)/2, end-start-(end-start)/2)
		}, 8},
		{"last append's bytes garbled", func(t *testing.T, f *os.File, start, end int64) {
			if _, err := f.WriteAt(bytes.Repeat([]byte{0xA5}, 16), start+(end-start)/2); err != nil {
				t.Fatal(err)
			}
		}, 8},
		{"garbage after the last complete append", func(t *testing.T, f *os.File, _, end int64) {
			if _, err := f.WriteAt([]byte("partial next append"), end); err != nil {
				t.Fatal(err)
			}
		}, 12},
	}
	old := walSegmentSize
	walSegmentSize = 64 << 10 // one segment, quick to scan for its end
	t.Cleanup(func() { walSegmentSize = old })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			w, err := openWAL(dir, false, hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			var lastBatchStart int64
			for _, batch := range [][2]uint64{{1, 4}, {5, 8}, {9, 12}} {
				if batch[0] == 9 {
					lastBatchStart = writtenEnd(t, walSegment(t, dir))
				}
				var logs []*raft.Log
				for i := batch[0]; i <= batch[1]; i++ {
					logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: logData(i)})
				}
				if err := w.StoreLogs(logs); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}

			seg := walSegment(t, dir)
			end := writtenEnd(t, seg)
			f, err := os.OpenFile(seg, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			tt.tear(t, f, lastBatchStart, end)
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}

			w, err = openWAL(dir, false, hclog.NewNullLogger())
			if err != nil {
				t.Fatalf("reopening after the torn append: %v", err)
			}
			defer func() { w.Close() }()
			checkLog(t, w, 1, tt.acked)
			if err := w.StoreLogs([]*raft.Log{{Index: tt.acked + 1, Term: 2, Type: raft.LogCommand, Data: logData(tt.acked + 1)}}); err != nil {
				t.Fatalf("appending after recovery: %v", err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w, err = openWAL(dir, false, hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			checkLog(t, w, 1, tt.acked+1)
		})
	}
}

func zero(t *testing.T, f *os.File, off, n int64) {
	t.Helper()
	if _, err := f.WriteAt(make([]byte, n), off); err != nil {
		t.Fatal(err)
	}
}

// checkLog asserts that the log holds exactly first..last, each with the
// data it was written with.
func checkLog(t *testing.T, w *walLog, first, last uint64) {
	t.Helper()
	if got, _ := w.FirstIndex(); got != first {
		t.Errorf("first index %d, want %d", got, first)
	}
	if got, _ := w.LastIndex(); got != last {
		t.Fatalf("last index %d, want %d", got, last)
	}
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := w.GetLog(i, &l); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if !bytes.Equal(l.Data, logData(i)) {
			t.Fatalf("entry %d holds %q", i, l.Data)
		}
	}
	var l raft.Log
	if err := w.GetLog(last+1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Errorf("entry %d after the last: %v, want ErrLogNotFound", last+1, err)
	}
}

// TestLogStoreReopenAfterTruncation: what raft does to its log besides
// appending — cutting a conflicting suffix (a follower whose last entries
// a new leader overwrites) and compacting the head after a snapshot — must
// leave a log that reopens with exactly the entries kept. (raft-wal before
// v0.4.1 marked the segment cut by a suffix truncation as sealed without
// writing its index, and the next open failed with "sealed segment has no
// index block": a manager killed after such a cut never started again.)
func TestLogStoreReopenAfterTruncation(t *testing.T) {
	tests := []struct {
		name        string
		ops         func(t *testing.T, w *walLog)
		first, last uint64
	}{
		{"suffix cut, then appended again", func(t *testing.T, w *walLog) {
			if err := w.DeleteRange(5, 6); err != nil {
				t.Fatal(err)
			}
			storeRange(t, w, 5, 7)
		}, 1, 7},
		{"suffix cut, nothing appended", func(t *testing.T, w *walLog) {
			if err := w.DeleteRange(6, 6); err != nil {
				t.Fatal(err)
			}
		}, 1, 5},
		{"head compacted", func(t *testing.T, w *walLog) {
			if err := w.DeleteRange(1, 3); err != nil {
				t.Fatal(err)
			}
		}, 4, 6},
		{"head compacted, suffix cut, appended again", func(t *testing.T, w *walLog) {
			if err := w.DeleteRange(1, 2); err != nil {
				t.Fatal(err)
			}
			if err := w.DeleteRange(6, 6); err != nil {
				t.Fatal(err)
			}
			storeRange(t, w, 6, 9)
		}, 3, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			w, err := openWAL(dir, false, hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			storeRange(t, w, 1, 6)
			tt.ops(t, w)
			checkLog(t, w, tt.first, tt.last)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w, err = openWAL(dir, false, hclog.NewNullLogger())
			if err != nil {
				t.Fatalf("reopening: %v", err)
			}
			defer func() { w.Close() }()
			checkLog(t, w, tt.first, tt.last)
			storeRange(t, w, tt.last+1, tt.last+1)
			checkLog(t, w, tt.first, tt.last+1)
		})
	}
}

// storeRange appends entries from..to, one append each.
func storeRange(t *testing.T, w *walLog, from, to uint64) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := w.StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: logData(i)}}); err != nil {
			t.Fatalf("appending %d: %v", i, err)
		}
	}
}

// TestLogStoreRotation: with small segments the log spans many files
// (each made through walVFS and synced with its directory); it reopens
// whole, and compacting the head removes whole segments.
func TestLogStoreRotation(t *testing.T) {
	old := walSegmentSize
	walSegmentSize = 4096
	t.Cleanup(func() { walSegmentSize = old })
	dir := t.TempDir()
	w, err := openWAL(dir, false, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	for i := uint64(1); i <= n; i += 3 {
		var logs []*raft.Log
		for j := i; j < i+3 && j <= n; j++ {
			logs = append(logs, &raft.Log{Index: j, Term: 1, Type: raft.LogCommand, Data: logData(j)})
		}
		if err := w.StoreLogs(logs); err != nil {
			t.Fatalf("appending from %d: %v", i, err)
		}
	}
	checkLog(t, w, 1, n)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	if len(segs) < 5 {
		t.Fatalf("%d segment files for %d entries in 4 KiB segments", len(segs), n)
	}

	w, err = openWAL(dir, false, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { w.Close() }()
	checkLog(t, w, 1, n)
	if err := w.DeleteRange(1, 250); err != nil {
		t.Fatal(err)
	}
	checkLog(t, w, 251, n)
	eventually(t, "compacted segments deleted", func() error {
		left, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
		if len(left) >= len(segs) {
			return fmt.Errorf("%d segment files left of %d", len(left), len(segs))
		}
		return nil
	})
}
