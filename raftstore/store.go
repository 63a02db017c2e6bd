package raftstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

const (
	// defaultApplyTimeout bounds a raft call whose ctx has no deadline.
	defaultApplyTimeout = 10 * time.Second
	// retainedSnapshots is how many snapshots stay on disk.
	retainedSnapshots = 2
	// logCacheSize keeps recent entries in memory: the leader reads them
	// back to replicate, and ReadLinearizable to check their type. Four
	// full batches (maxAppendEntries), so a follower a few batches behind
	// is served from memory.
	logCacheSize = 1024
	// maxAppendEntries caps both the entries raft writes to the log in one
	// append (one fdatasync) and the entries sent to a follower in one
	// AppendEntries: raft's default of 64 cut a burst from 256 writers into
	// four syncs on every server. It also caps the entries raft hands the
	// FSM's ApplyBatch at once (batch.go).
	maxAppendEntries = 256
)

// Store is the raft-replicated object store. See api.go for the method list
// and doc.go for how it is used.
type Store struct {
	cfg  Config
	log  *slog.Logger
	raft *raft.Raft
	fsm  *fsm
	hub  *hub
	lead *leadership
	// logs is raft's log store (behind a cache), read by ReadLinearizable.
	logs raft.LogStore
	// bolt is the on-disk stable store (raft.db); nil in memory.
	bolt *raftboltdb.BoltStore
	// wal is the on-disk log (logstore.go); nil in memory.
	wal *walLog
	now func() time.Time

	observer    *raft.Observer
	obsCh       chan raft.Observation
	stopObserve chan struct{}
	// wg counts the observer loop and the leader barriers it starts.
	wg sync.WaitGroup

	done      chan struct{} // closed when Close starts
	closeOnce sync.Once
	closeErr  error
}

// options are knobs for tests, not part of Config.
type options struct {
	watchRing int              // events kept for resuming watches (default 16384)
	now       func() time.Time // clock stamped into entries (default time.Now)
}

// Open starts the store: it opens (or creates) the raft log, stable and
// snapshot stores, restores the latest snapshot, bootstraps a one-voter
// cluster when asked to and no raft state exists yet, and joins raft.
func Open(cfg Config) (*Store, error) {
	return open(cfg, options{})
}

