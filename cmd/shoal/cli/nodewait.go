package cli

import (
	"context"
	"time"

	"github.com/shoal-dev/shoal/datadir"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A node is admitted (init, join) in state UNKNOWN, and stays so until its
// agent's first session opens and the leader writes it READY: about a
// second after `shoal dev`/`init`/`join` on an idle machine. A state of
// UNKNOWN therefore means "its agent has never connected". `node ls` shows
// such a node as Starting for startingWindow after its admission (an
// agent connects within seconds of it, or its process failed: then it is
// Unknown), and waits, up to localNodeWait, for the node of its own data
// dir to connect, so `shoal dev & shoal node ls` shows the node Ready
// rather than Unknown.

// startingWindow is how long after its admission a node that has never
// connected is shown as Starting.
const startingWindow = 30 * time.Second

// localNodeWait bounds how long `node ls` waits for its own node's agent
// to connect.
const localNodeWait = 10 * time.Second

// starting says whether n was admitted less than startingWindow before now
// and its agent has not connected yet (its status' last_heartbeat is its
// admission's time until then).
func starting(n *shoalv1.Node, now time.Time) bool {
	st := n.GetStatus()
	return st.GetState() == shoalv1.NodeState_NODE_STATE_UNKNOWN && st.GetLastHeartbeat() != nil &&
		now.Sub(st.GetLastHeartbeat().AsTime()) < startingWindow
}

// localNodeID is the node id of the data dir's node ("" when the data dir
// holds no node).
func (a *app) localNodeID() string {
	if a.dataDir == "" {
		return ""
	}
	st, err := datadir.Load(a.dataDir)
	if err != nil {
		return ""
	}
	return st.NodeID
}

// awaitStarting returns nodes with the node localID replaced by its state
// once its agent connected, when it is listed as starting: it follows
// the node's changes (Watch from the listed version on) for up to wait.
// Whatever ends the wait (its bound, the watch failing, the node leaving
// the list), the nodes are shown as last known.
func awaitStarting(ctx context.Context, ctl shoalv1.ControlClient, nodes []*shoalv1.Node, localID string, wait time.Duration) []*shoalv1.Node {
	i := -1
	for j, n := range nodes {
		if localID != "" && n.GetMeta().GetId() == localID {
			i = j
		}
	}
	if i < 0 || !starting(nodes[i], time.Now()) {
		return nodes
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	stream, err := ctl.Watch(wctx, &shoalv1.WatchRequest{Kinds: []string{"node"}, FromIndex: nodes[i].GetMeta().GetVersion() + 1})
	if err != nil {
		return nodes
	}
	out := append([]*shoalv1.Node(nil), nodes...)
	for {
		ev, err := stream.Recv()
		if err != nil {
			return out
		}
		n := ev.GetObject().GetNode()
		if n.GetMeta().GetId() != localID {
			continue
		}
		if ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE {
			return append(out[:i:i], out[i+1:]...)
		}
		out[i] = n
		if n.GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_UNKNOWN {
			return out
		}
	}
}
