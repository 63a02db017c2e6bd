package metrics

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRaftLogBytes: the raft log's size is the sum of the segment files
// in wal/ beside raft.db (where the log lives since the write-ahead log),
// not raft.db's.
func TestRaftLogBytes(t *testing.T) {
	r := prometheus.NewRegistry()
	m := NewManager(r)
	dir := t.TempDir()
	bolt := filepath.Join(dir, "raft.db")
	wal := filepath.Join(dir, "wal")
	for p, n := range map[string]int{bolt: 100, filepath.Join(wal, "00001.wal"): 1000, filepath.Join(wal, "00002.wal"): 2000, filepath.Join(wal, "wal-meta.db"): 30} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m.SetStore(&fakeStore{view: testView()}, bolt)
	want := `
# HELP shoal_store_raft_log_bytes Size of the raft log's segment files (wal/ beside raft.db; segments are preallocated).
# TYPE shoal_store_raft_log_bytes gauge
shoal_store_raft_log_bytes 3030
`
	if err := testutil.GatherAndCompare(r, strings.NewReader(want), "shoal_store_raft_log_bytes"); err != nil {
		t.Fatal(err)
	}
}
