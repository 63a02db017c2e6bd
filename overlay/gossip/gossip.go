package gossip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultPort is the gossip port (TCP and UDP) when Config.Port is 0.
const DefaultPort = 7946

// MaxHintSize is the largest hint SendHint accepts: one sealed hint
// packet stays well under a UDP datagram on any MTU.
const MaxHintSize = 512

// State is a member's state as seen by this node.
type State string

const (
	StateAlive State = "alive"
	// StateSuspect is defined for the API but memberlist v0.6.0 does not
	// expose suspicion to delegates; members show alive until declared dead.
	StateSuspect State = "suspect"
	StateDead    State = "dead"
	StateLeft    State = "left"
	// StateUnknown: the node was never seen by this member.
	StateUnknown State = "unknown"
)

// Member is one node of the gossip cluster.
type Member struct {
	NodeID string
	Addr   string // host:port of its gossip endpoint
	State  State
	Since  time.Time // when this node last saw the state change
}

// Event is a state change of a member.
type Event struct {
	Member Member
}

// Tuning holds the memberlist timing knobs Shoal sets. Zero fields take
// the value of DefaultTuning.
type Tuning struct {
	ProbeInterval    time.Duration
	ProbeTimeout     time.Duration
	GossipInterval   time.Duration
	SuspicionMult    int
	SuspicionMaxMult int
	IndirectChecks   int
	PushPullInterval time.Duration
	TCPTimeout       time.Duration
	// AwarenessMaxMult is memberlist's AwarenessMaxMultiplier (Lifeguard):
	// how far a slow local node stretches its own probe timeouts.
	AwarenessMaxMult int
}

// Config configures a Node.
type Config struct {
	NodeID        string // unique, stable: the Shoal node ID
	BindAddr      string // default 0.0.0.0
	AdvertiseAddr string // address other nodes reach; default: chosen by memberlist
	Port          int    // default DefaultPort; -1 means pick a free port (tests)
	Keys          [][]byte
	Logger        *slog.Logger
	Tuning        Tuning
	// OnEvent is called (from a single goroutine, in order) on every state
	// change seen: join (alive), suspect, dead, left, re-alive.
	OnEvent func(Event)
	// OnHint is called for every hint received from another member whose
	// gossip address is the packet's source (see Sender). The slice is
	// owned by the callee. Must not block for long: it runs on the
	// receive path.
	OnHint func(from Sender, hint []byte)
}

// Node is a running gossip member.
type Node struct {
	cfg Config
	log *slog.Logger

	ml        *memberlist.Memberlist
	keyring   *memberlist.Keyring
	transport *hintTransport
	rejected  atomic.Uint64 // hints dropped (HintsRejected)

	mu      sync.Mutex
	members map[string]Member // every node ever seen, with last state

	events  chan Event
	stopEv  chan struct{}
	evDone  chan struct{}
	closed  bool
	leaving bool
}

