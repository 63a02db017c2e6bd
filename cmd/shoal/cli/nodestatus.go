package cli

import shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"

// nodeStatus is the STATUS column of `node ls`: the node's state, or
// "Restarting" for a node that said it is restarting and whose tasks are
// kept until its restart deadline.
func nodeStatus(n *shoalv1.Node) string {
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
