package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/netdelta"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Config configures an Agent.
type Config struct {
	NodeID string
	// Addr is the address the node advertises.
	Addr string
	// AgentAddr is where the node's agent API listens (sent in the hello).
	AgentAddr string
	// Managers is the initial list of manager API addresses.
	Managers []string
	// Creds dials managers (mTLS with the node certificate).
	Creds credentials.TransportCredentials
	// Description is sent in the hello.
	Description *shoalv1.NodeDescription
	// OnManagers is told the current manager list (to persist it).
	OnManagers func([]string)
	// OnNode is told every update of this node's object (role changes).
	OnNode func(*shoalv1.Node)
	// Executor holds the assigned tasks and reports their statuses
	// (required): *Executor runs them as containers, nullexec runs nothing.
	Executor TaskExecutor
	// Networks is handed every SessionMessage.Networks (the desired state
	// of the overlay networks this node takes part in); nil ignores them.
	Networks NetworkReconciler
	Logger   *slog.Logger
	// GossipAddr is this node's gossip host:port (sent in the hello; empty:
	// no gossip on this node).
	GossipAddr string
	// Gossip receives the cluster's gossip keys and peers from the session
	// (optional; the daemon wires overlay/gossip behind it).
	Gossip GossipConsumer
}

// GossipConsumer is told the gossip keys (newest first) and peers the
// managers send. SetGossip is called from the goroutine receiving the
// session's messages: it must not block for long.
type GossipConsumer interface {
	SetGossip(keys [][]byte, peers []string)
}

// NetworkReconciler makes the node's overlay networks match the desired
// state the dispatcher sends: full replaces the held set, otherwise
// states are upserted and removed (network ids) dropped. Called from the
// goroutine receiving the session's messages. An error is logged, not
// fatal to the session: the next full set (or the reconciler's own
// periodic repair) tries again.
type NetworkReconciler interface {
	Reconcile(ctx context.Context, full bool, states []*shoalv1.NetworkState, removed []string) error
}

// networkReconcileTimeout bounds one reconciliation on the receive loop.
const networkReconcileTimeout = 30 * time.Second

// TaskExecutor is what the session needs of an executor. Assign is called
// from the goroutine receiving the session's messages, TakeUpdates and
// Updates from the one sending statuses, Tasks from anywhere: every method
// must be safe for concurrent use.
type TaskExecutor interface {
	// Assign applies the dispatcher's assignment set (full) or a diff.
	Assign(full bool, upsert []*shoalv1.Task, removed []string)
	// TakeUpdates returns the statuses to report: those not taken yet, or
	// everything owed to a new session when all is set.
	TakeUpdates(all bool) []*shoalv1.TaskStatusUpdate
	// Updates is signalled when statuses wait to be taken.
	Updates() <-chan struct{}
	// Tasks returns the held tasks, by task id.
	Tasks() []*shoalv1.Task
}

// Agent is a node's session client.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex // guards the fields below
	managers  []string
	leader    string // hint from a follower or the welcome
	connected bool

	// partial gathers the chunks of an assignment set until its last one
	// (more=false) arrives. Only the goroutine receiving the session's
	// messages uses it, so it is not guarded by mu.
	partial *shoalv1.Assignments
	// partialBytes is the encoded size of the chunks in partial; a set is
	// refused when it passes maxSetBytes (tests lower it).
	partialBytes, maxSetBytes int
	// partialNet gathers the chunks of a Networks message the same way
	// (bounded by maxSetBytes too).
	partialNet      *shoalv1.Networks
	partialNetBytes int
	// netHeld is the state of each network as the manager last sent it,
	// whole or as deltas (netdelta), by network id: the base the next
	// delta applies to. Receiving goroutine only, like partial.
	netHeld map[string]*shoalv1.NetworkState
}

// defaultMaxSetBytes bounds the assignment set the agent gathers from
// chunks: a thousand of the dispatcher's 1 MiB chunks, far above any real
// set, it keeps a broken or hostile manager that sends more=true forever
// from growing the agent's memory without end.
const defaultMaxSetBytes = 1 << 30

// New returns an agent; Run starts it.
func New(cfg Config) *Agent {
	return &Agent{cfg: cfg, log: cfg.Logger.With("component", "agent"),
		managers: append([]string(nil), cfg.Managers...), maxSetBytes: defaultMaxSetBytes}
}