// New validates cfg and prepares a Node. Start makes it listen.
func New(cfg Config) (*Node, error) {
	if cfg.NodeID == "" || len(cfg.NodeID) > 255 {
		return nil, errors.New("gossip: NodeID is required (at most 255 bytes)")
	}
	if len(cfg.Keys) == 0 {
		return nil, errors.New("gossip: at least one key is required")
	}
	for i, k := range cfg.Keys {
		if l := len(k); l != 16 && l != 24 && l != 32 {
			return nil, fmt.Errorf("gossip: key %d has %d bytes, want 16, 24 or 32", i, l)
		}
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = "0.0.0.0"
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Node{cfg: cfg, log: cfg.Logger.With("component", "gossip"),
		members: map[string]Member{}}, nil
}

// Start creates the memberlist and starts listening. The node is alone
// until Join.
func (n *Node) Start() error {
	// Nodes encrypt with the oldest key they hold (see SetKeys).
	kr, err := memberlist.NewKeyring(n.cfg.Keys, n.cfg.Keys[len(n.cfg.Keys)-1])
	if err != nil {
		return fmt.Errorf("gossip: keyring: %w", err)
	}
	n.keyring = kr
	mc := memberlist.DefaultLANConfig()
	n.cfg.Tuning.apply(mc)
	mc.Name = n.cfg.NodeID
	mc.BindAddr = n.cfg.BindAddr
	port := n.cfg.Port
	if port < 0 {
		port = 0
	}
	lw := &logWriter{log: n.log}
	tr, err := newHintTransport(n.cfg.BindAddr, port, log.New(lw, "", log.LstdFlags), n.receiveHint)
	if err != nil {
		return err
	}
	port = tr.GetAutoBindPort()
	mc.Transport = tr
	mc.BindPort = port
	if n.cfg.AdvertiseAddr != "" {
		mc.AdvertiseAddr = n.cfg.AdvertiseAddr
	}
	mc.AdvertisePort = port
	mc.Keyring = kr
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.LogOutput = lw
	mc.Events = &eventDelegate{n: n}
	mc.Delegate = &delegate{n: n}
	n.events = make(chan Event, 1024)
	n.stopEv = make(chan struct{})
	n.evDone = make(chan struct{})
	go n.dispatchEvents()
	n.transport = tr
	ml, err := memberlist.Create(mc)
	if err != nil {
		tr.Shutdown()
		close(n.stopEv)
		<-n.evDone
		return fmt.Errorf("gossip: start on %s:%d: %w", n.cfg.BindAddr, port, err)
	}
	n.ml = ml
	return nil
}

// Addr is the advertised host:port of this node (what others Join).
func (n *Node) Addr() string {
	ln := n.ml.LocalNode()
	return net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
}

// Join contacts the given peers ("host:port", or "host" for DefaultPort)
// and returns how many answered. An error only if none did.
func (n *Node) Join(peers []string) (int, error) {
	if len(peers) == 0 {
		return 0, nil
	}
	c, err := n.ml.Join(peers)
	if c > 0 {
		return c, nil
	}
	return c, err
}

// SetKeys installs keys (newest first, as the managers send them):
// every listed key is accepted, keys not listed are removed, and the node
// encrypts with the oldest listed key. A rotation adds a key that every
// node accepts before anyone encrypts with it (so rotations, even two in
// a row, cut nobody off); once the managers drop the older keys, a grace
// period later, everybody encrypts with the new one, which every node
// with a session has accepted by then. Only a node that missed the whole
// grace period is cut off, until it gets the list. Call it on every node
// with the list the managers send.
func (n *Node) SetKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return errors.New("gossip: SetKeys: no key")
	}
	want := map[string]bool{}
	for i, k := range keys {
		if l := len(k); l != 16 && l != 24 && l != 32 {
			return fmt.Errorf("gossip: key %d has %d bytes, want 16, 24 or 32", i, l)
		}
		want[string(k)] = true
	}
	for _, k := range keys {
		if err := n.keyring.AddKey(k); err != nil {
			return err
		}
	}
	if err := n.keyring.UseKey(keys[len(keys)-1]); err != nil {
		return err
	}
	for _, k := range n.keyring.GetKeys() {
		if !want[string(k)] {
			if err := n.keyring.RemoveKey(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// NumKeys is for tests/diagnostics: the number of installed keys.
func (n *Node) NumKeys() int { return len(n.keyring.GetKeys()) }

// Members returns every node this member has seen (itself included),
// with its last state, built from memberlist's event delegate (the only
// place memberlist's node structs can be read without a data race).
func (n *Node) Members() []Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Member, 0, len(n.members))
	for _, m := range n.members {
		out = append(out, m)
	}
	return out
}

// State returns the state of one node as seen here (StateUnknown if never
// seen), and its gossip address.
func (n *Node) State(nodeID string) (State, string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	m, ok := n.members[nodeID]
	if !ok {
		return StateUnknown, ""
	}
	return m.State, m.Addr
}

// NumAlive is the number of alive members (self included).
func (n *Node) NumAlive() int { return n.ml.NumMembers() }

// Leave announces a graceful departure (others see StateLeft). memberlist
// v0.6.0 hands the same NotifyLeave to delegates for dead and left nodes
// (Node.State is never filled in), so a leaving node first sets its meta
// to "leaving" and waits for that update to go out; receivers mark it left.
func (n *Node) Leave(timeout time.Duration) error {
	n.mu.Lock()
	n.leaving = true
	n.mu.Unlock()
	if err := n.ml.UpdateNode(timeout); err != nil {
		n.log.Warn("gossip leave: meta update", "err", err)
	}
	return n.ml.Leave(timeout)
}

// Shutdown stops the node without announcing (others detect it dead).
func (n *Node) Shutdown() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	err := n.ml.Shutdown()
	close(n.stopEv)
	<-n.evDone
	return err
}

