package raftstore

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// countingStore is an in-memory log that counts the reads that reach it.
type countingStore struct {
	*raft.InmemStore
	gets int
}

func (s *countingStore) GetLog(idx uint64, l *raft.Log) error {
	s.gets++
	return s.InmemStore.GetLog(idx, l)
}

func cacheEntries(from, to uint64, size int) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: make([]byte, size)})
	}
	return out
}

// cached lists which of [from, to] GetLog answers without the store, and
// checks every answer is the entry asked for.
func cached(t *testing.T, c *logCache, st *countingStore, from, to uint64) []uint64 {
	t.Helper()
	var hits []uint64
	for i := from; i <= to; i++ {
		before := st.gets
		var l raft.Log
		if err := c.GetLog(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				continue
			}
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if l.Index != i {
			t.Fatalf("GetLog(%d) returned entry %d", i, l.Index)
		}
		if st.gets == before {
			hits = append(hits, i)
		}
	}
	return hits
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// The cache is bounded by bytes as well as entries (raft.NewLogCache kept
// its 1,024 last entries whatever their size: whole task batches an idle
// node held for ever): it keeps the newest entries that fit both bounds.
func TestLogCacheBounds(t *testing.T) {
	const entry = 1000 // + 128 accounted per entry: 1128 bytes each
	for _, tc := range []struct {
		name                 string
		maxEntries, maxBytes int
		stored               [2]uint64
		want                 []uint64
		wantBytes            int
	}{
		{"under both bounds", 8, 1 << 20, [2]uint64{1, 5}, span(1, 5), 5 * 1128},
		{"entry bound", 4, 1 << 20, [2]uint64{1, 10}, span(7, 10), 4 * 1128},
		{"byte bound", 1024, 3 * 1128, [2]uint64{1, 10}, span(8, 10), 3 * 1128},
		{"byte bound, not a multiple", 1024, 3*1128 + 1000, [2]uint64{1, 10}, span(8, 10), 3 * 1128},
		{"entry bigger than the byte bound", 1024, 1000, [2]uint64{1, 3}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &countingStore{InmemStore: raft.NewInmemStore()}
			c, err := newLogCache(st, tc.maxEntries, tc.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			// In batches of three, as raft appends.
			for i := tc.stored[0]; i <= tc.stored[1]; i += 3 {
				if err := c.StoreLogs(cacheEntries(i, min(i+2, tc.stored[1]), entry)); err != nil {
					t.Fatal(err)
				}
			}
			if got := cached(t, c, st, tc.stored[0], tc.stored[1]); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("cached %v, want %v", got, tc.want)
			}
			if c.bytes != tc.wantBytes {
				t.Errorf("bytes = %d, want %d", c.bytes, tc.wantBytes)
			}
		})
	}
}

// An append that does not continue the cached run (a follower's tail
// rewritten) starts a new run; deleting a prefix or a suffix drops just
// those entries; a failed store write caches nothing.
func TestLogCacheRuns(t *testing.T) {
	st := &countingStore{InmemStore: raft.NewInmemStore()}
	c, err := newLogCache(st, 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.StoreLogs(cacheEntries(1, 10, 10)))
	must(c.DeleteRange(1, 4)) // compaction
	if got := cached(t, c, st, 1, 10); fmt.Sprint(got) != fmt.Sprint(span(5, 10)) {
		t.Fatalf("after deleting 1-4: cached %v", got)
	}
	must(c.DeleteRange(8, 10)) // a conflicting tail
	if got := cached(t, c, st, 1, 10); fmt.Sprint(got) != fmt.Sprint(span(5, 7)) {
		t.Fatalf("after deleting 8-10: cached %v", got)
	}
	must(c.StoreLogs(cacheEntries(8, 9, 10)))
	if got := cached(t, c, st, 1, 10); fmt.Sprint(got) != fmt.Sprint(span(5, 9)) {
		t.Fatalf("after appending 8-9: cached %v", got)
	}
	must(c.StoreLogs(cacheEntries(20, 21, 10))) // not contiguous
	if got := cached(t, c, st, 1, 25); fmt.Sprint(got) != fmt.Sprint(span(20, 21)) {
		t.Fatalf("after appending 20-21: cached %v", got)
	}
	if want := 2 * (10 + 128); c.bytes != want {
		t.Fatalf("bytes = %d, want %d", c.bytes, want)
	}
	must(c.DeleteRange(1, 100))
	if c.n != 0 || c.bytes != 0 {
		t.Fatalf("after deleting everything: %d entries, %d bytes", c.n, c.bytes)
	}
	if _, err := newLogCache(st, 0, 1); err == nil {
		t.Fatal("newLogCache(0 entries) succeeded")
	}
}

// A store on disk keeps raft's recent entries in the bounded cache: after
// many big entries it holds at most logCacheBytes of them (raft's own
// cache kept its 1,024 last entries, here 64 × 32 KiB = 2 MiB), and the
// newest entry is among them.
func TestStoreLogCacheBounded(t *testing.T) {
	s := single(t, options{}, func(c *Config) { c.InMemory, c.DataDir, c.NoSync = false, t.TempDir(), true })
	c, ok := s.logs.(*logCache)
	if !ok {
		t.Fatalf("the store's log is a %T, not the bounded cache", s.logs)
	}
	big := strings.Repeat("x", 32<<10)
	var last uint64
	for i := range 64 {
		svc := mkService(fmt.Sprintf("svc%d", i), fmt.Sprintf("web%d", i))
		svc.Spec.Labels = map[string]string{"big": big}
		last = mustUpdate(t, s, func(tx WriteTx) error { return tx.Create(svc) })
	}
	c.mu.RLock()
	n, bytes, first := c.n, c.bytes, c.first
	c.mu.RUnlock()
	if bytes > logCacheBytes || n == 0 || first+uint64(n)-1 < last {
		t.Fatalf("cache holds %d entries from %d, %d bytes (bound %d); last update at %d", n, first, bytes, logCacheBytes, last)
	}
}

// ForgetCaches empties the log cache: the entries are then read from the
// log, and later appends are cached again.
func TestLogCacheForget(t *testing.T) {
	st := &countingStore{InmemStore: raft.NewInmemStore()}
	c, err := newLogCache(st, 16, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{logs: c}
	if err := c.StoreLogs(cacheEntries(1, 8, 100)); err != nil {
		t.Fatal(err)
	}
	if got := cached(t, c, st, 1, 8); len(got) != 8 {
		t.Fatalf("cached before forgetting: %v, want 1..8", got)
	}
	s.ForgetCaches()
	if got := cached(t, c, st, 1, 8); len(got) != 0 {
		t.Errorf("cached after forgetting: %v, want none", got)
	}
	if c.n != 0 || c.bytes != 0 {
		t.Errorf("after forgetting: %d entries, %d bytes held", c.n, c.bytes)
	}
	for i, l := range c.ring {
		if l != nil {
			t.Fatalf("ring[%d] still points at entry %d", i, l.Index)
		}
	}
	if err := c.StoreLogs(cacheEntries(9, 10, 100)); err != nil {
		t.Fatal(err)
	}
	if got := cached(t, c, st, 1, 10); fmt.Sprint(got) != fmt.Sprint(span(9, 10)) {
		t.Errorf("cached after two more appends: %v, want [9 10]", got)
	}
}