func open(cfg Config, opts options) (*Store, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("raftstore: Config.NodeID is required")
	}
	if cfg.Transport == nil {
		return nil, errors.New("raftstore: Config.Transport is required")
	}
	if !cfg.InMemory && cfg.DataDir == "" {
		return nil, errors.New("raftstore: Config.DataDir is required unless InMemory")
	}
	if cfg.Addr == "" {
		cfg.Addr = string(cfg.Transport.LocalAddr())
	}
	setDefaults(&cfg)
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "raftstore")
	hlog := NewHCLog(logger, "raft")

	s := &Store{
		cfg: cfg, log: logger, hub: newHub(opts.watchRing), lead: newLeadership(), now: opts.now,
		obsCh: make(chan raft.Observation, 16), stopObserve: make(chan struct{}), done: make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.fsm = newFSM(logger, s.hub)
	s.fsm.onApply = cfg.OnApply

	var (
		stable raft.StableStore
		snaps  raft.SnapshotStore
	)
	if cfg.InMemory {
		mem := raft.NewInmemStore()
		s.logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		var err error
		if err = os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("raftstore: %w", err)
		}
		bopts := *bbolt.DefaultOptions
		bopts.Timeout = 5 * time.Second // another process holding raft.db fails instead of hanging
		// The freelist is rebuilt on open instead of written on every
		// commit: one page less per fsync'd raft append.
		bopts.NoFreelistSync = true
		bopts.FreelistType = bbolt.FreelistMapType
		path := filepath.Join(cfg.DataDir, "raft.db")
		if s.bolt, err = raftboltdb.New(raftboltdb.Options{Path: path, NoSync: cfg.NoSync, BoltOptions: &bopts}); err != nil {
			return nil, fmt.Errorf("raftstore: opening %s: %w", path, err)
		}
		if err = checkDataDirFormat(s.bolt, cfg.DataDir, raftboltdb.ErrKeyNotFound); err != nil {
			s.bolt.Close()
			return nil, fmt.Errorf("raftstore: %w", err)
		}
		if snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, retainedSnapshots, hlog.Named("snapshots")); err != nil {
			s.bolt.Close()
			return nil, fmt.Errorf("raftstore: opening the snapshot store: %w", err)
		}
		if s.wal, err = openLogStore(cfg.DataDir, s.bolt, cfg.NoSync, hlog, logger); err != nil {
			s.bolt.Close()
			return nil, fmt.Errorf("raftstore: %w", err)
		}
		if s.logs, err = newLogCache(s.wal, logCacheSize, logCacheBytes); err != nil {
			s.wal.Close()
			s.bolt.Close()
			return nil, fmt.Errorf("raftstore: %w", err)
		}
		stable = s.bolt
	}
	fail := func(err error) (*Store, error) {
		if s.wal != nil {
			s.wal.Close()
		}
		if s.bolt != nil {
			s.bolt.Close()
		}
		return nil, fmt.Errorf("raftstore: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.Logger = hlog
	// Concurrent Apply calls are queued and written as one batch (one
	// fsync) while the previous batch is being written.
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = maxAppendEntries
	if err := raft.ValidateConfig(rc); err != nil {
		return fail(err)
	}

	if cfg.Bootstrap {
		exists, err := raft.HasExistingState(s.logs, stable, snaps)
		if err != nil {
			return fail(fmt.Errorf("checking for raft state: %w", err))
		}
		if !exists {
			conf := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter, ID: raft.ServerID(cfg.NodeID), Address: raft.ServerAddress(cfg.Addr),
			}}}
			if err := raft.BootstrapCluster(rc, s.logs, stable, snaps, cfg.Transport, conf); err != nil {
				return fail(fmt.Errorf("bootstrapping: %w", err))
			}
			logger.Info("bootstrapped a new raft cluster", "node_id", cfg.NodeID, "addr", cfg.Addr)
		}
	}

	r, err := raft.NewRaft(rc, s.fsm, s.logs, stable, snaps, cfg.Transport)
	if err != nil {
		return fail(err)
	}
	s.raft = r
	s.observer = raft.NewObserver(s.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			return true
		}
		return false
	})
	r.RegisterObserver(s.observer)
	s.wg.Add(1)
	go s.observe()
	return s, nil
}

func setDefaults(c *Config) {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.HeartbeatTimeout, 400*time.Millisecond)
	def(&c.ElectionTimeout, 400*time.Millisecond)
	// The lease equals the heartbeat timeout (the most raft allows): at
	// 200 ms a CPU-starved leader stepped down in 2 of 4 three-node
	// runs at 256 writers (docs/performance.md), 0 of 4 at 400 ms. It
	// only bounds how long a cut-off leader believes it leads; failover
	// after a crash is the followers' heartbeat timeout.
	def(&c.LeaderLeaseTimeout, 400*time.Millisecond)
	def(&c.CommitTimeout, 10*time.Millisecond)
	def(&c.SnapshotInterval, 2*time.Minute)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.MaxEntryBytes <= 0 {
		c.MaxEntryBytes = DefaultMaxEntryBytes
	}
}

// Close shuts raft down, ends every watch with ErrClosed and closes the
// log store. It is idempotent. Views taken before stay readable.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		err := s.raft.Shutdown().Error()
		s.raft.DeregisterObserver(s.observer)
		close(s.stopObserve)
		s.wg.Wait()
		s.hub.close()
		s.lead.broadcast()
		if s.wal != nil {
			if cerr := s.wal.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}
		if s.bolt != nil {
			if cerr := s.bolt.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}
		if err != nil {
			s.closeErr = fmt.Errorf("raftstore: closing: %w", err)
		}
	})
	return s.closeErr
}

// Raft exposes the raft instance (stats, tests, advanced membership).
func (s *Store) Raft() *raft.Raft { return s.raft }

