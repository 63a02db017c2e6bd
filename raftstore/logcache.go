package raftstore

import (
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// logCacheBytes bounds the payload the log cache holds (logCacheSize its
// entries). 512 KiB is several full appends of the write benchmark's
// entries (256 per append), so a follower a few appends behind is still
// served from memory, but a few dozen of the entries that carry a whole
// service's tasks: those are read back from the log's (recent, so page
// cached) segment when needed.
const logCacheBytes = 512 << 10

// logCache keeps the most recent raft log entries in memory in front of
// the on-disk log: the leader reads them back to send to followers, and
// ReadLinearizable to check their type, both almost always from the tail.
//
// It replaces raft.NewLogCache, which keeps the last N entries whatever
// their size: an entry is a whole Update (a service's 100 tasks, a batch
// of task statuses), so the 1,024 it held were a node's largest live
// object once it had written that many, and an idle `shoal dev` kept
// them, never to be read again. This cache is bounded by entries and by
// the bytes they hold (Data and Extensions), evicting the oldest first;
// an entry bigger than the byte bound on its own is not cached (it is
// read back from disk, as any miss is).
//
// The cached entries are a contiguous run of indexes [first, first+n):
// raft appends in index order, so an append that does not continue the
// run (a follower's log rewritten after a conflict) starts a new one.
type logCache struct {
	store      raft.LogStore
	maxEntries int
	maxBytes   int

	mu    sync.RWMutex
	ring  []*raft.Log // ring[(first+i) % len(ring)] is entry first+i, i < n
	first uint64
	n     int
	bytes int // sum of logBytes over the cached entries

	// staged is the leader's batch from StageLogs to the end of the
	// StoreLogs that follows it (consecutive indexes): the replicators
	// read it while the leader writes and syncs it, so it is served
	// whatever the cache's bounds, and before the store has it.
	staged []*raft.Log
}

var _ raft.StagingLogStore = (*logCache)(nil)

// newLogCache wraps store with a cache of at most maxEntries entries and
// maxBytes bytes of entry payload.
func newLogCache(store raft.LogStore, maxEntries, maxBytes int) (*logCache, error) {
	if maxEntries <= 0 || maxBytes <= 0 {
		return nil, fmt.Errorf("log cache: bounds must be positive (entries %d, bytes %d)", maxEntries, maxBytes)
	}
	return &logCache{store: store, maxEntries: maxEntries, maxBytes: maxBytes, ring: make([]*raft.Log, maxEntries)}, nil
}

// logBytes is what an entry costs the cache: its payload, which is what
// varies from a few bytes to megabytes, and a fixed share for the struct.
func logBytes(l *raft.Log) int { return len(l.Data) + len(l.Extensions) + 128 }

// IsMonotonic passes the store's answer on (raft-wal's log is monotonic:
// raft then never asks it to delete a suffix it has already appended to).
func (c *logCache) IsMonotonic() bool {
	m, ok := c.store.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

func (c *logCache) GetLog(idx uint64, out *raft.Log) error {
	c.mu.RLock()
	if len(c.staged) > 0 && idx >= c.staged[0].Index && idx-c.staged[0].Index < uint64(len(c.staged)) {
		*out = *c.staged[idx-c.staged[0].Index]
		c.mu.RUnlock()
		return nil
	}
	if c.n > 0 && idx >= c.first && idx < c.first+uint64(c.n) {
		*out = *c.ring[idx%uint64(len(c.ring))]
		c.mu.RUnlock()
		return nil
	}
	c.mu.RUnlock()
	return c.store.GetLog(idx, out)
}

func (c *logCache) StoreLog(l *raft.Log) error { return c.StoreLogs([]*raft.Log{l}) }

// StageLogs makes a leader's new entries readable before StoreLogs writes
// them: our hashicorp/raft (third_party/hashicorp/raft, SHOAL-PATCH.md)
// then sends them to the followers while it writes and syncs them itself,
// and counts itself toward the quorum only after that StoreLogs returned.
// The entries must be consecutive; a stage replaces the previous one.
func (c *logCache) StageLogs(logs []*raft.Log) {
	c.mu.Lock()
	c.staged = logs
	c.mu.Unlock()
}

// UnstageLogs drops the stage (the leader's write of it failed, and the
// leader has stepped down).
func (c *logCache) UnstageLogs() {
	c.mu.Lock()
	c.staged = nil
	c.mu.Unlock()
}

// StoreLogs writes through to the store and caches the entries only once
// the store took them. A successful write ends a stage (the entries are
// read from the cache or the store from then on); a failed one leaves it
// to raft's UnstageLogs, which comes only once the leader has stepped
// down: a replicator that then finds a dropped entry missing knows it is
// not one compacted into a snapshot.
func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if err := c.store.StoreLogs(logs); err != nil {
		return fmt.Errorf("unable to store logs within log store, err: %q", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range logs {
		c.addLocked(l)
	}
	c.staged = nil
	return nil
}

func (c *logCache) addLocked(l *raft.Log) {
	if c.n > 0 && l.Index != c.first+uint64(c.n) {
		c.resetLocked()
	}
	size := logBytes(l)
	if size > c.maxBytes {
		// Too big to keep; the run it would break is dropped too, so
		// the cache stays contiguous.
		c.resetLocked()
		return
	}
	for c.n > 0 && (c.n >= c.maxEntries || c.bytes+size > c.maxBytes) {
		c.evictOldestLocked()
	}
	if c.n == 0 {
		c.first = l.Index
	}
	c.ring[l.Index%uint64(len(c.ring))] = l
	c.n++
	c.bytes += size
}

func (c *logCache) evictOldestLocked() {
	i := c.first % uint64(len(c.ring))
	c.bytes -= logBytes(c.ring[i])
	c.ring[i] = nil // let the entry be collected
	c.first++
	c.n--
}

func (c *logCache) resetLocked() {
	for c.n > 0 {
		c.evictOldestLocked()
	}
}

// forget empties the cache (a stage in progress stays): for an idle node,
// whose followers have every entry, it is memory kept for nothing — up to
// logCacheBytes of entries, each with the future raft wrote it from.
// Entries appended later are cached again.
func (c *logCache) forget() {
	c.mu.Lock()
	c.resetLocked()
	c.mu.Unlock()
}

func (c *logCache) FirstIndex() (uint64, error) { return c.store.FirstIndex() }

func (c *logCache) LastIndex() (uint64, error) { return c.store.LastIndex() }

// DeleteRange drops the range from the store and from the cache: a
// prefix (compaction after a snapshot) from the front, a suffix (a
// follower's conflicting tail) from the back; anything else empties it.
func (c *logCache) DeleteRange(lo, hi uint64) error {
	c.mu.Lock()
	for c.n > 0 && c.first >= lo && c.first <= hi {
		c.evictOldestLocked()
	}
	for c.n > 0 {
		last := c.first + uint64(c.n) - 1
		if last < lo || last > hi {
			break
		}
		i := last % uint64(len(c.ring))
		c.bytes -= logBytes(c.ring[i])
		c.ring[i] = nil
		c.n--
	}
	if c.n > 0 && lo <= c.first+uint64(c.n)-1 && hi >= c.first {
		c.resetLocked()
	}
	c.mu.Unlock()
	return c.store.DeleteRange(lo, hi)
}