// Assignments returns the tasks currently assigned to this node.
func (a *Agent) Assignments() []*shoalv1.Task { return a.cfg.Executor.Tasks() }

// Connected says whether a session is open.
func (a *Agent) Connected() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.connected
}

// ErrRemoved ends Run when the managers say this node was removed
// (`shoal node rm`): its certificate will never be accepted again.
var ErrRemoved = errors.New("this node was removed from the cluster (shoal node rm); to rejoin, wipe its data dir and run shoal join again")

// Reconnect pacing. A restarted node must have its session open again
// before the managers' down threshold (dispatcher.DefaultHeartbeatPeriod x
// DefaultDownAfterMissed) counted from its last heartbeat, or every task it
// runs is replaced. So the first attempt is made at once, and while the
// process is young, or a healthy session has just ended (leader failover),
// the pause between attempts stays short; only an agent that has failed
// for a while backs off to maxBackoff.
const (
	firstBackoff = 50 * time.Millisecond
	// youngBackoff caps the pause (before jitter) within youngFor of the
	// start or of the end of a healthy session.
	youngBackoff = 400 * time.Millisecond
	youngFor     = 15 * time.Second
	maxBackoff   = 2 * time.Second
	// healthySession: a session that lasted this long was not a failed
	// attempt, so the pacing starts over when it ends.
	healthySession = 5 * time.Second
)

// nextBackoff doubles the pause up to the cap that applies: youngBackoff
// while young, maxBackoff after.
func nextBackoff(cur time.Duration, young bool) time.Duration {
	limit := maxBackoff
	if young {
		limit = youngBackoff
	}
	return min(cur*2, limit)
}

// Run keeps a session open until ctx ends or the node is removed. The first
// session is attempted at once. When ctx ends with a session open, the agent
// says goodbye (restarting) before closing it, so that the managers keep
// the node's tasks for the cluster's restart grace.
func (a *Agent) Run(ctx context.Context) error {
	backoff := firstBackoff
	since := time.Now() // start of the young period
	next := 0
	for ctx.Err() == nil {
		addr := a.target(&next)
		start := time.Now()
		err := a.session(ctx, addr)
		if ctx.Err() != nil {
			return nil
		}
		if errdefs.IsNodeRemoved(err) {
			a.log.Error("this node was removed from the cluster; stopping", "err", err)
			return fmt.Errorf("%w: %s", ErrRemoved, status.Convert(err).Message())
		}
		if hint := leaderHint(err); hint != "" && hint != addr {
			a.mu.Lock()
			a.leader = hint
			a.mu.Unlock()
			a.log.Debug("following leader hint", "leader", hint)
			continue // go straight to the leader
		}
		a.mu.Lock()
		a.leader = ""
		a.mu.Unlock()
		if time.Since(start) > healthySession {
			backoff, since = firstBackoff, time.Now() // the session was healthy
		}
		a.log.Info("session ended; reconnecting", "manager", addr, "err", err, "backoff", backoff)
		jitter := time.Duration(rand.Int64N(int64(backoff)/2 + 1))
		select {
		case <-time.After(backoff + jitter):
		case <-ctx.Done():
			return nil
		}
		backoff = nextBackoff(backoff, time.Since(since) < youngFor)
	}
	return nil
}

// target picks the manager to dial: the leader hint, else the next one.
func (a *Agent) target(next *int) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.leader != "" {
		return a.leader
	}
	if len(a.managers) == 0 {
		return a.cfg.Addr
	}
	addr := a.managers[*next%len(a.managers)]
	*next++
	return addr
}

// leaderHint is the leader's address a follower's dispatcher answers with
// (errdefs.NotLeader, as a detail), or "".
func leaderHint(err error) string {
	addr, _ := errdefs.LeaderAddr(err)
	return addr
}

