package raftstore

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// TestOpenRefusesLogWrittenByOlderShoal: a data dir whose log moved to
// wal/ and where an older shoal (which knows nothing of wal/) then wrote
// log entries into raft.db again is not opened: neither log is deleted,
// and the error says which entries and what to do. Before, Open deleted
// raft.db's newer entries as a migration's leftovers.
func TestOpenRefusesLogWrittenByOlderShoal(t *testing.T) {
	dir := t.TempDir()
	legacyDataDir(t, dir, "solo", 10)
	s := openDiskSolo(t, dir)
	next := mustUpdate(t, s, createIfMissing(mkService("after", "after")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The older shoal: its log in raft.db, past wal/'s end.
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	term, err := bolt.GetUint64([]byte("CurrentTerm"))
	if err != nil {
		t.Fatal(err)
	}
	if err := bolt.StoreLogs([]*raft.Log{{Index: next + 1, Term: term, Type: raft.LogNoop}, {Index: next + 2, Term: term, Type: raft.LogNoop}}); err != nil {
		t.Fatal(err)
	}
	bolt.Close()

	_, trans := raft.NewInmemTransportWithTimeout("solo:4242", rpcTimeout)
	s2, err := Open(Config{NodeID: "solo", DataDir: dir, Transport: trans,
		HeartbeatTimeout: testTimeout, ElectionTimeout: testTimeout, LeaderLeaseTimeout: testTimeout,
		CommitTimeout: 5 * time.Millisecond, Logger: testLogger()})
	if err == nil {
		s2.Close()
		t.Fatal("opened a data dir whose raft.db holds entries wal/ does not")
	}
	for _, want := range []string{"raft.db holds log entries up to", filepath.Join(dir, walDirName), "older shoal"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if first, last, _ := boltLogRange(t, dir); first != next+1 || last != next+2 {
		t.Errorf("raft.db's log is %d..%d after the refusal, want %d..%d kept", first, last, next+1, next+2)
	}
	if _, err := os.Stat(filepath.Join(dir, walDirName)); err != nil {
		t.Errorf("wal/ after the refusal: %v", err)
	}
}

// TestLogStoreFilesOwnerOnly: the raft log's files (segments, their
// metadata) are 0600 as raft.db is: the log holds the whole store, the
// CA key included.
func TestLogStoreFilesOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	s := openDiskSolo(t, dir)
	mustUpdate(t, s, createIfMissing(mkService("a", "a")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, walDirName))
	if err != nil {
		t.Fatal(err)
	}
	var files int
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().IsRegular() {
			files++
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s is %v, want 0600", e.Name(), fi.Mode().Perm())
			}
		}
	}
	if files < 2 {
		t.Fatalf("%d files in wal/, want a segment and its metadata", files)
	}
}

// TestMigrationDiskFull: a migration that runs out of disk fails Open
// with the reason, leaves raft.db's log whole and removes its partial
// copy (which would hold the space of its preallocated segments).
func TestMigrationDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (mounts a small tmpfs)")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Error(err)
		}
	})
	last := legacyDataDir(t, dir, "solo", 10)
	_, trans := raft.NewInmemTransportWithTimeout("solo:4242", rpcTimeout)
	s, err := Open(Config{NodeID: "solo", DataDir: dir, Transport: trans,
		HeartbeatTimeout: testTimeout, ElectionTimeout: testTimeout, LeaderLeaseTimeout: testTimeout,
		CommitTimeout: 5 * time.Millisecond, Logger: testLogger()})
	if err == nil {
		s.Close()
		t.Fatal("a 64 MiB segment fitted a 4 MiB file system")
	}
	if !strings.Contains(err.Error(), "moving the raft log from raft.db") {
		t.Errorf("error %q does not say the migration failed", err)
	}
	if _, err := os.Stat(filepath.Join(dir, walDirName+walMigratingSuffix)); !os.IsNotExist(err) {
		t.Errorf("the partial copy is left: %v", err)
	}
	if _, blast, _ := boltLogRange(t, dir); blast != last {
		t.Errorf("raft.db's log ends at %d after the failed migration, want %d", blast, last)
	}
}