func toState(s memberlist.NodeStateType) State {
	switch s {
	case memberlist.StateAlive:
		return StateAlive
	case memberlist.StateSuspect:
		return StateSuspect
	case memberlist.StateDead:
		return StateDead
	case memberlist.StateLeft:
		return StateLeft
	}
	return StateUnknown
}

// record updates the member map and emits an event if the state changed.
func (n *Node) record(mn *memberlist.Node) {
	m := Member{NodeID: mn.Name, Addr: net.JoinHostPort(mn.Addr.String(), strconv.Itoa(int(mn.Port))),
		State: toState(mn.State), Since: time.Now()}
	n.mu.Lock()
	old, ok := n.members[m.NodeID]
	if ok && old.State == m.State && old.Addr == m.Addr {
		n.mu.Unlock()
		return
	}
	n.members[m.NodeID] = m
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return
	}
	select {
	case n.events <- Event{Member: m}:
	default:
		n.log.Warn("gossip event queue full, event dropped", "node", m.NodeID, "state", m.State)
	}
}

func (n *Node) dispatchEvents() {
	defer close(n.evDone)
	for {
		select {
		case <-n.stopEv:
			return
		case ev := <-n.events:
			if n.cfg.OnEvent != nil {
				n.cfg.OnEvent(ev)
			}
		}
	}
}

type eventDelegate struct{ n *Node }

func (e *eventDelegate) NotifyJoin(mn *memberlist.Node) {
	c := *mn
	c.State = memberlist.StateAlive
	e.n.record(&c)
}
func (e *eventDelegate) NotifyUpdate(mn *memberlist.Node) { e.NotifyJoin(mn) }
func (e *eventDelegate) NotifyLeave(mn *memberlist.Node) {
	c := *mn
	c.State = memberlist.StateDead
	if string(mn.Meta) == metaLeaving {
		c.State = memberlist.StateLeft
	}
	e.n.record(&c)
}

type delegate struct{ n *Node }

const metaLeaving = "leaving"

func (d *delegate) NodeMeta(limit int) []byte {
	d.n.mu.Lock()
	defer d.n.mu.Unlock()
	if d.n.leaving {
		return []byte(metaLeaving)
	}
	return nil
}

// NotifyMsg receives memberlist user messages: Shoal sends none (hints
// travel in packets of their own, bound to their sender), so whatever
// arrives here is dropped and counted.
func (d *delegate) NotifyMsg(b []byte)                         { d.n.rejected.Add(1) }
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// logWriter adapts memberlist's "[LEVEL] memberlist: msg" log lines to slog.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	s := strings.TrimSpace(string(p))
	lvl := slog.LevelInfo
	for _, c := range []struct {
		tag string
		l   slog.Level
	}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}, {"[ERROR]", slog.LevelError}} {
		if i := strings.Index(s, c.tag); i >= 0 {
			lvl = c.l
			s = strings.TrimSpace(s[i+len(c.tag):])
			break
		}
	}
	s = strings.TrimPrefix(s, "memberlist: ")
	// memberlist's background senders race its own Shutdown and report the
	// closed socket as an error: on a clean stop that is no error.
	if lvl > slog.LevelDebug && strings.Contains(s, net.ErrClosed.Error()) {
		lvl = slog.LevelDebug
	}
	w.log.Log(context.Background(), lvl, s)
	return len(p), nil
}
