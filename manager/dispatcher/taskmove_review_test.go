package dispatcher

import (
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestOwnTaskBackAfterAVersionNotSentReview: a session compares its own
// task's event with the version it last saw, not merely the one it last
// sent its agent. A task on an overlay network that leaves its node (a
// whole update moving it to another node, or to none) and comes back
// unchanged otherwise, or that drops back to PENDING on its node (not
// sent: not assigned) and is RUNNING again, changed the node's network
// state twice; compared with the copy sent before it left, the return
// looked like no change and the node kept the state of the task away.
func TestOwnTaskBackAfterAVersionNotSentReview(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	r := newWebRig(t, nodes, mkNetTask("w1", "web", "n1", stRunning, "a=10.1.0.3/24"), mkNetTask("w2", "web", "n2", stRunning, "a=10.1.0.4/24"))
	taskWrite(t, r.s, "w1", func(x *shoalv1.Task) { x.NodeId = "n3" })
	r.converge(t, "w1 moved to n3")
	taskWrite(t, r.s, "w1", func(x *shoalv1.Task) { x.NodeId = "n1" })
	r.converge(t, "w1 back on n1")

	taskWrite(t, r.s, "w1", func(x *shoalv1.Task) { x.NodeId = "" })
	r.converge(t, "w1 on no node")
	taskWrite(t, r.s, "w1", func(x *shoalv1.Task) { x.NodeId = "n1" })
	r.converge(t, "w1 on n1 again")

	taskWrite(t, r.s, "w1", func(x *shoalv1.Task) { x.Status = &shoalv1.TaskStatus{State: stPending} })
	r.converge(t, "w1 PENDING on n1")
	taskWrite(t, r.s, "w1", func(x *shoalv1.Task) { x.Status = &shoalv1.TaskStatus{State: stRunning} })
	r.converge(t, "w1 RUNNING on n1 again")
}
