package dispatcher

import (
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestTaskLeavesItsNetworksReview: a running task whose attachments are
// all dropped by a whole update (networks list emptied) stops being an
// endpoint: every other agent must lose it, though the new version is
// on no network.
func TestTaskLeavesItsNetworksReview(t *testing.T) {
	nodes := []string{"n1", "n2"}
	r := newWebRig(t, nodes, mkNetTask("w1", "web", "n1", stRunning, "a=10.1.0.3/24"), mkNetTask("w2", "web", "n2", stRunning, "a=10.1.0.4/24"))
	taskWrite(t, r.s, "w1", func(x *shoalv1.Task) { x.Networks = nil })
	r.converge(t, "w1 off its networks")
}
