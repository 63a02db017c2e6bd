package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/metrics"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// Defaults for the cluster settings of the same names: a node is DOWN after
// 500 ms x 4 = 2 s without a heartbeat. Chosen from measurements in the e2e
// fabric on a loaded 2-core machine:
//   - a kill -9 of a node's shoal process and an immediate `shoal daemon`
//     has its session open again 0.10 s (p50) / 0.14 s (max of 20) after
//     the kill (TestKill9RestartMovesNothing, load average ~3.5), and
//     0.37 s / 0.50 s with two extra CPU burners (load average ~8). The
//     last heartbeat can be a period before the kill, so a restart must
//     fit in 2 s - 0.5 s = 1.5 s: 3x the worst start measured under load.
//     A kill -9 + restart of the leader of 3 managers takes 0.64 s / 1.0 s
//     (0.82 s / 1.27 s loaded; TestKill9LeaderRestartMovesNothing), but
//     the next leader's dispatcher counts from its own start, after the
//     election, so that fits too;
//   - a power cut is seen DOWN after 1.87 s (p50) and all the node's tasks
//     run elsewhere 2.11 s (p50) / 2.31 s (max of 10) after it
//     (BenchmarkPowerCut), inside the 3 s aimed at.
//
// A shorter threshold would gain little and turn a manager stalled for a
// second (GC, a starved CPU) into mass replacement; a planned restart
// (Goodbye) does not depend on it at all (DefaultRestartGrace).
const (
	DefaultHeartbeatPeriod = 500 * time.Millisecond
	DefaultDownAfterMissed = 4
)

// heartbeatBudget is how many heartbeats a second the leader is sized
// for. Beyond budget × period nodes the period a session is told grows
// with the node count (as SwarmKit's does), keeping the leader at about
// budget heartbeats and as many acknowledgements a second: at 5,000 nodes
// and 500 ms, heartbeats and their acks were 29 % of the leader's gRPC
// writes and a whole core of this machine (docs/benchmarks-history.md,
// "Scheduler at scale").
// Up to 500 nodes nothing changes (500 ms, DOWN after 2 s); at 1,000 the
// period is 1 s (DOWN after 4 s), at 5,000 5 s (DOWN after 20 s). A node
// that gossip sees dead is still marked DOWN after two of the configured
// periods (1 s), whatever the scaled period: see verdict.
const heartbeatBudget = 1000

// scaledPeriod is the heartbeat period told to a session when the cluster
// has nodes nodes and the configured period is base.
func scaledPeriod(base time.Duration, nodes int) time.Duration {
	return max(base, time.Duration(nodes)*time.Second/heartbeatBudget)
}

// Config configures a Dispatcher.
type Config struct {
	Store  *raftstore.Store
	Logger *slog.Logger
	// Managers returns manager API addresses, leader first.
	Managers func() []string
	// StatusFlush is the longest a status update waits to be batched
	// (default 2 ms). Batches also form by themselves: updates that arrive
	// while a batch is being committed wait for the next one.
	StatusFlush time.Duration
	// Gossip is this manager's gossip view, used while it leads to
	// corroborate heartbeats (see verdict) and recorded in NodeStatus.
	// Nil: heartbeats alone decide.
	Gossip GossipView
	// Metrics counts sessions, heartbeats and status batch sizes (nil:
	// none).
	Metrics *metrics.Manager

	// Tests: called by the liveness monitor between its verdict that a
	// node is down and the write of it (beforeDown), and after the write
	// (markedDown, with its error: errSeenSince if the node was heard of
	// in between).
	beforeDown func(nodeID string)
	markedDown func(nodeID string, err error)
}

