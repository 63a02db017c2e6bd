package daemon

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/overlay"
	"github.com/shoal-dev/shoal/overlay/gossip"
)

// nodeGossip is this node's gossip membership (overlay/gossip). It starts
// with the node, before any session, on the advertise IP and
// Options.GossipPort (default 7946; if that port is taken, an ephemeral
// one, with a warning — the address actually bound is what the hello
// reports). Until the managers send the cluster's keys it holds a random
// key of its own, so it can talk to nobody. It is:
//   - the agent's GossipConsumer: keys and peers from the session;
//   - the manager's dispatcher.GossipView: liveness corroboration.
type nodeGossip struct {
	log *slog.Logger
	n   *gossip.Node // nil if gossip could not start

	mu       sync.Mutex
	haveKeys bool
	// onHint receives the hints of other members (setHintHandler); hints
	// are queued (hintQueue, dropped when full) so that gossip's receive
	// path never waits for the kernel.
	onHint func([]byte)
	hints  chan []byte
	// onWithdrawn receives the Withdrawn acknowledgements of other
	// members (setWithdrawnHandler), on gossip's receive path: it only
	// records them.
	onWithdrawn func(overlay.Withdrawn)
	// rejected counts hints dropped here because their VTEP is not the
	// sending member's address (the gossip layer counts its own drops).
	rejected atomic.Uint64
}

// hintQueue bounds the hints waiting for the handler.
const hintQueue = 256

// startGossip starts the node's memberlist. Failure is not fatal: the node
// runs without gossip (heartbeats alone decide about it).
func startGossip(log *slog.Logger, nodeID, advertiseHost string, port int) *nodeGossip {
	g := &nodeGossip{log: log.With("component", "gossip"), hints: make(chan []byte, hintQueue)}
	if port < 0 {
		return g // disabled
	}
	if port == 0 {
		port = gossip.DefaultPort
	}
	placeholder := make([]byte, 32)
	if _, err := rand.Read(placeholder); err != nil {
		g.log.Warn("gossip disabled", "err", err)
		return g
	}
	start := func(p int) (*gossip.Node, error) {
		n, err := gossip.New(gossip.Config{NodeID: nodeID, BindAddr: advertiseHost, AdvertiseAddr: advertiseHost, Port: p,
			Keys: [][]byte{placeholder}, Logger: log, OnHint: g.received})
		if err != nil {
			return nil, err
		}
		return n, n.Start()
	}
	n, err := start(port)
	if err != nil {
		g.log.Warn("gossip port taken, using an ephemeral one", "port", port, "err", err)
		if n, err = start(-1); err != nil {
			g.log.Warn("gossip disabled", "err", err)
			return g
		}
	}
	g.n = n
	g.log.Info("gossip started", "addr", n.Addr())
	return g
}

// Addr is the gossip host:port to put in the hello ("" without gossip).
func (g *nodeGossip) Addr() string {
	if g == nil || g.n == nil {
		return ""
	}
	return g.n.Addr()
}

// SetGossip installs the cluster's keys (the key values are never logged)
// and joins through peers when this node is alone. The join runs in the
// background: it must not hold up the session.
func (g *nodeGossip) SetGossip(keys [][]byte, peers []string) {
	if g == nil || g.n == nil || len(keys) == 0 {
		return
	}
	if err := g.n.SetKeys(keys); err != nil {
		g.log.Warn("installing gossip keys", "keys", len(keys), "err", err)
		return
	}
	g.mu.Lock()
	first := !g.haveKeys
	g.haveKeys = true
	g.mu.Unlock()
	if first {
		g.log.Info("gossip keys installed", "keys", len(keys))
	}
	if len(peers) == 0 || g.n.NumAlive() > 1 {
		return
	}
	self := g.n.Addr()
	var others []string
	for _, p := range peers {
		if p != self {
			others = append(others, p)
		}
	}
	if len(others) == 0 {
		return
	}
	go func() {
		if c, err := g.n.Join(others); err != nil {
			g.log.Warn("joining gossip", "peers", others, "err", err)
		} else {
			g.log.Info("joined gossip", "answered", c)
		}
	}()
}