// AppliedIndex is the index of the last raft entry applied to the local
// state (configuration entries included).
func (s *Store) AppliedIndex() uint64 { return s.fsm.appliedIndex() }

// View returns the local applied state, without a raft round trip. On a
// follower it may lag the leader.
func (s *Store) View() Reader { return s.fsm.view() }

// Watch streams the changes of entries with index >= fromIndex (0: from the
// next entry applied), restricted to kinds (none: all). Events already
// applied are replayed from a ring of recent events; a fromIndex older than
// the ring fails with ErrCompacted, and the caller must read a View and
// watch from its Index()+1. The subscription ends with ctx.Err() when ctx
// ends, ErrSlowConsumer when its consumer falls a whole ring (16384 events,
// and at least the last entry) behind, ErrRestored when a snapshot replaces
// the state, and ErrClosed on Close.
func (s *Store) Watch(ctx context.Context, fromIndex uint64, kinds ...Kind) (Subscription, error) {
	sub, err := s.hub.watch(ctx, fromIndex, kinds)
	if err != nil {
		return nil, err
	}
	return sub, nil
}

// WatchFiltered is Watch delivering only the events keep accepts. keep
// runs inside the hub, on the ring, so a subscriber that wants a small
// part of the events (a dispatcher session: its node's tasks among every
// node's) costs one call per event instead of a channel hand-off and a
// wake-up per event. keep is called with the hub's lock held: it must be
// quick, must not block and must not call the store.
func (s *Store) WatchFiltered(ctx context.Context, fromIndex uint64, keep func(*shoalv1.WatchEvent) bool, kinds ...Kind) (Subscription, error) {
	sub, err := s.hub.watchFiltered(ctx, fromIndex, kinds, keep)
	if err != nil {
		return nil, err
	}
	return sub, nil
}

// WatchNode is WatchFiltered for one node's session, routed instead of
// filtered by every subscriber: the hub hands a task event (of a task on
// no network, nor on one before the update) only to the subscriptions of
// the task's node, and offers
// keep only those and the events of other kinds and of tasks on networks.
// Each subscription has its own queue, so a burst of tasks spread over
// 5,000 nodes costs one append per event, not 5,000 filter calls per
// event inside the FSM's apply (see docs/benchmarks-history.md, "Scheduler at scale"). keep
// has WatchFiltered's constraints; a subscriber is cut off
// (ErrSlowConsumer) when a ring's worth of its events wait unread. keep
// is also given the object an update replaced (KeepFunc).
func (s *Store) WatchNode(ctx context.Context, fromIndex uint64, nodeID string, keep KeepFunc, kinds ...Kind) (NodeSubscription, error) {
	sub, err := s.hub.watchNode(ctx, fromIndex, nodeID, kinds, keep)
	if err != nil {
		return nil, err
	}
	return sub, nil
}

