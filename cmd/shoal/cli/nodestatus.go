package cli

import (
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// nodeStatusAt is the STATUS column of `node ls` at now: the node's state,
// "Starting" for a node admitted shortly before whose agent has not
// connected yet (nodewait.go), or "Restarting" for a node that said it is
// restarting and whose tasks are kept until its restart deadline.
func nodeStatusAt(n *shoalv1.Node, now time.Time) string {
	if starting(n, now) {
		return "Starting"
	}
	if n.GetStatus().GetRestartDeadline() != nil && n.GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_READY {
		return "Restarting"
	}
	if n.GetStatus().GetUnreachable() && n.GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_DOWN {
		// Heartbeats stopped but gossip sees it alive (a manager-to-node
		// link problem): not DOWN, given more time.
		return "Unreachable"
	}
	return titled(enumShort(n.GetStatus().GetState().String(), "NODE_STATE_"))
}
