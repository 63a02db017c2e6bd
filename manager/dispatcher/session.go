package dispatcher

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/errdefs"
	"google.golang.org/grpc/metadata"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/specrules"
	"github.com/shoal-dev/shoal/trust"
)

// session is one node's open stream.
type session struct {
	id     string
	cancel context.CancelFunc
}

// assigned says whether the node holds t: from ASSIGNED on, finished tasks
// included — the node keeps a finished task's log until the managers delete
// the task (history trimmed, service removed), and a task the managers
// ended without it (ORPHANED) tells a returning node to stop it.
func assigned(t *shoalv1.Task) bool {
	return t.GetStatus().GetState() >= shoalv1.TaskState_TASK_STATE_ASSIGNED
}

// Session serves one agent's session stream. Only the goroutine running
// it sends (gRPC streams allow one sender); its receiver (receive) reads
// and leaves what it has for the agent in the session's outbox.
func (d *Dispatcher) Session(stream shoalv1.Dispatcher_SessionServer) error {
	id, err := d.identity(stream.Context())
	if err != nil {
		return err
	}
	d.mu.Lock()
	runCtx, statusCh, opens := d.runCtx, d.statusCh, d.opens
	d.mu.Unlock()
	if runCtx == nil {
		return d.leaderUnavailable()
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return errdefs.InvalidArgumentf("a session must start with a hello")
	}
	if err := d.checkHello(hello); err != nil {
		return err
	}
	// Answer at once (response headers): the agent then knows this
	// manager is alive and waits for the welcome, which comes after a raft
	// write, longer than it waits for a manager that does not answer.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(runCtx, cancel)
	defer stop()
	sess := &session{id: raftstore.NewID(), cancel: cancel}
	d.mu.Lock()
	if old := d.sessions[id.NodeID]; old != nil {
		old.cancel()
	}
	d.sessions[id.NodeID] = sess
	d.lastSeen[id.NodeID] = time.Now()
	d.mu.Unlock()
	d.cfg.Metrics.SessionOpened()
	defer d.cfg.Metrics.SessionClosed()
	defer func() {
		d.mu.Lock()
		if d.sessions[id.NodeID] == sess {
			delete(d.sessions, id.NodeID)
		}
		d.mu.Unlock()
	}()
	log := d.log.With("node_id", id.NodeID, "session_id", sess.id)

	if err := d.openNode(ctx, opens, id.NodeID, hello); err != nil {
		if errors.Is(err, raftstore.ErrNotFound) {
			if d.removed(id.NodeID) {
				return removedError(id.NodeID)
			}
			return errdefs.Unavailablef("node %q is not known to this manager yet", id.NodeID)
		}
		return errdefs.Unavailablef("registering the session: %v", err)
	}
	log.Info("session started", "addr", hello.GetAddr())

	// Snapshot and subscription must line up: subscribe from the index just
	// after the view the full set is built from.
	view := d.cfg.Store.View()
	if !d.filter.nets.Load() && len(raftstore.List[*shoalv1.Network](view)) > 0 {
		d.filter.nets.Store(true)
	}
	sub, err := d.cfg.Store.WatchNode(ctx, view.Index()+1, id.NodeID, sessionEvents(id.NodeID, &d.filter), raftstore.KindTask, raftstore.KindNode, raftstore.KindNetwork, raftstore.KindService, raftstore.KindCluster)
	if err != nil {
		return errdefs.Unavailablef("watching the store: %v", err)
	}
	defer sub.Close()

	base, _ := d.settings()
	period := scaledPeriod(base, int(d.nodes.Load()))
	d.mu.Lock()
	d.told[id.NodeID] = period
	d.mu.Unlock()
	node, _ := raftstore.Get[*shoalv1.Node](view, id.NodeID)
	mgen := d.managersGen() // before the welcome's list (managers.go)
	welcome := &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Welcome{Welcome: &shoalv1.SessionWelcome{
		SessionId: sess.id, HeartbeatPeriodMs: period.Milliseconds(), Node: node, Managers: d.cfg.Managers(),
	}}}
	if err := stream.Send(welcome); err != nil {
		return err
	}
	if g := gossipMessage(view, id.NodeID, d.peers.get(view)); g != nil {
		if err := stream.Send(g); err != nil {
			return err
		}
	}
	var set []*shoalv1.Task
	for _, t := range raftstore.Find[*shoalv1.Task](view, raftstore.IndexNodeID, id.NodeID) {
		if assigned(t) {
			set = append(set, t)
		}
	}
	if err := sendAssignments(stream, true, set, nil); err != nil {
		return err
	}
	ech := newEchoes(id.NodeID, set)
	nets := &networkTracker{}
	if hello.GetNetworkDeltas() {
		nets.delta = d.nets.delta
	}
	if err := d.sendNetworks(stream, view, id.NodeID, nets, true); err != nil {
		return err
	}

	out := newOutbox()
	recvErr := make(chan error, 1)
	go func() { recvErr <- d.receive(ctx, stream, out, id.NodeID, statusCh, period, mgen) }()

	// The session takes its events from the subscription's queue itself
	// (no pump goroutine and channel between): all that is queued, up to
	// maxDiffEvents a message, less the echoes of its agent's own
	// statuses (see echoes), which are not sent. It sends what its
	// receiver left in the outbox when idle and between batches.
	var batch []*shoalv1.WatchEvent
	for {
		select {
		case err := <-recvErr:
			return d.received(runCtx, log, id.NodeID, sess, err)
		case <-ctx.Done():
			return d.closed(runCtx)
		case <-sub.Done():
			return d.subEnded(ctx, runCtx, sub)
		case <-out.ready:
			if err := out.flush(stream); err != nil {
				return err
			}
		case <-sub.Ready():
			for {
				// Between batches: the agent's goodbye (or the end of its
				// stream) is not left behind a burst that keeps the queue
				// full (see received), nor are its acknowledgements.
				select {
				case err := <-recvErr:
					return d.received(runCtx, log, id.NodeID, sess, err)
				case <-out.ready:
					if err := out.flush(stream); err != nil {
						return err
					}
				default:
				}
				var ok bool
				if batch, ok = sub.Take(batch[:0], maxDiffEvents); !ok {
					return d.subEnded(ctx, runCtx, sub)
				}
				if len(batch) == 0 {
					break
				}
				d.sessionEventsTaken.Add(int64(len(batch)))
				send := ech.drop(batch)
				if len(send) == 0 {
					continue
				}
				err := d.forward(stream, id.NodeID, send, nets, ech)
				clear(send)
				if err != nil {
					return err
				}
			}
		}
	}
}