// Update runs fn on a WriteTx over a fresh view and proposes its changes as
// one raft entry, applied all-or-nothing; it returns the entry's index (0
// when fn changed nothing: nothing is proposed). A change that encodes to
// more than Config.MaxEntryBytes is refused with ErrEntryTooLarge before it
// reaches raft. Only the leader accepts
// writes: elsewhere it fails with ErrNotLeader naming the leader. Errors of
// fn, and the FSM's verdict at apply time (ErrVersionConflict, ErrExists,
// ErrNotFound), come back as they are. If ctx ends while the entry is in
// flight, Update returns ctx's error and the entry may still be applied.
func (s *Store) Update(ctx context.Context, fn func(WriteTx) error) (uint64, error) {
	if err := s.awaitLeader(ctx); err != nil {
		return 0, err
	}
	tx := newWriteTx(s.fsm.view())
	if err := fn(tx); err != nil {
		return 0, err
	}
	ops := tx.ops()
	if len(ops) == 0 {
		return 0, nil
	}
	act := &shoalv1.StoreAction{Ops: ops, Time: timestamppb.New(s.now())}
	data, err := proto.Marshal(act)
	if err != nil {
		return 0, fmt.Errorf("raftstore: encoding the change: %w", err)
	}
	if len(data) > s.cfg.MaxEntryBytes {
		return 0, fmt.Errorf("raftstore: the change (%d objects) encodes to %d bytes, above the limit of %d bytes for one raft entry; split it into smaller writes: %w",
			len(ops), len(data), s.cfg.MaxEntryBytes, ErrEntryTooLarge)
	}
	timeout, err := timeoutOf(ctx)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	p, release := s.fsm.proposeEntry(data, act, tx.patched)
	defer release()
	if p == nil { // no bytes: nothing the FSM could recognise
		p = &proposal{}
	}
	// Taken before the entry goes to raft, so that a change of leadership
	// from here on is seen (waitApply).
	lead := s.lead.current()
	if s.raft.State() != raft.Leader {
		// Leadership was lost since awaitLeader (while fn ran, say), and
		// its broadcast may have come before lead was taken: nothing
		// might ever close lead, and raft fails the entry without the FSM
		// seeing it. Wait on raft's future instead (it fails at once).
		lead = closedChan
	}
	f := s.raft.Apply(data, timeout)
	byFSM, err := s.waitApply(ctx, f, p.applied, lead)
	if err != nil {
		return 0, s.mapRaftError("applying the change", err)
	}
	if s.cfg.OnCommit != nil {
		s.cfg.OnCommit(time.Since(start))
	}
	res, index := p.result, p.index
	if !byFSM {
		res, index = f.Response(), f.Index()
	}
	if rerr, ok := res.(error); ok && rerr != nil {
		return 0, rerr
	}
	return index, nil
}

// ReadLinearizable returns a view that reflects every write acknowledged
// anywhere before the call: it confirms this server still leads (a quorum
// round trip) and waits until the local state has applied the last entry
// the leader had when the call began. Leader only.
func (s *Store) ReadLinearizable(ctx context.Context) (Reader, error) {
	if err := s.awaitLeader(ctx); err != nil {
		return nil, err
	}
	last := s.raft.LastIndex()
	if err := s.wait(ctx, s.raft.VerifyLeader()); err != nil {
		return nil, s.mapRaftError("verifying leadership", err)
	}
	if err := s.fsm.waitApplied(ctx, s.lastStateIndex(last), s.done); err != nil {
		return nil, err
	}
	return s.fsm.view(), nil
}

// lastStateIndex returns the index of the last entry at or before last that
// reaches the FSM. No-op and barrier entries never do, so waiting for them
// would never end; stepping back over them (there are rarely more than one
// or two at the tail) finds the index the applied index will reach.
func (s *Store) lastStateIndex(last uint64) uint64 {
	applied := s.fsm.appliedIndex()
	for i := last; i > applied; i-- {
		var l raft.Log
		if err := s.logs.GetLog(i, &l); err != nil {
			// Compacted into a snapshot, so already applied.
			return applied
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return i
		}
	}
	return applied
}

// awaitLeader returns nil once this server is a ready leader. A leader still
// applying its predecessors' entries is waited for (briefly); a follower
// fails at once with ErrNotLeader.
func (s *Store) awaitLeader(ctx context.Context) error {
	for {
		select {
		case <-s.done:
			return ErrClosed
		default:
		}
		ch := s.lead.current()
		if s.IsLeader() {
			return nil
		}
		if s.raft.State() != raft.Leader {
			_, addr := s.Leader()
			return errNotLeader(addr)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for leadership to be confirmed: %w", ctx.Err())
		case <-s.done:
			return ErrClosed
		}
	}
}

