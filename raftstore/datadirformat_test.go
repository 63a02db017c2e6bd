package raftstore

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// A data dir opened by this binary is marked with its store format, and a
// data dir marked by a newer binary is refused at open, saying why, and
// left as it was.
func TestOpenRefusesDataDirOfNewerFormat(t *testing.T) {
	dir := t.TempDir()
	s := openDiskSolo(t, dir)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "raft.db")
	bolt, err := raftboltdb.NewBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	marked, err := bolt.GetUint64(dataDirFormatKey)
	if err != nil || marked != StoreFormat {
		bolt.Close()
		t.Fatalf("data dir marked %d (%v) after an open, want %d", marked, err, StoreFormat)
	}
	if err := bolt.SetUint64(dataDirFormatKey, StoreFormat+1); err != nil {
		t.Fatal(err)
	}
	bolt.Close()

	_, trans := raft.NewInmemTransportWithTimeout("solo:4242", rpcTimeout)
	s2, err := Open(Config{NodeID: "solo", DataDir: dir, Transport: trans,
		HeartbeatTimeout: testTimeout, ElectionTimeout: testTimeout, LeaderLeaseTimeout: testTimeout,
		CommitTimeout: 5 * time.Millisecond, Logger: testLogger()})
	if err == nil {
		s2.Close()
		t.Fatal("opened a data dir written by a newer store format")
	}
	for _, want := range []string{dir, "newer shoal", "downgrading"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	bolt, err = raftboltdb.NewBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	if marked, _ := bolt.GetUint64(dataDirFormatKey); marked != StoreFormat+1 {
		t.Errorf("refused data dir's mark changed to %d", marked)
	}
}

type memStable map[string]uint64

var errMemNotFound = errors.New("not found")

func (m memStable) GetUint64(k []byte) (uint64, error) {
	v, ok := m[string(k)]
	if !ok {
		return 0, errMemNotFound
	}
	return v, nil
}

func (m memStable) SetUint64(k []byte, v uint64) error { m[string(k)] = v; return nil }

func TestCheckDataDirFormat(t *testing.T) {
	for _, tc := range []struct {
		name   string
		marked *uint64
		ok     bool
		after  uint64
	}{
		{name: "unmarked (a release before the mark)", ok: true, after: StoreFormat},
		{name: "older format", marked: ptr(uint64(StoreFormat - 1)), ok: true, after: StoreFormat},
		{name: "same format", marked: ptr(uint64(StoreFormat)), ok: true, after: StoreFormat},
		{name: "newer format", marked: ptr(uint64(StoreFormat + 1)), ok: false, after: StoreFormat + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := memStable{}
			if tc.marked != nil {
				st[string(dataDirFormatKey)] = *tc.marked
			}
			err := checkDataDirFormat(st, "/d", errMemNotFound)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if got := st[string(dataDirFormatKey)]; got != tc.after {
				t.Errorf("mark after = %d, want %d", got, tc.after)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
