package raftstore

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// A leader's staged batch is served before the store has it, whatever the
// cache's bounds (more entries than it holds, an entry larger than its
// byte bound), until the StoreLogs that follows; after a failed StoreLogs
// it is served until UnstageLogs (raft steps down first, then drops it),
// and nothing of it afterwards.
func TestLogCacheServesStagedEntries(t *testing.T) {
	st := &countingStore{InmemStore: raft.NewInmemStore()}
	c, err := newLogCache(st, 4, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StoreLogs(cacheEntries(1, 3, 10)); err != nil {
		t.Fatal(err)
	}

	batch := cacheEntries(4, 12, 10)       // more entries than the cache holds
	batch[2] = cacheEntries(6, 6, 5000)[0] // and one larger than its byte bound
	c.StageLogs(batch)
	if got := cached(t, c, st, 1, 12); fmt.Sprint(got) != fmt.Sprint(span(1, 12)) {
		t.Fatalf("staged: served without the store %v, want %v", got, span(1, 12))
	}
	var l raft.Log
	if err := st.GetLog(4, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("the store has a staged entry before StoreLogs: %v", err)
	}

	if err := c.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
	// Written: every entry is readable (from the cache where it fits the
	// bounds, the store otherwise), and the stage is gone.
	for i := uint64(1); i <= 12; i++ {
		if err := c.GetLog(i, &l); err != nil || l.Index != i {
			t.Fatalf("GetLog(%d) after the write: index %d, %v", i, l.Index, err)
		}
	}
	if c.staged != nil {
		t.Fatalf("stage kept after its StoreLogs: %d entries", len(c.staged))
	}

	// A failed write: nothing of the stage stays readable.
	failing := &failingStore{LogStore: st}
	fc, err := newLogCache(failing, 4, 1000)
	if err != nil {
		t.Fatal(err)
	}
	next := cacheEntries(13, 14, 10)
	fc.StageLogs(next)
	if err := fc.GetLog(13, &l); err != nil {
		t.Fatalf("staged entry not served: %v", err)
	}
	if err := fc.StoreLogs(next); err == nil {
		t.Fatal("StoreLogs on a failing store succeeded")
	}
	if err := fc.GetLog(13, &l); err != nil {
		t.Fatalf("the stage was dropped by the failed StoreLogs, before raft's UnstageLogs: %v", err)
	}
	fc.UnstageLogs()
	if err := fc.GetLog(13, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("an entry whose write failed is still readable: %v", err)
	}
}

type failingStore struct{ raft.LogStore }

func (failingStore) StoreLogs([]*raft.Log) error  { return errors.New("disk gone") }
func (f failingStore) StoreLog(l *raft.Log) error { return f.StoreLogs([]*raft.Log{l}) }

// gatedStore is an in-memory log whose StoreLogs, once armed, waits for
// the test to release it, then succeeds or fails as the test says.
type gatedStore struct {
	*raft.InmemStore
	mu      sync.Mutex
	armed   bool
	entered chan struct{} // closed when an armed StoreLogs starts waiting
	release chan error    // the armed StoreLogs' result
	// onStore, if set, is told of every StoreLogs call, as it starts.
	onStore func(logs []*raft.Log)
	// writing counts the StoreLogs and DeleteRange calls in progress,
	// overlaps those that started while another was (raft must never
	// write its log from two goroutines at once).
	writing, overlaps atomic.Int32
}

func (g *gatedStore) DeleteRange(min, max uint64) error {
	defer g.enterWrite()()
	return g.InmemStore.DeleteRange(min, max)
}

// enterWrite counts a log write in progress; call what it returns when
// the write ends.
func (g *gatedStore) enterWrite() func() {
	if g.writing.Add(1) > 1 {
		g.overlaps.Add(1)
	}
	return func() { g.writing.Add(-1) }
}

func newGatedStore() *gatedStore { return &gatedStore{InmemStore: raft.NewInmemStore()} }

func (g *gatedStore) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed = true
	g.entered = make(chan struct{})
	g.release = make(chan error, 1)
}