// sessionEvents selects the store events a node's session acts on: its
// own tasks and node, the other events that may change a network state
// (eventChangesNetworks), and every event of the other kinds. Filtering
// in the store's hub keeps a burst of other nodes' tasks from costing
// every session a hand-off per task: with thousands of sessions that was
// most of the leader's CPU (see docs/benchmarks-history.md, "Scheduler at
// scale"). Other nodes' events changed nothing for a session without
// networks, yet each session opening (a node event) reached every
// session: O(N²) wake-ups while 5,000 nodes connected.
//
// shared.nets is set, for good, once the cluster is seen to have a
// network: by a session's view when it starts, or by this filter when a
// network event passes it. A subscription's filter sees its events in
// index order, so a node event after a network's creation always finds
// nets set. Before it, other nodes and services matter to no session.
//
// Of the rest, only what changes a network state wakes a session: a
// service write changing its name, endpoint, networks or VIPs; a task
// taking part in the states whose endpoint changed (not its status
// message, failing streak, creation before it has addresses, its updates
// and deletion once ended); a node whose underlay address or DOWN state
// changed (not a session opening, a label, a gossip state). prev, the
// object an update replaced, tells; without it (an event replayed from
// before the store kept prevs) the session takes the event. Each of
// these woke every session, which recomputed and compared the network
// states for nothing: with 200 sessions a label write cost 64 µs of the
// leader's CPU besides the write's own 23 (BenchmarkServiceWriteOverSessions),
// a task's status message and its updates once ended … (BenchmarkTaskLifecycleOverSessions).
func sessionEvents(nodeID string, shared *filterShared) raftstore.KeepFunc {
	nets := &shared.nets
	return func(ev *shoalv1.WatchEvent, prev raftstore.Object) bool {
		switch o := ev.GetObject().GetObject().(type) {
		case *shoalv1.StoreObject_Task:
			t := o.Task
			if t.GetNodeId() == nodeID {
				return true
			}
			// Off any network: only if it was on one (its attachments
			// dropped), which prev tells (taskNetworksSame).
			return (len(t.GetNetworks()) > 0 || prev != nil) && shared.changesNetworks(ev, prev)
		case *shoalv1.StoreObject_Node:
			if o.Node.GetMeta().GetId() == nodeID {
				return true
			}
			return nets.Load() && shared.changesNetworks(ev, prev)
		case *shoalv1.StoreObject_Network:
			nets.Store(true)
		case *shoalv1.StoreObject_Service:
			return nets.Load() && shared.changesNetworks(ev, prev)
		}
		return true
	}
}