func (a *Agent) session(ctx context.Context, addr string) error {
	// The attempt's deadline (see openDeadline) is armed before the
	// connection is dialled, so the dialer can extend it.
	var cancelAttempt context.CancelFunc
	dl := newOpenDeadline(func() { cancelAttempt() })
	defer dl.stop()
	dialer := func(ctx context.Context, target string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", target)
		if err == nil {
			dl.extend(connectedTimeout)
		}
		return c, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(a.cfg.Creds), grpc.WithContextDialer(dialer),
		grpc.WithStaticStreamWindowSize(sessionWindow), grpc.WithStaticConnWindowSize(sessionWindow))
	if err != nil {
		return err
	}
	defer conn.Close()
	// The stream outlives ctx by the goodbye (see sayGoodbye); until the
	// session is open, ending ctx ends it.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	cancelAttempt = cancel
	stopEarly := context.AfterFunc(ctx, cancel)
	dl.start()
	stream, err := shoalv1.NewDispatcherClient(conn).Session(sctx)
	if err != nil {
		return err
	}
	hello := &shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Hello{Hello: &shoalv1.AgentHello{
		Description: a.cfg.Description, Addr: a.cfg.Addr, AgentAddr: a.cfg.AgentAddr, GossipAddr: a.cfg.GossipAddr,
		NetworkDeltas: true}}}
	if err := stream.Send(hello); err != nil {
		return err
	}
	// nil when the stream failed before any answer: Recv says why.
	if md, _ := stream.Header(); md != nil {
		dl.extend(welcomeTimeout)
	}
	first, err := stream.Recv()
	if err != nil {
		if d, ok := dl.expired(); ok {
			return fmt.Errorf("no welcome from %s within %s: %w", addr, d, err)
		}
		return err
	}
	if !dl.stop() {
		return fmt.Errorf("no welcome from %s in time", addr)
	}
	w := first.GetWelcome()
	if w == nil {
		return errors.New("dispatcher did not welcome the session")
	}
	period := time.Duration(w.GetHeartbeatPeriodMs()) * time.Millisecond
	if period <= 0 {
		period = 500 * time.Millisecond
	}
	a.setManagers(w.GetManagers())
	if a.cfg.OnNode != nil && w.GetNode() != nil {
		a.cfg.OnNode(w.GetNode())
	}
	if !stopEarly() {
		return ctx.Err() // ctx ended while the session was being opened
	}
	a.mu.Lock()
	a.connected = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.connected = false
		a.mu.Unlock()
	}()
	a.log.Info("session open", "manager", addr, "session_id", w.GetSessionId())

	// One goroutine sends (heartbeats and status); this one receives. A
	// manager that stops acknowledging heartbeats is given up on after a few
	// periods, so a dead leader is noticed even without a TCP reset.
	var sendMu sync.Mutex
	send := func(m *shoalv1.AgentMessage) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	lastAck := make(chan struct{}, 1)
	// A new heartbeat period from the manager (in an acknowledgement):
	// the latest wins; only the receiver below sends.
	periods := make(chan time.Duration, 1)
	errc := make(chan error, 2)
	// Heartbeats and status reports stop when ctx ends: the goodbye is the
	// last message.
	wctx, wcancel := context.WithCancel(sctx)
	defer wcancel()
	stopWork := context.AfterFunc(ctx, wcancel)
	defer stopWork()
	// sent: when a status last went out (unix nanoseconds; 0: none yet).
	var sent atomic.Int64
	sendStatus := func(m *shoalv1.AgentMessage) error {
		err := send(m)
		if err == nil {
			sent.Store(time.Now().UnixNano())
		}
		return err
	}
	go func() { errc <- a.heartbeat(wctx, send, period, lastAck, periods, &sent) }()
	go func() { errc <- a.sendStatuses(wctx, a.cfg.Executor, sendStatus) }()
	recvErr := make(chan error, 1)
	// The session ends only once its receiver has stopped: a message of
	// this session still being handled (a set being recorded, a node
	// update) must not be applied after the next session's full set, and
	// the chunks being gathered are the next session's to reset.
	recvDone := make(chan struct{})
	defer func() {
		cancel()
		<-recvDone
	}()
	go func() {
		defer close(recvDone)
		for {
			msg, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case lastAck <- struct{}{}:
			default:
			}
			if p := msg.GetHeartbeatAck().GetHeartbeatPeriodMs(); p > 0 {
				select {
				case <-periods: // replaced by the newer one
				default:
				}
				periods <- time.Duration(p) * time.Millisecond
			}
			if err := a.handle(msg); err != nil {
				recvErr <- err
				return
			}
		}
	}()
	select {
	case err = <-errc:
		if ctx.Err() == nil {
			return err
		}
	case err = <-recvErr:
		return err
	case <-ctx.Done():
	}
	a.sayGoodbye(addr, stream, &sendMu, recvErr)
	return ctx.Err()
}