func (g *gatedStore) StoreLogs(logs []*raft.Log) error {
	defer g.enterWrite()()
	g.mu.Lock()
	armed, entered, release, onStore := g.armed, g.entered, g.release, g.onStore
	g.armed = false
	g.mu.Unlock()
	if onStore != nil {
		onStore(logs)
	}
	if armed {
		close(entered)
		if err := <-release; err != nil {
			return err
		}
	}
	return g.InmemStore.StoreLogs(logs)
}

func (g *gatedStore) StoreLog(l *raft.Log) error { return g.StoreLogs([]*raft.Log{l}) }

// countFSM records the commands it applied, in order, and how many
// snapshots it restored.
type countFSM struct {
	mu       sync.Mutex
	applied  []string
	restores int
	// snapshotted, if set, is told of each Snapshot call.
	snapshotted chan struct{}
}

func (f *countFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, string(l.Data))
	return nil
}

func (f *countFSM) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.applied...)
}

func (f *countFSM) restored() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restores
}

// Snapshot and Restore carry the applied list (one command a line).
func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	ch := f.snapshotted
	f.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return listSnapshot(f.list()), nil
}

func (f *countFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	var applied []string
	if len(b) > 0 {
		applied = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = applied
	f.restores++
	return nil
}

type listSnapshot []string

func (s listSnapshot) Persist(sink raft.SnapshotSink) error {
	var b strings.Builder
	for _, c := range s {
		b.WriteString(c + "\n")
	}
	if _, err := sink.Write([]byte(b.String())); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (listSnapshot) Release() {}

type stagedNode struct {
	id    raft.ServerID
	raft  *raft.Raft
	logs  *hookedLog
	store *gatedStore
	fsm   *countFSM
	trans *raft.InmemTransport // nil in stagedNetCluster's nodes
	// transport is what raft runs on: trans, or a TCP transport.
	transport raft.Transport
}

// hookedLog is the log cache raft is given, with hooks a test sets: one
// run after the cache dropped its stage (raft's UnstageLogs, on the
// leader's main goroutine), one told of every lookup that found nothing.
type hookedLog struct {
	*logCache
	mu           sync.Mutex
	afterUnstage func()
	onMiss       func(idx uint64)
	// onGet, if set, is told of every lookup.
	onGet func(idx uint64)
}

func (h *hookedLog) setHooks(afterUnstage func(), onMiss func(uint64)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.afterUnstage, h.onMiss = afterUnstage, onMiss
}

func (h *hookedLog) setGetHook(f func(idx uint64)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onGet = f
}

func (h *hookedLog) UnstageLogs() {
	h.logCache.UnstageLogs()
	h.mu.Lock()
	f := h.afterUnstage
	h.mu.Unlock()
	if f != nil {
		f()
	}
}

func (h *hookedLog) GetLog(idx uint64, out *raft.Log) error {
	h.mu.Lock()
	get := h.onGet
	h.mu.Unlock()
	if get != nil {
		get(idx)
	}
	err := h.logCache.GetLog(idx, out)
	if errors.Is(err, raft.ErrLogNotFound) {
		h.mu.Lock()
		f := h.onMiss
		h.mu.Unlock()
		if f != nil {
			f(idx)
		}
	}
	return err
}

// stagedCluster starts three raft nodes over the in-memory transport,
// each with the shoal log cache in front of a gated in-memory log, and
// returns them with the leader first. tune, if given, adjusts each node's
// raft configuration.
func stagedCluster(t *testing.T, tune ...func(*raft.Config)) []*stagedNode {
	t.Helper()
	var nodes []*stagedNode
	for i := 0; i < 3; i++ {
		id := raft.ServerID(fmt.Sprintf("n%d", i))
		_, trans := raft.NewInmemTransport(raft.ServerAddress(id))
		nodes = append(nodes, &stagedNode{id: id, store: newGatedStore(), fsm: &countFSM{}, trans: trans, transport: trans})
	}
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				a.trans.Connect(b.trans.LocalAddr(), b.trans)
			}
		}
	}
	return startStaged(t, nodes, tune)
}