// filterShared is what the session filters of one dispatcher share.
type filterShared struct {
	// nets: the cluster has had a network, so other nodes' events and
	// services matter to every session.
	nets atomic.Bool
	// verdict is the last event a filter judged (eventChangesNetworks).
	// The answer is the same for every session (their own tasks and node
	// are kept before), and the store offers an event to every session's
	// filter in turn, on the FSM's goroutine under its hub's lock:
	// compared per session, a whole service update (UpdateService, the
	// orchestrator's update status) seen by 5,000 sessions took 10 ms
	// there, and a label patched on a service with a VIP (the entry's copy
	// of the VIPs, compared in full) took more of the leader's CPU than the
	// wake-ups it spared (BenchmarkVIPServiceWriteOverSessions).
	verdict atomic.Pointer[eventVerdict]
}

// eventVerdict is eventChangesNetworks's answer for one event and the
// object it replaced (held, so the pointers are never reused meanwhile).
type eventVerdict struct {
	ev      *shoalv1.WatchEvent
	prev    raftstore.Object
	changes bool
}

// changesNetworks is eventChangesNetworks(ev, prev), judged once for all
// the sessions ev is offered to.
func (f *filterShared) changesNetworks(ev *shoalv1.WatchEvent, prev raftstore.Object) bool {
	if v := f.verdict.Load(); v != nil && v.ev == ev && v.prev == prev {
		return v.changes
	}
	changes := eventChangesNetworks(ev, prev)
	f.verdict.Store(&eventVerdict{ev: ev, prev: prev, changes: changes})
	return changes
}

// maxScratchUpserts is the largest capacity of diff slice a session keeps
// for its next diff (5,000 sessions keep at most 5,000 × 512 B).
const maxScratchUpserts = 64

// maxDiffEvents bounds how many queued events forward gathers into a diff:
// a long burst (a big service being scheduled) goes out as it comes
// instead of piling up in one diff.
const maxDiffEvents = 1000