// received queues a hint from another member (gossip's OnHint). The
// gossip layer has checked that the packet came from the gossip address
// of the member it names; the hint is accepted only if the endpoint's
// VTEP is that same address, so that a key holder cannot get an endpoint
// programmed pointing anywhere but at itself (raft still decides: the
// next network state overrides any hint).
func (g *nodeGossip) received(from gossip.Sender, hint []byte) {
	if overlay.IsWithdrawn(hint) {
		g.receivedWithdrawn(from, hint)
		return
	}
	if err := checkHintSender(from, hint); err != nil {
		// A member announcing endpoints elsewhere than on itself is worth
		// an operator's eye, but must not flood the log: warn on the 1st,
		// 2nd, 4th, 8th, … rejection.
		n := g.rejected.Add(1)
		lvl := slog.LevelDebug
		if n&(n-1) == 0 {
			lvl = slog.LevelWarn
		}
		g.log.Log(context.Background(), lvl, "gossip hint dropped", "from", from.NodeID, "addr", from.Addr, "rejected_total", n, "err", err)
		return
	}
	select {
	case g.hints <- hint:
	default:
		g.log.Debug("hint queue full, hint dropped", "from", from.NodeID)
	}
}

// receivedWithdrawn passes on a Withdrawn acknowledgement whose VTEP is
// its sender's address (a member acknowledges for itself only).
func (g *nodeGossip) receivedWithdrawn(from gossip.Sender, b []byte) {
	w, err := overlay.DecodeWithdrawn(b)
	if err == nil && w.VTEP != from.Addr.Addr() {
		err = fmt.Errorf("withdrawal of task %q names VTEP %s, not its sender's address %s", w.TaskID, w.VTEP, from.Addr.Addr())
	}
	if err != nil {
		g.rejected.Add(1)
		g.log.Debug("gossip withdrawal dropped", "from", from.NodeID, "err", err)
		return
	}
	g.mu.Lock()
	f := g.onWithdrawn
	g.mu.Unlock()
	if f != nil {
		f(w)
	}
}

// setWithdrawnHandler starts delivering received Withdrawn
// acknowledgements to f.
func (g *nodeGossip) setWithdrawnHandler(f func(overlay.Withdrawn)) {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.onWithdrawn = f
	g.mu.Unlock()
}

// alive returns the underlay addresses of the members gossip holds
// alive (nil without gossip: nothing known).
func (g *nodeGossip) alive() map[netip.Addr]bool {
	if g == nil || g.n == nil {
		return nil
	}
	out := map[netip.Addr]bool{}
	for _, m := range g.n.Members() {
		if a, err := netip.ParseAddr(hostOf(m.Addr)); err == nil && m.State == gossip.StateAlive {
			out[a] = true
		}
	}
	return out
}

// checkHintSender accepts a hint only if it decodes and its VTEP is the
// sender's address.
func checkHintSender(from gossip.Sender, hint []byte) error {
	h, err := overlay.DecodeHint(hint)
	if err != nil {
		return err
	}
	if h.VTEP != from.Addr.Addr() {
		return fmt.Errorf("hint for task %q names VTEP %s, not its sender's address %s", h.TaskID, h.VTEP, from.Addr.Addr())
	}
	return nil
}

// hintsRejected is the number of hints dropped, here and in the gossip
// layer (diagnostics and tests).
func (g *nodeGossip) hintsRejected() uint64 {
	if g == nil || g.n == nil {
		return 0
	}
	return g.rejected.Load() + g.n.HintsRejected()
}

// setHintHandler starts delivering received hints to f, one at a time,
// until stop is closed.
func (g *nodeGossip) setHintHandler(f func([]byte), stop <-chan struct{}) {
	if g == nil || g.n == nil {
		return
	}
	go func() {
		for {
			select {
			case <-stop:
				return
			case h := <-g.hints:
				f(h)
			}
		}
	}()
}

// broadcast sends a hint to every member (best effort): directly to up
// to gossip.MaxDirectHints of them at once, and through gossip.
func (g *nodeGossip) broadcast(hint []byte) {
	if g == nil || g.n == nil {
		return
	}
	if err := g.n.SendHint(hint); err != nil {
		g.log.Debug("broadcasting a hint", "err", err)
	}
}

// State is the dispatcher's GossipView: this node's view of nodeID.
func (g *nodeGossip) State(nodeID string) (string, string) {
	if g == nil || g.n == nil {
		return "", ""
	}
	s, addr := g.n.State(nodeID)
	if s == gossip.StateUnknown {
		return "", ""
	}
	return string(s), addr
}

// close leaves the membership (others see "left", not "dead") and stops.
func (g *nodeGossip) close() {
	if g == nil || g.n == nil {
		return
	}
	if err := g.n.Leave(time.Second); err != nil {
		g.log.Debug("gossip leave", "err", err)
	}
	if err := g.n.Shutdown(); err != nil {
		g.log.Debug("gossip shutdown", "err", err)
	}
}

// hostOf returns the host part of a host[:port] address.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