// closedChan is a closed channel: a wake-up already due.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// waitApply waits for the future of an entry Update proposed, giving up
// when ctx ends. The FSM closes applied once it has applied the entry here,
// so a write is answered without a goroutine of its own waiting on raft's
// future (wait's); byFSM then says that the proposal holds the FSM's
// verdict and the entry's index, which raft's future will hold too once
// raft answers it, at the end of the entry's batch. An entry that fails
// instead never reaches the
// FSM: raft fails it when this server stops leading (lead is closed at that
// change; raft answers the future first or soon after) or shuts down
// (done), and wait then takes over. The one failure no event announces,
// raft's enqueue timeout, fires at ctx's deadline (Update passes what is
// left of it as the timeout), so a ctx without a deadline uses wait.
func (s *Store) waitApply(ctx context.Context, f raft.Future, applied, lead <-chan struct{}) (byFSM bool, err error) {
	if _, ok := ctx.Deadline(); !ok {
		return false, s.wait(ctx, f)
	}
	select {
	case <-applied:
		return true, nil
	case <-lead:
	case <-s.done:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	return false, s.wait(ctx, f)
}

// wait waits for a raft future, giving up when ctx ends (the operation
// itself goes on in raft).
//
// It also gives up when the store closes: raft's applyCh is buffered
// (BatchApplyCh), so an entry enqueued as raft shuts down may never be
// answered, and a caller without a deadline would wait forever (a
// goroutine and the caller leaked per write racing Close).
func (s *Store) wait(ctx context.Context, f raft.Future) error {
	ch := make(chan error, 1)
	go func() { ch <- f.Error() }()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		select {
		case err := <-ch: // answered after all: the verdict
			return err
		default:
			return ErrClosed
		}
	}
}

// timeoutOf is the raft enqueue timeout for ctx: its deadline, or 10s.
func timeoutOf(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return defaultApplyTimeout, nil
	}
	d := time.Until(dl)
	if d <= 0 {
		return 0, context.DeadlineExceeded
	}
	return d, nil
}

// Members lists the raft configuration, marking the leader.
func (s *Store) Members() ([]Member, error) {
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, s.mapRaftError("reading the raft configuration", err)
	}
	leaderID, _ := s.Leader()
	var out []Member
	for _, srv := range cf.Configuration().Servers {
		out = append(out, Member{
			ID: string(srv.ID), Addr: string(srv.Address), Suffrage: suffrageName(srv.Suffrage),
			Leader: leaderID != "" && string(srv.ID) == leaderID,
		})
	}
	return out, nil
}

func suffrageName(s raft.ServerSuffrage) string {
	switch s {
	case raft.Voter:
		return "voter"
	case raft.Nonvoter:
		return "nonvoter"
	case raft.Staging:
		return "staging"
	}
	return s.String()
}

// AddVoter adds (or re-addresses) a voting member. It is a no-op when id is
// already a voter at addr. Leader only.
func (s *Store) AddVoter(ctx context.Context, id, addr string) error {
	if err := s.awaitLeader(ctx); err != nil {
		return err
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return s.mapRaftError("reading the raft configuration", err)
	}
	for _, srv := range cf.Configuration().Servers {
		if string(srv.ID) == id && string(srv.Address) == addr && srv.Suffrage == raft.Voter {
			return nil
		}
	}
	timeout, err := timeoutOf(ctx)
	if err != nil {
		return err
	}
	f := s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	if err := s.wait(ctx, f); err != nil {
		return s.mapRaftError(fmt.Sprintf("adding voter %q at %q", id, addr), err)
	}
	s.log.Info("raft voter added", "node_id", id, "addr", addr)
	return nil
}

// RemoveServer removes a member; removing one that is not a member is a
// no-op. Leader only.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	if err := s.awaitLeader(ctx); err != nil {
		return err
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return s.mapRaftError("reading the raft configuration", err)
	}
	found := false
	for _, srv := range cf.Configuration().Servers {
		found = found || string(srv.ID) == id
	}
	if !found {
		return nil
	}
	timeout, err := timeoutOf(ctx)
	if err != nil {
		return err
	}
	if err := s.wait(ctx, s.raft.RemoveServer(raft.ServerID(id), 0, timeout)); err != nil {
		return s.mapRaftError(fmt.Sprintf("removing server %q", id), err)
	}
	s.log.Info("raft server removed", "node_id", id)
	return nil
}

// Snapshot takes a raft snapshot now and compacts the log. Having nothing
// new to snapshot is not an error.
func (s *Store) Snapshot() error {
	err := s.raft.Snapshot().Error()
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	return s.mapRaftError("taking a snapshot", err)
}