// startStaged bootstraps and starts nodes (with their transports) as one
// cluster and returns them with the leader first, once its no-op is
// applied everywhere.
func startStaged(t *testing.T, nodes []*stagedNode, tune []func(*raft.Config)) []*stagedNode {
	t.Helper()
	var servers []raft.Server
	for _, nd := range nodes {
		servers = append(servers, raft.Server{ID: nd.id, Address: nd.transport.LocalAddr(), Suffrage: raft.Voter})
	}
	for _, nd := range nodes {
		conf := raft.DefaultConfig()
		conf.LocalID = nd.id
		conf.HeartbeatTimeout = 100 * time.Millisecond
		conf.ElectionTimeout = 100 * time.Millisecond
		conf.LeaderLeaseTimeout = 50 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
		conf.Logger = hclog.NewNullLogger()
		for _, f := range tune {
			f(conf)
		}
		cache, err := newLogCache(nd.store, 64, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		logs := &hookedLog{logCache: cache}
		nd.logs = logs
		stable := raft.NewInmemStore()
		snaps := raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(conf, logs, stable, snaps, nd.transport, raft.Configuration{Servers: servers}); err != nil {
			t.Fatal(err)
		}
		r, err := raft.NewRaft(conf, nd.fsm, logs, stable, snaps, nd.transport)
		if err != nil {
			t.Fatal(err)
		}
		nd.raft = r
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			// A gated write still waiting would hold its node's shutdown.
			nd.store.mu.Lock()
			if nd.store.release != nil {
				select {
				case nd.store.release <- errors.New("test over"):
				default:
				}
			}
			nd.store.mu.Unlock()
			nd.raft.Shutdown().Error()
		}
	})
	leader := leaderOf(t, nodes)
	// Let the leader's first entry (its no-op) commit everywhere, so the
	// test's entry is the only one in flight.
	if err := leader.raft.Barrier(waitFor).Error(); err != nil {
		t.Fatal(err)
	}
	out := []*stagedNode{leader}
	for _, nd := range nodes {
		if nd != leader {
			out = append(out, nd)
		}
	}
	return out
}

// blockedApply arms the leader's log and applies data, returning once the
// leader's StoreLogs of the entry waits for the test's release.
func blockedApply(leader *stagedNode, data string) raft.ApplyFuture {
	leader.store.arm()
	fut := leader.raft.Apply([]byte(data), 0)
	<-leader.store.entered
	return fut
}

// followersHold waits until every follower given stores entry idx.
func followersHold(t *testing.T, idx uint64, followers ...*stagedNode) {
	t.Helper()
	eventually(t, "the followers store the entry while the leader's write waits", func() error {
		for _, f := range followers {
			if err := hasEntry(f, idx); err != nil {
				return err
			}
		}
		return nil
	})
}

// leaderOf waits for a leader among nodes and returns it.
func leaderOf(t *testing.T, nodes []*stagedNode) *stagedNode {
	t.Helper()
	var leader *stagedNode
	eventually(t, "a leader", func() error {
		for _, nd := range nodes {
			if nd.raft.State() == raft.Leader {
				leader = nd
				return nil
			}
		}
		return errors.New("no leader")
	})
	return leader
}

// sameApplied waits until every node applied the same commands as the
// leader, ending with last.
func sameApplied(t *testing.T, nodes []*stagedNode, leader *stagedNode, last string) []string {
	t.Helper()
	var want []string
	eventually(t, "every node applies the same commands", func() error {
		want = leader.fsm.list()
		if len(want) == 0 || want[len(want)-1] != last {
			return fmt.Errorf("leader %s applied %q", leader.id, want)
		}
		for _, nd := range nodes {
			if got := nd.fsm.list(); fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("%s applied %q, leader %q", nd.id, got, want)
			}
		}
		return nil
	})
	return want
}

func hasEntry(nd *stagedNode, idx uint64) error {
	var l raft.Log
	if err := nd.store.InmemStore.GetLog(idx, &l); err != nil {
		return fmt.Errorf("%s: entry %d: %v", nd.id, idx, err)
	}
	return nil
}