// Dispatcher implements shoalv1.DispatcherServer.
type Dispatcher struct {
	shoalv1.UnimplementedDispatcherServer
	cfg Config
	log *slog.Logger

	mu sync.Mutex // guards the fields below
	// runCtx is non-nil while Run is active (this manager leads).
	runCtx   context.Context
	sessions map[string]*session // by node id
	lastSeen map[string]time.Time
	// told is the heartbeat period each node's last session was told
	// (scaledPeriod): the node is judged by it, not by the period of the
	// cluster's size now, which may have shrunk since.
	told     map[string]time.Duration
	statusCh chan statusUpdate
	opens    chan openRequest // session openings to write (openings.go)
	// nodes is the cluster's node count, as the liveness monitor last saw
	// it (scaledPeriod), so a session opening does not list the nodes.
	nodes atomic.Int64
	// scaled is the heartbeat period a session is to use now
	// (scaledPeriod of the settings and node count the liveness monitor
	// last read; 0 before its first tick): open sessions are told it in
	// a heartbeat's acknowledgement when it changes (session.go, ackFor).
	scaled atomic.Int64

	// sessionEventsTaken counts the events the sessions took from their
	// subscriptions (read by tests and benchmarks).
	sessionEventsTaken atomic.Int64

	nets  netCache  // network states shared by the sessions (networks.go)
	peers peerCache // gossip join candidates shared by the sessions
	// filter is what the sessions' store filters share (sessionEvents).
	filter filterShared
	// mgrs is the manager list open sessions are told (managers.go).
	mgrs atomic.Pointer[managerList]
	// writeBatch commits a batch of status updates (applyStatuses; tests
	// hold it to see what the writer does while a commit is in flight).
	writeBatch func(context.Context, map[statusKey]statusUpdate) error
	// maxPending bounds the updates the status writer holds
	// (maxPendingStatuses; tests lower it).
	maxPending int
}

// maxPendingStatuses is the most task status updates the writer holds
// while a commit is in flight: past it, it stops taking them and the
// sessions wait on its queue (queueStatus), as they did behind a commit
// before the writer took updates during one. Distinct tasks coalesce, so a
// cluster's own reports stay under it (100,000 tasks starting at once);
// reports for tasks the view does not know (let through after an
// election) do not, and a node sending made-up task ids must not grow the
// leader's heap without bound while a slow commit is in flight.
const maxPendingStatuses = 1 << 17

type statusUpdate struct {
	nodeID string
	upd    *shoalv1.TaskStatusUpdate
}

// New returns a dispatcher; it serves sessions only while Run is active.
func New(cfg Config) *Dispatcher {
	if cfg.StatusFlush == 0 {
		cfg.StatusFlush = 2 * time.Millisecond
	}
	d := &Dispatcher{cfg: cfg, log: cfg.Logger.With("component", "dispatcher"),
		sessions: map[string]*session{}, lastSeen: map[string]time.Time{}, told: map[string]time.Duration{}}
	d.writeBatch = d.applyStatuses
	d.maxPending = maxPendingStatuses
	if cfg.Store != nil {
		d.nets.latest = func() raftstore.Reader { return cfg.Store.View() }
	}
	return d
}

// settings returns the heartbeat period and how many may be missed.
func (d *Dispatcher) settings() (time.Duration, int) {
	period, missed := DefaultHeartbeatPeriod, DefaultDownAfterMissed
	if c, ok := raftstore.ClusterOf(d.cfg.Store.View()); ok {
		if p := c.GetSettings().GetHeartbeatPeriodMs(); p > 0 {
			period = time.Duration(p) * time.Millisecond
		}
		if m := c.GetSettings().GetNodeDownAfterMissed(); m > 0 {
			missed = int(m)
		}
	}
	return period, missed
}

