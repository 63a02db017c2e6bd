package raftstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	waltypes "github.com/hashicorp/raft-wal/types"
	"golang.org/x/sys/unix"
)

// The raft log lives in a write-ahead log of preallocated segment files
// (hashicorp/raft-wal, as Consul uses), not in bbolt: appending a batch is
// one write and one fdatasync, where raft-boltdb paid two (bbolt's data
// pages, then its meta page) plus page allocation. raft.db (bbolt) keeps
// raft's stable store (term, vote), written only at elections, and is where
// the log of a data dir made by an older shoal is migrated from.
const (
	// walDirName is the log's folder inside DataDir.
	walDirName = "wal"
	// walMigratingSuffix marks a log being copied out of raft.db; it is
	// renamed to walDirName only once complete, so a crash mid-copy leaves
	// raft.db's log as the one in force.
	walMigratingSuffix = ".migrating"
	// migrateBatch is how many entries one append of the migration copies.
	migrateBatch = 512
)

// walSegmentSize is the size of one segment file (0: raft-wal's default,
// 64 MiB); tests make it small to exercise rotation.
var walSegmentSize = 0

// openLogStore opens (creating it if needed) the write-ahead log under
// dataDir, first moving into it any log entries an older shoal left in
// bolt's raft.db. noSync skips every fdatasync (benchmarks of the
// difference only).
func openLogStore(dataDir string, bolt *raftboltdb.BoltStore, noSync bool, hlog hclog.Logger, log *slog.Logger) (*walLog, error) {
	dir := filepath.Join(dataDir, walDirName)
	if err := migrateBoltLog(dir, bolt, noSync, hlog, log); err != nil {
		return nil, fmt.Errorf("moving the raft log from raft.db to %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	w, err := openWAL(dir, noSync, hlog)
	if err != nil {
		return nil, fmt.Errorf("opening the raft log in %s: %w", dir, err)
	}
	return w, nil
}

// walLog is the write-ahead log with a Close that also closes its
// metadata database: raft-wal's own Close leaves that bbolt file open (and
// flock'ed, so the next open in the same process would wait for ever).
type walLog struct {
	*wal.WAL
	meta *metadb.BoltMetaDB
}

func (l *walLog) Close() error {
	err := l.WAL.Close()
	if merr := l.meta.Close(); err == nil {
		err = merr
	}
	return err
}

func openWAL(dir string, noSync bool, hlog hclog.Logger) (*walLog, error) {
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(dir,
		wal.WithLogger(hlog.Named("wal")),
		wal.WithMetaStore(meta),
		wal.WithSegmentFiler(segment.NewFiler(dir, &walVFS{FS: walfs.New(), noSync: noSync})),
		wal.WithSegmentSize(walSegmentSize),
	)
	if err != nil {
		meta.Close()
		return nil, err
	}
	// raft-wal makes its files 0644; raft.db was 0600, and the log holds
	// the whole store (the CA key, environment values): owner only, as
	// raft.db, whatever the directory's mode becomes.
	if err := os.Chmod(filepath.Join(dir, metadb.FileName), 0o600); err != nil {
		w.Close()
		meta.Close()
		return nil, err
	}
	return &walLog{WAL: w, meta: meta}, nil
}

// migrateBoltLog copies the log entries in bolt (a data dir written before
// the log moved out of raft.db) into a new write-ahead log at dir, then
// deletes them from bolt. The copy is built beside dir and renamed into
// place when complete and synced, so a crash at any point leaves exactly
// one complete log: bolt's (before the rename; the partial copy is
// discarded and the migration starts again) or dir's (after it; bolt's
// leftover entries are deleted on the next open).
func migrateBoltLog(dir string, bolt *raftboltdb.BoltStore, noSync bool, hlog hclog.Logger, log *slog.Logger) error {
	first, err := bolt.FirstIndex()
	if err != nil {
		return err
	}
	last, err := bolt.LastIndex()
	if err != nil {
		return err
	}
	if last == 0 {
		return nil
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := copyBoltLog(dir, bolt, first, last, noSync, hlog); err != nil {
			return err
		}
		log.Info("raft log moved from raft.db to its write-ahead log", "first_index", first, "last_index", last, "dir", dir)
	} else if err != nil {
		return err
	} else if err := checkMigrated(dir, bolt, last, noSync, hlog); err != nil {
		return err
	}
	return bolt.DeleteRange(first, last)
}

// checkMigrated is called when dir exists and raft.db still holds log
// entries up to last. After a crash between the migration's rename and
// its delete, dir holds every one of them and ends at the same entry;
// anything else means an older shoal, which knows nothing of dir, ran on
// this data dir after the move and wrote its log into raft.db again.
// Deleting either log would then lose committed entries, so Open refuses
// and says what to do.
func checkMigrated(dir string, bolt *raftboltdb.BoltStore, last uint64, noSync bool, hlog hclog.Logger) error {
	var bl raft.Log
	if err := bolt.GetLog(last, &bl); err != nil {
		return fmt.Errorf("reading raft.db's last entry %d: %w", last, err)
	}
	w, err := openWAL(dir, noSync, hlog)
	if err != nil {
		return err
	}
	defer w.Close()
	wlast, err := w.LastIndex()
	if err != nil {
		return err
	}
	var wl raft.Log
	if wlast == last && w.GetLog(last, &wl) == nil && wl.Term == bl.Term {
		return nil
	}
	return fmt.Errorf("raft.db holds log entries up to %d (term %d) that %s does not end with (its last entry: %d): "+
		"a shoal from before the write-ahead log ran on this data dir after the log moved; neither log is discarded. "+
		"Move %s aside to use raft.db's log (the newer one if that older shoal ran last), or restore the data dir from a backup",
		last, bl.Term, dir, wlast, dir)
}

func copyBoltLog(dir string, bolt *raftboltdb.BoltStore, first, last uint64, noSync bool, hlog hclog.Logger) (err error) {
	tmp := dir + walMigratingSuffix
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	defer func() {
		// A failed copy (a full disk, most likely) is not left holding
		// its preallocated segments: raft.db's log stays the one in force.
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	w, err := openWAL(tmp, noSync, hlog)
	if err != nil {
		return err
	}
	batch := make([]*raft.Log, 0, migrateBatch)
	for i := first; i <= last; i++ {
		l := new(raft.Log)
		if err := bolt.GetLog(i, l); err != nil {
			w.Close()
			return fmt.Errorf("reading entry %d of %d..%d: %w", i, first, last, err)
		}
		batch = append(batch, l)
		if len(batch) == migrateBatch || i == last {
			if err := w.StoreLogs(batch); err != nil {
				w.Close()
				return fmt.Errorf("writing entries up to %d: %w", i, err)
			}
			batch = batch[:0]
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	if noSync {
		return nil
	}
	return syncDir(filepath.Dir(dir))
}

// walVFS is raft-wal's file system with fdatasync instead of fsync for the
// segment files: they are preallocated, so a sync has no size or time
// stamp to write, only the data and the extents that now hold it. With
// noSync nothing is synced at all.
type walVFS struct {
	*walfs.FS
	noSync bool
}

var _ waltypes.VFS = (*walVFS)(nil)

func (v *walVFS) Create(dir, name string, size uint64) (waltypes.WritableFile, error) {
	f, err := v.FS.Create(dir, name, size)
	if err != nil {
		return nil, err
	}
	wf, err := newWALFile(f, dir, v.noSync)
	if err != nil {
		return nil, err
	}
	// Owner only, as raft.db (see openWAL).
	if err := unix.Fchmod(wf.fd, 0o600); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "chmod", Path: filepath.Join(dir, name), Err: err}
	}
	return wf, nil
}

func (v *walVFS) OpenWriter(dir, name string) (waltypes.WritableFile, error) {
	f, err := v.FS.OpenWriter(dir, name)
	if err != nil {
		return nil, err
	}
	// A segment made 0644 by an earlier build is made owner-only too.
	if fder, ok := f.(interface{ Fd() uintptr }); ok {
		if err := unix.Fchmod(int(fder.Fd()), 0o600); err != nil {
			f.Close()
			return nil, &os.PathError{Op: "chmod", Path: filepath.Join(dir, name), Err: err}
		}
	}
	// An existing file: its directory entry was synced by the first sync
	// after its creation (or it holds nothing committed).
	return newWALFile(f, "", v.noSync)
}

// walFile syncs with fdatasync and, after the first sync of a new file,
// syncs its directory too so that the file itself survives a crash.
type walFile struct {
	waltypes.WritableFile
	fd        int
	dir       string
	dirSynced atomic.Bool // dir synced (or nothing to sync: a file that existed)
	noSync    bool
}

func newWALFile(f waltypes.WritableFile, dir string, noSync bool) (*walFile, error) {
	fder, ok := f.(interface{ Fd() uintptr })
	if !ok {
		f.Close()
		return nil, fmt.Errorf("raft log file of type %T has no descriptor", f)
	}
	wf := &walFile{WritableFile: f, fd: int(fder.Fd()), dir: dir, noSync: noSync}
	wf.dirSynced.Store(dir == "")
	return wf, nil
}

func (f *walFile) Sync() error {
	if f.noSync {
		return nil
	}
	if err := unix.Fdatasync(f.fd); err != nil {
		return &os.PathError{Op: "fdatasync", Path: "raft log segment", Err: err}
	}
	if !f.dirSynced.Load() {
		if err := syncDir(f.dir); err != nil {
			return err
		}
		f.dirSynced.Store(true)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