// forward turns events, in order, into one assignments diff (and node
// updates) for the agent.
func (d *Dispatcher) forward(stream shoalv1.Dispatcher_SessionServer, nodeID string, events []*shoalv1.WatchEvent, nets *networkTracker, ech *echoes) error {
	diff := &shoalv1.Assignments{Upsert: ech.scratch}
	ech.scratch = nil
	upserts := map[string]int{}
	var nodeMsg *shoalv1.Node
	removed := false
	netDirty := false
	clusterChanged := false
	add := func(ev *shoalv1.WatchEvent) {
		if ev.GetObject().GetCluster() != nil {
			clusterChanged = true // gossip keys may have rotated
			return
		}
		if t := ev.GetObject().GetTask(); t != nil && t.GetNodeId() == nodeID && len(t.GetNetworks()) > 0 {
			netDirty = ownTaskChangesNetworks(ev, t, ech.seen) || netDirty // records t: called for each
		} else if t != nil {
			// A task off any network changes a state if it was on one
			// (its attachments dropped): the node's own, when last seen;
			// another node's, an endpoint the agent was sent.
			id := t.GetMeta().GetId()
			_, was := ech.seen[id]
			delete(ech.seen, id)
			netDirty = netDirty || was || networkRelevant(ev) || t.GetNodeId() != nodeID && nets.hasEndpoint(id)
		} else {
			netDirty = netDirty || networkRelevant(ev)
		}
		if n := ev.GetObject().GetNode(); n != nil {
			if n.GetMeta().GetId() == nodeID {
				if ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE {
					removed = true
				} else {
					nodeMsg = n
				}
			}
			return
		}
		t := ev.GetObject().GetTask()
		if t == nil || t.GetNodeId() != nodeID {
			return
		}
		id := t.GetMeta().GetId()
		if ev.GetAction() != shoalv1.WatchAction_WATCH_ACTION_DELETE && assigned(t) {
			if i, ok := upserts[id]; ok {
				diff.Upsert[i] = t
			} else {
				upserts[id] = len(diff.Upsert)
				diff.Upsert = append(diff.Upsert, t)
			}
			return
		}
		if ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE {
			if i, ok := upserts[id]; ok {
				diff.Upsert = slices.Delete(diff.Upsert, i, i+1) // clears the slot vacated
				delete(upserts, id)
				for k, j := range upserts {
					if j > i {
						upserts[k] = j - 1
					}
				}
			}
			diff.Removed = append(diff.Removed, id)
		}
	}
	for _, ev := range events {
		add(ev)
	}
	if removed {
		// `node rm`: end the session; the agent stops for good.
		return removedError(nodeID)
	}
	if nodeMsg != nil {
		if err := stream.Send(&shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Node{Node: nodeMsg}}); err != nil {
			return err
		}
	}
	if clusterChanged {
		view := d.cfg.Store.View()
		if g := gossipMessage(view, nodeID, d.peers.get(view)); g != nil {
			if err := stream.Send(g); err != nil {
				return err
			}
		}
	}
	if len(diff.Upsert) > 0 || len(diff.Removed) > 0 {
		if err := sendAssignments(stream, false, diff.Upsert, diff.Removed); err != nil {
			return err
		}
		ech.record(diff.Upsert, diff.Removed)
	}
	// The message was marshalled by Send and is not kept: its task slice
	// is the next diff's room, unless a burst made it big.
	if cap(diff.Upsert) <= maxScratchUpserts {
		clear(diff.Upsert)
		ech.scratch = diff.Upsert[:0]
	}
	if netDirty {
		// After the assignments: a new task's peers and VIPs arrive with it.
		return d.sendNetworks(stream, d.cfg.Store.View(), nodeID, nets, false)
	}
	return nil
}

// ownTaskChangesNetworks says whether ev, an event of t, a task of the
// session's own node on a network, may change a network state, and
// records t in seen: the session takes all of its node's tasks (its
// filter cannot skip them), and recomputing the cluster's states for each
// (a status message, a failing streak, an update once it ended) cost as
// much as the wake-ups the filter spares the other sessions. The version
// it replaced is the one seen last (echoes.seen): not the one last sent
// to the agent, which a version that was not sent (the task moved off
// the node and back, or not assigned for a while) leaves behind
// (TestOwnTaskBackAfterAVersionNotSentReview); without it, it may have
// changed.
func ownTaskChangesNetworks(ev *shoalv1.WatchEvent, t *shoalv1.Task, seen map[string]*shoalv1.Task) bool {
	id := t.GetMeta().GetId()
	prev := seen[id]
	switch ev.GetAction() {
	case shoalv1.WatchAction_WATCH_ACTION_DELETE:
		delete(seen, id)
		return taskOnNetworks(t)
	case shoalv1.WatchAction_WATCH_ACTION_CREATE:
		seen[id] = t
		return taskOnNetworks(t)
	}
	seen[id] = t
	return prev == nil || !taskNetworksSame(prev, t)
}