// Run serves sessions until ctx ends (leadership lost); then every session
// is closed so agents move to the new leader.
func (d *Dispatcher) Run(ctx context.Context) error {
	statusCh := make(chan statusUpdate, 4096)
	opens := make(chan openRequest, maxOpeningBatch)
	d.mu.Lock()
	d.runCtx = ctx
	d.statusCh = statusCh
	d.opens = opens
	now := time.Now()
	// Every known node gets a full grace period to reconnect to us.
	all := raftstore.List[*shoalv1.Node](d.cfg.Store.View())
	d.nodes.Store(int64(len(all)))
	for _, n := range all {
		d.lastSeen[n.GetMeta().GetId()] = now
	}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.runCtx = nil
		d.statusCh = nil
		d.opens = nil
		for id, s := range d.sessions {
			s.cancel()
			delete(d.sessions, id)
		}
		d.lastSeen = map[string]time.Time{}
		d.mu.Unlock()
	}()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.writeStatuses(gctx, statusCh) })
	g.Go(func() error { return d.monitorLiveness(gctx) })
	g.Go(func() error { return d.writeOpenings(gctx, opens) })
	g.Go(func() error { return d.followManagers(gctx) })
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// stallCredit is how long the liveness monitor itself was held up between
// two ticks (prev and now, interval apart when on time): the time beyond a
// whole missed tick. A monitor that runs that late ran on a stalled
// process, whose sessions could not read the heartbeats either; without
// the credit a leader stalled for 2 s marked every node DOWN at once
// (thousands in the 100,000-task benchmark) and had their tasks replaced.
// Lateness under a tick is the ordinary jitter of a loaded machine and is
// not credited, so a dead node is not kept alive by it.
func stallCredit(prev, now time.Time, interval time.Duration) time.Duration {
	if late := now.Sub(prev) - interval; late > interval {
		return late
	}
	return 0
}

// pruneRemoved drops from lastSeen and told the nodes no longer in nodes
// (removed from the cluster): without it a leader kept an entry for every
// node that ever joined during its term (node churn grew them for ever).
func pruneRemoved(nodes []*shoalv1.Node, lastSeen map[string]time.Time, told map[string]time.Duration) {
	live := make(map[string]struct{}, len(nodes))
	for _, n := range nodes {
		live[n.GetMeta().GetId()] = struct{}{}
	}
	for id := range lastSeen {
		if _, ok := live[id]; !ok {
			delete(lastSeen, id)
		}
	}
	for id := range told {
		if _, ok := live[id]; !ok {
			delete(told, id)
		}
	}
}

// seen records a heartbeat.
func (d *Dispatcher) seen(nodeID string) {
	d.mu.Lock()
	d.lastSeen[nodeID] = time.Now()
	d.mu.Unlock()
}

// maxMonitorInterval bounds how long the liveness monitor waits between
// readings of the settings and nodes, whatever the period (up to a minute).
const maxMonitorInterval = time.Second

// monitorInterval is how often the liveness monitor runs under the
// heartbeat period: four times a period, and at least once a second, so
// that a period shortened from a long one is read (and told to the
// sessions) within a second rather than a quarter of the old period.
func monitorInterval(period time.Duration) time.Duration {
	return min(period/4, maxMonitorInterval)
}

