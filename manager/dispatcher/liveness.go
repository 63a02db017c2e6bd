package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/specrules"
)

// DefaultRestartGrace is how long a node that said it is restarting keeps
// its tasks (ClusterSettings.restart_grace_ms, 0 meaning this): long enough
// for an upgrade of the binary and a slow start, short enough that a node
// that never comes back is replaced within a minute.
const DefaultRestartGrace = specrules.DefaultRestartGrace

// restartGrace returns the cluster's restart grace.
func (d *Dispatcher) restartGrace() time.Duration {
	if c, ok := raftstore.ClusterOf(d.cfg.Store.View()); ok {
		if g := c.GetSettings().GetRestartGraceMs(); g > 0 {
			return time.Duration(g) * time.Millisecond
		}
	}
	return DefaultRestartGrace
}

// goodbyeError ends a session's receive loop when the agent says goodbye.
type goodbyeError struct{ msg *shoalv1.Goodbye }

func (g *goodbyeError) Error() string {
	return fmt.Sprintf("the agent said goodbye (restarting: %v)", g.msg.GetRestarting())
}

// goodbye handles an agent's last message. A node that is restarting is
// recorded DISCONNECTED with a restart deadline: its tasks are not replaced
// until then (see verdict). The session ends (without an error) only once
// that is committed, which is the agent's acknowledgement. A goodbye
// without restarting changes nothing: heartbeats decide, as after a crash.
//
// The deadline is written only while sess is still the node's session: an
// agent that stopped waiting for the acknowledgement may be back, with a
// new session that recorded it READY, before this write is proposed; a
// deadline written after that would keep a live node DISCONNECTED and have
// it marked DOWN (its tasks replaced) when the deadline passes. The check
// runs inside the write, so a concurrent READY makes it conflict and see
// the new session when it retries.
func (d *Dispatcher) goodbye(ctx context.Context, log *slog.Logger, nodeID string, sess *session, bye *shoalv1.Goodbye) error {
	if !bye.GetRestarting() {
		log.Info("session ended", "reason", "goodbye")
		return nil
	}
	grace := d.restartGrace()
	deadline := time.Now().Add(grace)
	msg := fmt.Sprintf("restarting: its tasks are kept until %s (restart grace %s)", deadline.UTC().Format(time.RFC3339), grace)
	// ctx is the dispatcher's: the write is not abandoned if the agent
	// stops waiting for it.
	err := d.updateNode(ctx, nodeID, func(n *shoalv1.Node) error {
		d.mu.Lock()
		current := d.sessions[nodeID] == sess
		d.mu.Unlock()
		if !current {
			return errSessionReplaced
		}
		n.Status.State = shoalv1.NodeState_NODE_STATE_DISCONNECTED
		n.Status.Message = msg
		n.Status.RestartDeadline = timestamppb.New(deadline)
		return nil
	})
	if errors.Is(err, errSessionReplaced) {
		log.Info("goodbye (restarting) not recorded: the node is back with a new session")
		return nil
	}
	if err != nil {
		log.Warn("recording the node's restart; heartbeats will decide", "err", err)
		return err
	}
	d.seen(nodeID)
	log.Info("node restarting", "restart_deadline", deadline, "grace", grace)
	return nil
}

// errSessionReplaced: a goodbye came on a session that is no longer the
// node's current one.
var errSessionReplaced = errors.New("the session was replaced by a newer one")

// updateNode applies change to a clone of the node's object (with a
// status) and writes it, retrying on version conflicts with concurrent
// writers; an error of change aborts the write and is returned.
func (d *Dispatcher) updateNode(ctx context.Context, nodeID string, change func(*shoalv1.Node) error) error {
	for attempt := 0; ; attempt++ {
		_, err := d.cfg.Store.Update(ctx, func(tx raftstore.WriteTx) error {
			n, ok := raftstore.Get[*shoalv1.Node](tx, nodeID)
			if !ok {
				return fmt.Errorf("node %q: %w", nodeID, raftstore.ErrNotFound)
			}
			n = proto.Clone(n).(*shoalv1.Node)
			if n.Status == nil {
				n.Status = &shoalv1.NodeStatus{}
			}
			if err := change(n); err != nil {
				return err
			}
			return tx.Update(n)
		})
		if err == nil || !errors.Is(err, raftstore.ErrVersionConflict) || attempt >= 5 {
			return err
		}
	}
}

// Gossip states as the leader's memberlist reports them
// (NodeStatus.gossip_state).
const (
	GossipAlive   = "alive"
	GossipSuspect = "suspect"
	GossipDead    = "dead"
	GossipLeft    = "left"
)

// GossipView is the leader's own gossip membership, as the daemon wires it
// (overlay/gossip.Node behind an adapter). State returns "alive",
// "suspect", "dead", "left" or "" (never seen) and the node's gossip
// host:port. Nil in Config means no gossip: heartbeats alone decide.
type GossipView interface {
	State(nodeID string) (state, addr string)
}

// UnreachableMult is how many heartbeat limits a node whose heartbeats
// stopped but that gossip still sees alive is given before it is marked
// DOWN: a manager-to-node link problem moves nothing for that long.
const UnreachableMult = 3

// fastDownMissed is how many heartbeats a node must have missed for gossip
// saying dead to mark it DOWN at once (before the full limit): two, so one
// late heartbeat plus a stale gossip view is not enough.
const fastDownMissed = 2

// liveness is the outcome of verdict for one node.
type liveness struct {
	down        bool
	unreachable bool // heartbeats stopped, gossip sees it alive: waiting
	reason      string
}