// checkHello refuses a hello that breaks specrules.AgentHello, before
// anything is written: the hello goes into the node object, in a raft
// entry shared with other nodes' openings.
func (d *Dispatcher) checkHello(hello *shoalv1.AgentHello) error {
	if p := specrules.AgentHello(hello); len(p) > 0 {
		return errdefs.InvalidArgumentf("%w", p)
	}
	return nil
}

// plainAck acknowledges a heartbeat without news; it is only ever read
// (marshalled), so every session sends the same one.
var plainAck = &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_HeartbeatAck{HeartbeatAck: &shoalv1.Heartbeat{}}}

// receiver is the receiving half of a session stream: the receiver does
// not send (outbox).
type receiver interface {
	Recv() (*shoalv1.AgentMessage, error)
}

// receive reads heartbeats and status batches from the agent, and leaves
// their acknowledgements and a new manager list in out. told is the
// heartbeat period the session's welcome gave, mgen the generation of its
// manager list (managers.go).
func (d *Dispatcher) receive(ctx context.Context, stream receiver, out *outbox, nodeID string, statusCh chan<- statusUpdate, told time.Duration, mgen uint64) error {
	period := sessionPeriod{told: told, judged: told}
	for {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		d.seen(nodeID)
		switch m := msg.GetMsg().(type) {
		case *shoalv1.AgentMessage_Heartbeat:
			d.cfg.Metrics.Heartbeat()
			uses := time.Duration(m.Heartbeat.GetHeartbeatPeriodMs()) * time.Millisecond
			out.put(d.ackFor(nodeID, &period, uses), d.tellManagers(&mgen))
		case *shoalv1.AgentMessage_Goodbye:
			return &goodbyeError{msg: m.Goodbye}
		case *shoalv1.AgentMessage_Status:
			for _, u := range d.reportable(d.cfg.Store.View(), nodeID, m.Status.GetUpdates()) {
				if err := d.queueStatus(ctx, out, nodeID, statusCh, statusUpdate{nodeID: nodeID, upd: u}); err != nil {
					return err
				}
			}
			// An agent sends no heartbeat while its statuses go out and
			// messages come back (agent's heartbeatWait), so what an
			// acknowledgement tells goes out with a status too: a new
			// period (a shorter one was never learned while the node was
			// busy, nor named back for the node to be judged by it) and
			// the manager list. Nothing when neither changed.
			var ack *shoalv1.SessionMessage
			if now := time.Duration(d.scaled.Load()); now > 0 && now != period.told {
				ack = d.ackFor(nodeID, &period, 0)
			}
			out.put(ack, d.tellManagers(&mgen))
		}
	}
}

// sessionPeriod is what a session's receiver knows of its heartbeat
// period.
type sessionPeriod struct {
	told   time.Duration // last sent to the agent (the welcome's, or an acknowledgement's)
	judged time.Duration // the node is judged by (d.told)
}