// sessionWindow is the session connection's HTTP/2 flow-control window
// (stream and connection), fixed. With gRPC's default dynamic window the
// client estimates the bandwidth-delay product: every DATA frame that
// arrives while no estimate is in flight sends a PING (and a WINDOW_UPDATE)
// that the manager must read and answer with a PING ACK, a write and a
// flush of its own. A session's messages are small and far apart (an
// assignment, a heartbeat ack), so nearly every one cost
// the manager a second round of frames and syscalls: with 5,000 sessions
// that was a large share of the leader's CPU (docs/benchmarks-history.md, "Scheduler at
// scale"). Twice the largest assignment chunk (dispatcher's
// maxAssignmentBytes, 1 MiB) lets a full set stream without waiting on
// window updates; nothing is allocated for it up front.
const sessionWindow = 2 << 20

// openTimeout bounds opening a session until the manager's host accepts
// the TCP connection. A whole kill -9 + `shoal daemon` + session open
// takes about 0.1 s in the e2e fabric (TestKill9RestartMovesNothing), so a
// manager that has not even accepted the connection after a second is as
// good as gone (powered off: no reset, just silence, which would hold the
// attempt for gRPC's connect timeout, 20 s).
const openTimeout = time.Second

// connectedTimeout bounds the rest of the opening (TLS handshake, hello,
// the manager's answer) once the manager's host accepted the connection.
// A leader opening thousands of sessions queues their handshakes: with
// openTimeout covering them too, 1,300 of 5,000 attempts were cut after a
// second (the leader's handshake work wasted) and retried, a storm that
// kept the leader from ever catching up. Not much more: a manager process
// that hangs with its host up is waited for this long.
const connectedTimeout = 3 * time.Second

// welcomeTimeout bounds the rest of the opening once the manager has
// answered: its dispatcher registers the session (a raft write) before the
// welcome, and its liveness monitor ends a registration that takes longer
// than the down threshold anyway.
const welcomeTimeout = 10 * time.Second

// openDeadline is the deadline of one attempt to open a session:
// openTimeout from start, then extended as the manager shows it is alive
// (connectedTimeout once the TCP connection is up, welcomeTimeout once it
// answered the hello). When it passes, cancel ends the attempt. The dialer
// extends it from gRPC's goroutine, hence the lock.
type openDeadline struct {
	mu      sync.Mutex
	timer   *time.Timer
	limit   time.Duration // the limit in force
	fired   bool
	stopped bool
	cancel  func()
}

func newOpenDeadline(cancel func()) *openDeadline {
	return &openDeadline{cancel: cancel, limit: openTimeout}
}

// start arms the deadline with the limit in force.
func (d *openDeadline) start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped || d.timer != nil {
		return
	}
	d.timer = time.AfterFunc(d.limit, d.fire)
}

func (d *openDeadline) fire() {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	d.fired = true
	d.mu.Unlock()
	d.cancel()
}

// extend gives the attempt limit from now, if that is longer than the
// limit in force and the deadline has not passed.
func (d *openDeadline) extend(limit time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fired || d.stopped || limit <= d.limit {
		return
	}
	d.limit = limit
	if d.timer != nil && d.timer.Stop() {
		d.timer = time.AfterFunc(limit, d.fire)
	}
}

// stop disarms the deadline; false if it had passed already.
func (d *openDeadline) stop() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
	}
	d.stopped = true
	return !d.fired
}

// expired reports the limit that cut the attempt, if one did.
func (d *openDeadline) expired() (time.Duration, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.limit, d.fired
}

// goodbyeWait bounds how long a stopping agent waits for the dispatcher to
// record its goodbye (a raft write) before it closes the session anyway.
const goodbyeWait = 3 * time.Second

// sayGoodbye tells the dispatcher that this node is restarting, then waits
// until the dispatcher ends the stream, which it does once the restart is
// recorded (its tasks are then kept for the cluster's restart grace). A
// dispatcher that does not answer in goodbyeWait is given up on: the node
// is then judged by its heartbeats, as after a crash.
func (a *Agent) sayGoodbye(addr string, stream shoalv1.Dispatcher_SessionClient, sendMu *sync.Mutex, recvErr <-chan error) {
	bye := &shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Goodbye{Goodbye: &shoalv1.Goodbye{Restarting: true}}}
	sendMu.Lock()
	err := stream.Send(bye)
	if err == nil {
		err = stream.CloseSend()
	}
	sendMu.Unlock()
	if err != nil {
		a.log.Warn("saying goodbye to the manager", "manager", addr, "err", err)
		return
	}
	select {
	case err := <-recvErr:
		if err != nil && !errors.Is(err, io.EOF) {
			a.log.Warn("the manager did not acknowledge the goodbye", "manager", addr, "err", err)
			return
		}
		a.log.Info("said goodbye (restarting); the managers keep this node's tasks for the restart grace", "manager", addr)
	case <-time.After(goodbyeWait):
		a.log.Warn("the manager did not acknowledge the goodbye in time", "manager", addr, "waited", goodbyeWait)
	}
}