// monitorLiveness marks nodes whose heartbeats stopped as DOWN. It follows
// the period setting as it changes: timed by the period read when it
// started, a monitor started under 60 s kept running every 15 s under
// 100 ms, so nodes were marked DOWN up to 15 s late, the new period
// reached open sessions as late, and a stall of the leader shorter than
// 15 s was not credited (stallCredit) and marked every node DOWN at once.
func (d *Dispatcher) monitorLiveness(ctx context.Context) error {
	period, _ := d.settings()
	interval := monitorInterval(period)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	prev := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		period, missed := d.settings()
		now := time.Now()
		credit := stallCredit(prev, now, interval)
		prev = now
		if next := monitorInterval(period); next != interval {
			interval = next
			tick.Reset(interval)
		}
		// The nodes and their gossip states are read before taking the
		// lock, which every heartbeat takes (seen): with 5,000 nodes the
		// walk held it four times a period.
		nodes := raftstore.List[*shoalv1.Node](d.cfg.Store.View())
		d.nodes.Store(int64(len(nodes)))
		scaled := scaledPeriod(period, len(nodes))
		d.scaled.Store(int64(scaled))
		gossip := make([][2]string, len(nodes))
		if d.cfg.Gossip != nil {
			for i, n := range nodes {
				gossip[i][0], gossip[i][1] = d.cfg.Gossip.State(n.GetMeta().GetId())
			}
		}
		expired := map[string]string{}   // node id → reason
		lastAt := map[string]time.Time{} // node id → when last heard of, for expired
		marks := map[string]gossipMark{} // node id → status fields to write
		d.mu.Lock()
		if credit > 0 {
			// This manager was stalled (starved of CPU, a long GC): the
			// heartbeats that came meanwhile were not read yet, so the
			// stall is not counted against the nodes.
			for id, last := range d.lastSeen {
				d.lastSeen[id] = last.Add(credit)
			}
		}
		for i, n := range nodes {
			id := n.GetMeta().GetId()
			gstate, gaddr := gossip[i][0], gossip[i][1]
			last, ok := d.lastSeen[id]
			if !ok {
				// A node we have not seen yet (just joined): start its clock.
				d.lastSeen[id] = now
				continue
			}
			// A node is given the missed heartbeats of the longest period
			// it may be using: the one its session was told, or the one a
			// session opening now is told.
			nlimit := max(scaled, d.told[id]) * time.Duration(missed)
			v := verdict(n, last, now, period, nlimit, gstate)
			if v.down {
				expired[id], lastAt[id] = v.reason, last
				if s := d.sessions[id]; s != nil {
					s.cancel()
				}
				continue
			}
			st := n.GetStatus()
			if n.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_DOWN {
				v.unreachable = false
			}
			if st.GetUnreachable() != v.unreachable || (d.cfg.Gossip != nil && (st.GetGossipState() != gstate || (gaddr != "" && st.GetGossipAddr() != gaddr))) {
				marks[id] = gossipMark{state: gstate, addr: gaddr, unreachable: v.unreachable, reason: v.reason, useGossip: d.cfg.Gossip != nil}
			}
		}
		if len(d.lastSeen) > len(nodes) || len(d.told) > len(nodes) {
			pruneRemoved(nodes, d.lastSeen, d.told)
		}
		d.mu.Unlock()
		for id, msg := range expired {
			gstate := ""
			if d.cfg.Gossip != nil {
				gstate, _ = d.cfg.Gossip.State(id)
			}
			if d.cfg.beforeDown != nil {
				d.cfg.beforeDown(id)
			}
			err := d.markDown(ctx, id, msg, lastAt[id])
			if d.cfg.markedDown != nil {
				d.cfg.markedDown(id, err)
			}
			if errors.Is(err, errSeenSince) {
				d.log.Info("node heard from again before it was marked down; left as it is", "node_id", id, "reason", msg)
				continue
			}
			if err != nil {
				d.log.Warn("marking node down", "node_id", id, "err", err)
				continue
			}
			d.log.Warn("node down", "node_id", id, "reason", msg, "gossip", gstate)
		}
		for id, m := range marks {
			if err := d.updateNode(ctx, id, func(n *shoalv1.Node) error {
				if n.Status.State == shoalv1.NodeState_NODE_STATE_DOWN && m.unreachable {
					return nil
				}
				n.Status.Unreachable = m.unreachable
				if m.useGossip {
					n.Status.GossipState = m.state
					if m.addr != "" {
						n.Status.GossipAddr = m.addr
					}
				}
				return nil
			}); err != nil {
				d.log.Warn("recording gossip state", "node_id", id, "err", err)
				continue
			}
			if m.unreachable {
				d.log.Warn("node unreachable", "node_id", id, "reason", m.reason)
			}
		}
	}
}

// gossipMark: NodeStatus gossip fields the liveness monitor writes.
type gossipMark struct {
	state, addr string
	unreachable bool
	reason      string
	useGossip   bool
}

// errSeenSince: the node was heard from (a session opened, a heartbeat)
// after the liveness verdict that it is down.
var errSeenSince = errors.New("node heard from since the verdict")

// markDown writes node DOWN with msg, unless it was heard from after
// last, when the verdict was made: a session that opened in between (its
// node written READY by openNode) must not be left DOWN with its session
// open, its heartbeats flowing and its tasks ORPHANED — nothing writes it
// READY again until its next session. The check runs in the write's
// transaction, after its read: a session registers (lastSeen) before its
// READY is written, so a READY this write read was registered first and
// is seen; one written after this read makes this write a version
// conflict, tried again and checked again. Version conflicts with other
// writers are retried.
func (d *Dispatcher) markDown(ctx context.Context, nodeID, msg string, last time.Time) error {
	for attempt := 0; ; attempt++ {
		_, err := d.cfg.Store.Update(ctx, func(tx raftstore.WriteTx) error {
			n, ok := raftstore.Get[*shoalv1.Node](tx, nodeID)
			if !ok {
				return fmt.Errorf("node %q: %w", nodeID, raftstore.ErrNotFound)
			}
			d.mu.Lock()
			seen, known := d.lastSeen[nodeID]
			d.mu.Unlock()
			if !known || !seen.Equal(last) {
				return errSeenSince
			}
			return tx.Update(withState(n, shoalv1.NodeState_NODE_STATE_DOWN, msg, nil))
		})
		if err == nil || !errors.Is(err, raftstore.ErrVersionConflict) || attempt >= 5 {
			return err
		}
	}
}