// The leader sends a new entry to the followers while its own write of it
// is still in flight (hashicorp/raft unpatched writes and syncs first, then
// replicates): both followers store it while the leader's StoreLogs waits,
// and the write is acknowledged only after that StoreLogs returned.
func TestLeaderReplicatesWhileItWrites(t *testing.T) {
	nodes := stagedCluster(t)
	leader := nodes[0]
	idx := leader.raft.LastIndex() + 1

	fut := blockedApply(leader, "x")
	followersHold(t, idx, nodes[1:]...)
	done := errOf(fut)
	select {
	case <-done:
		t.Fatal("the write was acknowledged before the leader's own StoreLogs returned")
	default:
	}
	leader.store.release <- nil
	if err := <-done; err != nil {
		t.Fatalf("apply: %v", err)
	}
	if got := sameApplied(t, nodes, leader, "x"); fmt.Sprint(got) != "[x]" {
		t.Fatalf("applied %q, want [x]", got)
	}
}

// errOf hands over f's error once it has one. Only its goroutine calls
// f.Error: raft's futures cache the error unguarded, so two goroutines
// calling it race.
func errOf(f raft.Future) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f.Error() }()
	return ch
}

// If the leader's own write fails after a follower received the entry,
// the leader answers the write with the error, steps down, and forgets
// the entry it staged; the cluster then agrees again: the same entries at
// the same indexes on every node (the failed one included or not, as the
// new leader decides), the same commands applied in the same order, and
// new writes go through.
func TestLeaderWriteFailureAfterStaging(t *testing.T) {
	nodes := stagedCluster(t)
	leader := nodes[0]
	idx := leader.raft.LastIndex() + 1

	// One follower only, so the quorum needs the leader's own write.
	leader.trans.Disconnect(nodes[2].trans.LocalAddr())
	nodes[2].trans.Disconnect(leader.trans.LocalAddr())

	fut := blockedApply(leader, "lost")
	followersHold(t, idx, nodes[1])
	leader.store.release <- errors.New("disk gone")
	if err := fut.Error(); err == nil {
		t.Fatal("a write whose leader failed to store it was acknowledged")
	} else if !errors.Is(err, raft.ErrLeadershipLost) {
		// A follower holds the entry: its fate is unknown, as when a
		// leader is deposed with entries in flight.
		t.Fatalf("the failed write's error is %v, want one that is ErrLeadershipLost (the entry may still commit)", err)
	}
	if got := nodes[1].fsm.list(); len(got) != 0 {
		t.Fatalf("the follower applied %q, committed without the leader's copy", got)
	}
	if err := hasEntry(leader, idx); err == nil {
		t.Fatal("the failed entry is in the old leader's log")
	}

	leader.trans.Connect(nodes[2].trans.LocalAddr(), nodes[2].trans)
	nodes[2].trans.Connect(leader.trans.LocalAddr(), leader.trans)
	newLeader := leaderOf(t, nodes)
	if err := newLeader.raft.Apply([]byte("after"), waitFor).Error(); err != nil {
		t.Fatalf("write after the failure: %v", err)
	}
	last := newLeader.raft.LastIndex()
	sameApplied(t, nodes, newLeader, "after")
	eventually(t, "every node holds the same log", func() error {
		for _, nd := range nodes {
			for i := idx; i <= last; i++ {
				var a, b raft.Log
				if err := nd.store.InmemStore.GetLog(i, &a); err != nil {
					return fmt.Errorf("%s: entry %d: %v", nd.id, i, err)
				}
				if err := newLeader.store.InmemStore.GetLog(i, &b); err != nil {
					return fmt.Errorf("leader: entry %d: %v", i, err)
				}
				if a.Term != b.Term || string(a.Data) != string(b.Data) {
					return fmt.Errorf("%s: entry %d is term %d %q, leader's term %d %q", nd.id, i, a.Term, a.Data, b.Term, b.Data)
				}
			}
		}
		return nil
	})
}