// silentPeriods is how many heartbeat periods without an acknowledgement
// make the agent give up on its manager and dial the next: as many as the
// managers' default down threshold (4 periods, 2 s at 500 ms; the period
// is the welcome's, which grows with the cluster's size beyond 500 nodes:
// dispatcher.scaledPeriod), so the agent does not
// drop a session its manager would still count as alive. With 3 periods
// (1.5 s) a leader stalled for a moment by a burst (thousands of sessions
// opening, a 100,000-task service) lost every session at once, and the
// reconnect storm that followed (a TLS handshake and a raft write per
// node) stalled it again. Not more: when the leader loses power, the next
// one marks the node DOWN 4 periods after it takes over (its own start,
// after an election of at least a second), and the agent must have dialed
// it by then. A manager that died with its host up resets the connection
// at once and is not waited for.
const silentPeriods = 4

// silenceLimit is how long the agent waits for an acknowledgement.
func silenceLimit(period time.Duration) time.Duration { return silentPeriods * period }

// heartbeat sends a heartbeat every period and gives up on a manager
// silent for silenceLimit(period); a period from periods (the manager's,
// which grows with the cluster's size or follows the cluster setting heartbeat_period_ms)
// replaces both from then on.
//
// A heartbeat is skipped while the session carries traffic both ways
// (heartbeatWait): the manager counts any message from the node as a sign
// of life (dispatcher's seen), and a message received tells the agent its
// manager is alive. While 5,000 nodes each take tasks, the heartbeats and
// their acknowledgements were about a tenth of the sessions' messages,
// each a read, a write and a flush on the leader (docs/benchmarks-history.md, "Scheduler at
// scale", eighth round). The node never goes longer than a period without
// a message, as with a heartbeat every period, so the manager's down
// threshold (node_down_after_missed may be 1 or 2) and gossip's fast path
// (DOWN after two silent periods) keep their margins. A quiet session, or
// one whose manager stopped answering, heartbeats every period; a period
// changed by the manager is named in a heartbeat at once (the manager
// judges the node by a shorter period only once a heartbeat names it).
// sent (unix nanoseconds of the last other message sent; nil: none)
// is read at each decision.
func (a *Agent) heartbeat(ctx context.Context, send func(*shoalv1.AgentMessage) error, period time.Duration, ack <-chan struct{}, periods <-chan time.Duration, sent *atomic.Int64) error {
	tick := time.NewTimer(period)
	defer tick.Stop()
	silence := silenceLimit(period)
	deadline := time.NewTimer(silence)
	defer deadline.Stop()
	hb := heartbeatMsg(period)
	heard := false // a message came from the manager since the last decision
	named := true  // a heartbeat named the period in use (or none changed it)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case p := <-periods:
			if p != period {
				a.log.Info("heartbeat period changed by the manager", "from", period, "to", p)
				period, silence = p, silenceLimit(p)
				tick.Reset(period)
				hb = heartbeatMsg(period)
				named = false
				deadline.Reset(silence) // the change came in a message: the manager spoke
			}
		case <-ack:
			deadline.Reset(silence)
			heard = true
		case <-deadline.C:
			return fmt.Errorf("manager silent for %s", silence)
		case <-tick.C:
			since := time.Duration(math.MaxInt64)
			if sent != nil {
				if at := sent.Load(); at != 0 {
					since = time.Since(time.Unix(0, at))
				}
			}
			wait := heartbeatWait(since, heard && named, period)
			heard = false
			if wait > 0 {
				tick.Reset(wait) // a period after the last message sent
				continue
			}
			if err := send(hb); err != nil {
				return err
			}
			named = true
			tick.Reset(period)
		}
	}
}