// withState is a copy of n with the status state and message (and, on a
// session's hello, its addresses and description).
func withState(n *shoalv1.Node, state shoalv1.NodeState, msg string, hello *shoalv1.AgentHello) *shoalv1.Node {
	n = proto.Clone(n).(*shoalv1.Node)
	if n.Status == nil {
		n.Status = &shoalv1.NodeStatus{}
	}
	n.Status.State = state
	n.Status.Message = msg
	n.Status.RestartDeadline = nil // back (READY) or given up on (DOWN)
	n.Status.Unreachable = false
	n.Status.LastHeartbeat = timestamppb.Now()
	if hello != nil {
		if hello.GetAddr() != "" {
			n.Status.Addr = hello.GetAddr()
		}
		n.Status.AgentAddr = hello.GetAgentAddr()
		if hello.GetGossipAddr() != "" {
			n.Status.GossipAddr = hello.GetGossipAddr()
		}
		if hello.GetDescription() != nil {
			n.Description = hello.GetDescription()
		}
	}
	return n
}

// statusKey identifies a pending status update. It names the reporting
// node as well as the task: keyed by task alone, an update forged by
// another node for the same task would replace the real one in the batch,
// be refused by checkTransition, and the real report would be lost (an
// agent reports a change once).
type statusKey struct {
	nodeID, taskID string
}

// writeStatuses applies agents' task status updates in batches: one raft
// entry per flush for all sessions together. One batch is written at a
// time, by a goroutine of its own, and the loop keeps taking updates while
// it is committed: the window of the next batch is the commit of this one,
// so it grows with the load, sessions do not wait on a full queue behind
// the commit, and a task whose reports follow each other within the window
// (ACCEPTED then RUNNING) is written once, with the newest (pending is
// keyed by node and task). Each task still moves only forward through the
// states its agent reports; none is invented.
func (d *Dispatcher) writeStatuses(ctx context.Context, in <-chan statusUpdate) error {
	pending := map[statusKey]statusUpdate{}
	var timer <-chan time.Time
	// written is non-nil while a batch is being committed; it carries the
	// result (buffered: the writer never blocks on this loop).
	var written chan error
	var inflight map[statusKey]statusUpdate
	for {
		// The flush waits for the batch in flight: updates that arrive
		// meanwhile go into the next one.
		var flush <-chan time.Time
		if written == nil {
			flush = timer
		}
		take := in
		if len(pending) >= d.maxPending {
			take = nil // full: the sessions wait until a commit makes room
		}
		select {
		case <-ctx.Done():
			// The commit in flight runs under ctx, so it ends soon: wait
			// for it, so that nothing of this writer (this term's, when
			// leadership is lost) outlives it or writes to a store being
			// closed.
			if written != nil {
				<-written
			}
			return ctx.Err()
		case u := <-take:
			pending[statusKey{u.nodeID, u.upd.GetTaskId()}] = u
			if timer == nil {
				timer = time.After(d.cfg.StatusFlush)
			}
			continue
		case err := <-written:
			written = nil
			if err != nil && ctx.Err() == nil {
				// Not dropped: an agent reports a change once. Put the
				// batch back (behind anything newer that arrived
				// meanwhile) and try again after a pause.
				d.log.Warn("writing task statuses; will retry", "count", len(inflight), "err", err)
				for k, u := range inflight {
					if _, newer := pending[k]; !newer {
						pending[k] = u
					}
				}
				timer = time.After(retryFlush(d.cfg.StatusFlush))
			}
			inflight = nil
			continue
		case <-flush:
		}
		timer = nil
		inflight = takeStatuses(pending, d.statusSizer())
		d.cfg.Metrics.StatusBatch(len(inflight))
		if len(pending) > 0 {
			timer = time.After(0) // the rest in the next bounded entry
		}
		written = make(chan error, 1)
		go func(batch map[statusKey]statusUpdate) { written <- d.writeBatch(ctx, batch) }(inflight)
	}
}