// ackFor is the acknowledgement of a heartbeat from nodeID, whose agent
// says it heartbeats every uses (0: an agent of an earlier release, which
// keeps its welcome's period for the whole session): with the period to
// use now when it differs from the one last told (the cluster grew or
// shrank past 500 nodes, the cluster setting heartbeat_period_ms changed),
// so an open session follows it instead of waiting for its next opening.
// The liveness monitor judges a node by the period recorded for it: a
// longer one at once, a shorter one only once a heartbeat says the agent
// uses it. Judged by a shorter period before that, an agent still waiting
// out the longer one (or one that never reads the field) is marked DOWN
// while it heartbeats as told, and its tasks are replaced.
func (d *Dispatcher) ackFor(nodeID string, p *sessionPeriod, uses time.Duration) *shoalv1.SessionMessage {
	if uses > 0 && uses == p.told && uses < p.judged {
		p.judged = uses
		d.setTold(nodeID, uses)
	}
	now := time.Duration(d.scaled.Load())
	if now <= 0 || now == p.told {
		return plainAck
	}
	p.told = now
	if now > p.judged {
		p.judged = now
		d.setTold(nodeID, now)
	}
	return &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_HeartbeatAck{HeartbeatAck: &shoalv1.Heartbeat{
		HeartbeatPeriodMs: now.Milliseconds()}}}
}

// setTold records the heartbeat period nodeID is judged by.
func (d *Dispatcher) setTold(nodeID string, p time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.told[nodeID] = p
}

// statusWaitTick is how often a session waiting on the status writer
// keeps its node alive (see queueStatus).
const statusWaitTick = 200 * time.Millisecond

// queueStatus hands u to the status writer. While the writer is behind
// (its queue full: this manager is the slow one, the node has just
// spoken and its heartbeats wait unread behind this message), the node
// is marked seen and told the manager is alive (a heartbeat ack), every
// statusWaitTick: judging it by the heartbeats not read turned a busy
// leader's backlog into nodes marked down and their tasks replaced, and
// the agents, hearing nothing, dropped their sessions and dialled again.
// The acknowledgement goes through the outbox: the session loop sends it.
func (d *Dispatcher) queueStatus(ctx context.Context, out *outbox, nodeID string, ch chan<- statusUpdate, u statusUpdate) error {
	select {
	case ch <- u:
		return nil
	default:
	}
	tick := time.NewTicker(statusWaitTick)
	defer tick.Stop()
	for {
		select {
		case ch <- u:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			d.seen(nodeID)
			out.put(plainAck, nil)
		}
	}
}

// reportable returns the updates of ups that nodeID may report. An update
// for a task assigned to another node is dropped here, before it can take
// a place in the pending batch; the drops of one message are logged once
// (a broken or hostile node sends thousands in one message). A task this
// view does not know, or knows without a node yet, is let through: right
// after an election this manager's view may lag what the agent was told
// by the previous leader, and applyStatuses checks again against the state
// it writes on.
func (d *Dispatcher) reportable(view raftstore.Reader, nodeID string, ups []*shoalv1.TaskStatusUpdate) []*shoalv1.TaskStatusUpdate {
	keep := ups[:0:0]
	dropped := 0
	var example *shoalv1.Task
	for _, u := range ups {
		t, ok := raftstore.Get[*shoalv1.Task](view, u.GetTaskId())
		if !ok || t.GetNodeId() == "" || t.GetNodeId() == nodeID {
			keep = append(keep, u)
			continue
		}
		dropped++
		example = t
	}
	if dropped > 0 {
		d.log.Warn("status updates for tasks of other nodes dropped", "node_id", nodeID, "count", dropped,
			"task_id", example.GetMeta().GetId(), "assigned_to", example.GetNodeId())
	}
	return keep
}

func errString(err error) string {
	if err == nil {
		return "closed"
	}
	return err.Error()
}

// removedError is the refusal of a removed node: ErrNodeRemoved travels as
// a detail, so the agent stops instead of retrying.
func removedError(nodeID string) error {
	return errdefs.NodeRemovedf("node %q %s; its certificate is no longer accepted", nodeID, trust.RemovedReason)
}

// removed reports whether nodeID was removed with `node rm`.
func (d *Dispatcher) removed(nodeID string) bool {
	c, _ := raftstore.ClusterOf(d.cfg.Store.View())
	return slices.Contains(c.GetRemovedNodes(), nodeID)
}