// heartbeatWait decides at a heartbeat's due time: 0 to send it now, or
// how long until it is due again, counted from the last other message the
// agent sent (since ago). A heartbeat is skipped only when that message
// went out less than a period ago and heard: the manager spoke since the
// last decision (and the period in use was named to it). Timed from the
// last message, the node is never silent longer than a period; skipping
// a whole tick whenever the period before it carried a status let a
// status just after one tick be followed by the heartbeat of the tick
// after next, nearly two periods of silence.
func heartbeatWait(since time.Duration, heard bool, period time.Duration) time.Duration {
	if !heard || since < 0 || since >= period {
		return 0
	}
	return period - since
}

// heartbeatMsg is a heartbeat naming the period the agent heartbeats at:
// the manager judges the node by a shorter period it told the session only
// once a heartbeat says the agent uses it (an agent of an earlier release
// sends none and keeps the welcome's period until its next session).
func heartbeatMsg(period time.Duration) *shoalv1.AgentMessage {
	return &shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Heartbeat{Heartbeat: &shoalv1.Heartbeat{HeartbeatPeriodMs: period.Milliseconds()}}}
}

// sendStatuses reports task statuses: everything the executor holds when
// the session opens (the new leader may have missed some), then each
// change as it happens. Changes that pile up while a send is in flight go
// out together in the next batch.
func (a *Agent) sendStatuses(ctx context.Context, ex TaskExecutor, send func(*shoalv1.AgentMessage) error) error {
	all := true
	for {
		if updates := ex.TakeUpdates(all); len(updates) > 0 {
			for len(updates) > 0 {
				n := min(len(updates), maxStatusBatch)
				msg := &shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Status{Status: &shoalv1.TaskStatusBatch{Updates: updates[:n]}}}
				if err := send(msg); err != nil {
					return err
				}
				updates = updates[n:]
			}
		}
		all = false
		select {
		case <-ex.Updates():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// maxStatusBatch keeps one status message well under gRPC's 4 MB limit.
const maxStatusBatch = 500

func (a *Agent) setManagers(ms []string) {
	if len(ms) == 0 {
		return
	}
	a.mu.Lock()
	a.managers = append([]string(nil), ms...)
	a.mu.Unlock()
	if a.cfg.OnManagers != nil {
		a.cfg.OnManagers(ms)
	}
}

// handle applies one session message and reports what follows from it.
func (a *Agent) handle(msg *shoalv1.SessionMessage) error {
	switch m := msg.GetMsg().(type) {
	case *shoalv1.SessionMessage_Assignments:
		set, err := a.assemble(m.Assignments)
		if err != nil {
			return err
		}
		if set == nil {
			return nil // more chunks of this set to come
		}
		// The executor holds the set and reports what follows.
		a.cfg.Executor.Assign(set.GetFull(), set.GetUpsert(), set.GetRemoved())
	case *shoalv1.SessionMessage_Node:
		if a.cfg.OnNode != nil {
			a.cfg.OnNode(m.Node)
		}
	case *shoalv1.SessionMessage_Managers:
		a.setManagers(m.Managers.GetManagers())
	case *shoalv1.SessionMessage_Networks:
		n, err := a.assembleNetworks(m.Networks)
		if err != nil {
			return err
		}
		if n == nil {
			return nil // more chunks to come
		}
		states, err := a.holdNetworks(n)
		if err != nil {
			return err
		}
		if a.cfg.Networks != nil {
			ctx, cancel := context.WithTimeout(context.Background(), networkReconcileTimeout)
			defer cancel()
			if err := a.cfg.Networks.Reconcile(ctx, n.GetFull(), states, n.GetRemoved()); err != nil {
				a.log.Warn("reconciling overlay networks", "err", err)
			}
		}
	case *shoalv1.SessionMessage_Gossip:
		if a.cfg.Gossip != nil {
			a.cfg.Gossip.SetGossip(m.Gossip.GetKeys(), m.Gossip.GetPeers())
		}
	}
	return nil
}

// assemble gathers the chunks of an assignment set (every chunk but the
// last has more=true, only the first carries full): it returns nil while
// chunks are still to come, and the whole set, to be applied once, with the
// last. The first chunk of a full set drops whatever an ended session left
// half received: a session always starts with a full set. A set whose
// chunks add up to more than maxSetBytes is dropped with an error, which
// ends the session.
func (a *Agent) assemble(m *shoalv1.Assignments) (*shoalv1.Assignments, error) {
	if m.GetFull() || a.partial == nil {
		if !m.GetMore() {
			a.partial, a.partialBytes = nil, 0
			return m, nil
		}
		a.partial, a.partialBytes = &shoalv1.Assignments{Full: m.GetFull()}, 0
	}
	a.partialBytes += proto.Size(m)
	if a.partialBytes > a.maxSetBytes {
		n := len(a.partial.GetUpsert()) + len(a.partial.GetRemoved())
		a.partial, a.partialBytes = nil, 0
		return nil, fmt.Errorf("the manager's assignment set passed %d bytes (%d entries) without its last chunk: dropped", a.maxSetBytes, n)
	}
	a.partial.Upsert = append(a.partial.Upsert, m.GetUpsert()...)
	a.partial.Removed = append(a.partial.Removed, m.GetRemoved()...)
	if m.GetMore() {
		return nil, nil
	}
	set := a.partial
	a.partial, a.partialBytes = nil, 0
	return set, nil
}

// assembleNetworks gathers the chunks of a Networks message like assemble
// does for assignments: nil while chunks are still to come, the whole
// message with the last one; a full first chunk drops a half-received
// one; more than maxSetBytes without the last chunk is an error (the
// session ends).
func (a *Agent) assembleNetworks(m *shoalv1.Networks) (*shoalv1.Networks, error) {
	if m.GetFull() || a.partialNet == nil {
		if !m.GetMore() {
			a.partialNet, a.partialNetBytes = nil, 0
			return m, nil
		}
		a.partialNet, a.partialNetBytes = &shoalv1.Networks{Full: m.GetFull()}, 0
	}
	a.partialNetBytes += proto.Size(m)
	if a.partialNetBytes > a.maxSetBytes {
		n := len(a.partialNet.GetNetworks()) + len(a.partialNet.GetRemoved())
		a.partialNet, a.partialNetBytes = nil, 0
		return nil, fmt.Errorf("the manager's network state passed %d bytes (%d entries) without its last chunk: dropped", a.maxSetBytes, n)
	}
	a.partialNet.Networks = append(a.partialNet.Networks, m.GetNetworks()...)
	a.partialNet.Removed = append(a.partialNet.Removed, m.GetRemoved()...)
	a.partialNet.Deltas = append(a.partialNet.Deltas, m.GetDeltas()...)
	if m.GetMore() {
		return nil, nil
	}
	set := a.partialNet
	a.partialNet, a.partialNetBytes = nil, 0
	return set, nil
}

// holdNetworks records the network states of a whole Networks message (its
// chunks assembled) as the bases of later deltas, and returns the states
// it sets: those listed whole, then those its deltas made. A delta of a
// network the agent does not hold, or one that does not apply (see
// netdelta.Apply), means its state is not the manager's: the error ends
// the session, and the next one starts from a full set.
func (a *Agent) holdNetworks(n *shoalv1.Networks) ([]*shoalv1.NetworkState, error) {
	if n.GetFull() {
		if len(n.GetDeltas()) > 0 {
			return nil, fmt.Errorf("the manager's full network set carries %d deltas", len(n.GetDeltas()))
		}
		a.netHeld = make(map[string]*shoalv1.NetworkState, len(n.GetNetworks()))
	} else if a.netHeld == nil {
		a.netHeld = map[string]*shoalv1.NetworkState{}
	}
	for _, s := range n.GetNetworks() {
		a.netHeld[s.GetNetwork().GetMeta().GetId()] = s
	}
	for _, id := range n.GetRemoved() {
		delete(a.netHeld, id)
	}
	if len(n.GetDeltas()) == 0 {
		return n.GetNetworks(), nil
	}
	states := slices.Clone(n.GetNetworks())
	for _, d := range n.GetDeltas() {
		base := a.netHeld[d.GetNetworkId()]
		if base == nil {
			return nil, fmt.Errorf("the manager sent a delta of network %q, whose state this node does not hold; a new session starts from a full set", d.GetNetworkId())
		}
		next, err := netdelta.Apply(base, d)
		if err != nil {
			return nil, fmt.Errorf("the manager's network delta does not apply to the state this node holds (%w); a new session starts from a full set", err)
		}
		a.netHeld[d.GetNetworkId()] = next
		states = append(states, next)
	}
	return states, nil
}