// verdict says whether the liveness monitor marks a node DOWN now, and
// why: a node that said it is restarting when its restart deadline has
// passed; any other node whose heartbeats stopped, corroborated by the
// leader's gossip view (gossip):
//   - gossip says dead or left: DOWN once fastDownMissed heartbeats of
//     the configured period are missed (fast, no need to wait for the
//     full limit, which grows with the cluster's size: scaledPeriod);
//   - gossip says suspect (the leader's direct probe and the indirect
//     probes through other members failed): DOWN at the limit, as with
//     heartbeats alone — two independent signals agree, and waiting for
//     memberlist to turn suspect into dead only delayed a power cut's
//     replacement by a second or more;
//   - gossip says alive: unreachable (not DOWN) until silent for
//     UnreachableMult times the limit, then DOWN (a manager-to-node link
//     problem: other members still reach the node);
//   - no gossip view ("" or unknown): DOWN after limit, as before.
//
// period is the configured heartbeat period, limit the node's: its
// (possibly scaled) period times the heartbeats it may miss. A node
// already DOWN is left alone.
func verdict(n *shoalv1.Node, lastSeen, now time.Time, period, limit time.Duration, gossip string) liveness {
	if n.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_DOWN {
		return liveness{}
	}
	if dl := n.GetStatus().GetRestartDeadline(); dl != nil {
		if now.Before(dl.AsTime()) {
			return liveness{}
		}
		return liveness{down: true, reason: "restart grace passed without the node coming back"}
	}
	silent := now.Sub(lastSeen)
	switch gossip {
	case GossipDead, GossipLeft:
		if fast := period * fastDownMissed; silent > fast && fast < limit {
			return liveness{down: true, reason: fmt.Sprintf("heartbeat missed for %s and gossip says %s", fast, gossip)}
		}
	case GossipSuspect:
		if silent > limit {
			return liveness{down: true, reason: fmt.Sprintf("heartbeat missed for %s and gossip suspects it (its probes fail)", limit)}
		}
		return liveness{}
	case GossipAlive:
		if silent <= limit {
			return liveness{}
		}
		if long := limit * UnreachableMult; silent > long {
			return liveness{down: true, reason: fmt.Sprintf("heartbeat missed for %s although gossip sees it %s", long, gossip)}
		}
		return liveness{unreachable: true, reason: fmt.Sprintf("heartbeat missed for %s but gossip sees it %s: unreachable, given until %s", limit, gossip, limit*UnreachableMult)}
	}
	if silent > limit {
		return liveness{down: true, reason: fmt.Sprintf("heartbeat missed for %s", limit)}
	}
	return liveness{}
}

// maxGossipPeers bounds the peers a node is told to join through:
// memberlist needs one answer, the rest is spread by gossip.
const maxGossipPeers = 5

// gossipMessage is the session message that gives a node the cluster's
// gossip keys (newest first) and a few peers to join through: READY nodes
// with a known gossip address, managers first, the node itself excluded.
// Nil while the cluster has no key (a cluster made before issue 9), and
// for a node the view does not have or lists as removed: `node rm`
// deletes the node and rotates the key in one entry, and a session that
// has not seen the deletion yet reads the keys from a newer view — the
// removed node must not get the key rotated to shut it out (its session
// ends on the deletion event).
func gossipMessage(view raftstore.Reader, nodeID string, peers []gossipPeer) *shoalv1.SessionMessage {
	c, ok := raftstore.ClusterOf(view)
	if !ok || len(c.GetGossipKeys()) == 0 || slices.Contains(c.GetRemovedNodes(), nodeID) {
		return nil
	}
	if _, ok := raftstore.Get[*shoalv1.Node](view, nodeID); !ok {
		return nil
	}
	var addrs []string
	for _, p := range peers {
		if p.id != nodeID && len(addrs) < maxGossipPeers {
			addrs = append(addrs, p.addr)
		}
	}
	return &shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Gossip{Gossip: &shoalv1.Gossip{Keys: c.GetGossipKeys(), Peers: addrs}}}
}

// gossipPeer is a node a session may be told to join gossip through.
type gossipPeer struct{ id, addr string }

// gossipPeers lists the join candidates of view: READY nodes with a known
// gossip address, managers first, at most maxGossipPeers+1 (one may be
// the node asking).
func gossipPeers(view raftstore.Reader) []gossipPeer {
	var managers, workers []gossipPeer
	for _, n := range raftstore.List[*shoalv1.Node](view) {
		st := n.GetStatus()
		if st.GetGossipAddr() == "" || st.GetState() != shoalv1.NodeState_NODE_STATE_READY {
			continue
		}
		p := gossipPeer{id: n.GetMeta().GetId(), addr: st.GetGossipAddr()}
		if n.GetRole() == shoalv1.NodeRole_NODE_ROLE_MANAGER {
			managers = append(managers, p)
		} else if len(workers) <= maxGossipPeers {
			workers = append(workers, p)
		}
	}
	peers := append(managers, workers...)
	return peers[:min(len(peers), maxGossipPeers+1)]
}

// peersTTL is how long the join candidates are reused: they are hints
// (memberlist needs one answer), and listing every node for every session
// opening was O(nodes²) while 5,000 sessions opened: 14 % of the leader
// (docs/benchmarks-history.md, "Scheduler at scale"), and again on every key rotation.
const peersTTL = time.Second

// peerCache keeps gossipPeers for peersTTL.
type peerCache struct {
	mu    sync.Mutex
	at    time.Time
	peers []gossipPeer
	now   func() time.Time // time.Now; tests replace it
}

// get returns the cached candidates, listed again from view when older
// than peersTTL.
func (c *peerCache) get(view raftstore.Reader) []gossipPeer {
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := now(); c.at.IsZero() || t.Sub(c.at) >= peersTTL {
		c.peers, c.at = gossipPeers(view), t
	}
	return c.peers
}