func (d *Dispatcher) applyStatuses(ctx context.Context, batch map[statusKey]statusUpdate) error {
	for attempt := 0; ; attempt++ {
		_, err := d.cfg.Store.Update(ctx, func(tx raftstore.WriteTx) error {
			for k, u := range batch {
				id := k.taskID
				t, ok := raftstore.Get[*shoalv1.Task](tx, id)
				if !ok {
					continue // removed meanwhile: nothing to record
				}
				if err := checkTransition(t, u.nodeID, u.upd.GetStatus()); err != nil {
					if errors.Is(err, errAlreadyRecorded) {
						continue // a new session re-reports what it holds
					}
					d.log.Warn("status update refused", "task_id", id, "node_id", u.nodeID, "err", err)
					continue
				}
				// Only the status changes: the entry carries it alone and
				// the new task shares the rest with the stored one.
				if err := tx.UpdateTaskStatus(id, t.GetMeta().GetVersion(), u.upd.GetStatus()); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil || !errors.Is(err, raftstore.ErrVersionConflict) || attempt >= 5 {
			return err
		}
	}
}

// errAlreadyRecorded: the report repeats the task's recorded final state.
var errAlreadyRecorded = errors.New("already recorded")

// checkTransition enforces the task state machine for agent reports: only
// the task's node reports, agents own states from ACCEPTED on, and a state
// never goes backwards.
func checkTransition(t *shoalv1.Task, nodeID string, st *shoalv1.TaskStatus) error {
	if t.GetNodeId() != nodeID {
		return fmt.Errorf("task %q is assigned to node %q, not %q", t.GetMeta().GetId(), t.GetNodeId(), nodeID)
	}
	if st.GetState() < shoalv1.TaskState_TASK_STATE_ACCEPTED || st.GetState() == shoalv1.TaskState_TASK_STATE_REMOVE ||
		st.GetState() == shoalv1.TaskState_TASK_STATE_ORPHANED {
		return fmt.Errorf("agents may not set state %s", st.GetState())
	}
	cur := t.GetStatus().GetState()
	if st.GetState() == cur && (cur >= shoalv1.TaskState_TASK_STATE_COMPLETE || proto.Equal(st, t.GetStatus())) {
		return errAlreadyRecorded
	}
	// The task already ended (the managers orphaned it while its node was
	// away, or another end was recorded): the node's own end of it, sent
	// again by every new session, changes nothing and is no news.
	if cur >= shoalv1.TaskState_TASK_STATE_COMPLETE && st.GetState() >= shoalv1.TaskState_TASK_STATE_COMPLETE {
		return errAlreadyRecorded
	}
	if st.GetState() < cur || cur >= shoalv1.TaskState_TASK_STATE_COMPLETE {
		return fmt.Errorf("state may not move from %s to %s", cur, st.GetState())
	}
	return nil
}

// leaderUnavailable is what a non-leader answers: ErrNotLeader (UNAVAILABLE)
// with the leader's address as a detail, so the agent goes straight there.
func (d *Dispatcher) leaderUnavailable() error {
	_, addr := d.cfg.Store.Leader()
	return errdefs.NotLeader(addr)
}

func (d *Dispatcher) identity(ctx context.Context) (trust.Identity, error) {
	id, ok := trust.IdentityFrom(ctx)
	if !ok || (id.Role != trust.RoleWorker && id.Role != trust.RoleManager) {
		return trust.Identity{}, errdefs.PermissionDeniedf("a node certificate is required for a dispatcher session")
	}
	return id, nil
}

// retryFlush is the pause before a failed status batch is written again.
func retryFlush(flush time.Duration) time.Duration { return max(10*flush, 100*time.Millisecond) }
