package agent

import (
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestOverlayAttachFailedPreconditionRejects: an Attach error classified
// FailedPrecondition (a bridge-only node asked for an overlay network)
// rejects the task with the overlay's reason, instead of failing it into
// restarts on a node that can never run it; the node network it set up
// is released.
func TestOverlayAttachFailedPreconditionRejects(t *testing.T) {
	ov := &fakeOverlay{attached: map[string]int{},
		fail: errdefs.FailedPreconditionf("network app (n1): this node runs no overlay networks")}
	env := newExecEnvOverlay(t, ov)
	task := running("t1")
	task.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "n1", Address: "10.77.0.2/24", Mac: "02:42:0a:4d:00:02"}}
	env.ex.Assign(true, []*shoalv1.Task{task}, nil)
	st := env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_REJECTED)
	if !strings.Contains(st.GetErr(), "network app (n1): this node runs no overlay networks") {
		t.Fatalf("rejected with %q", st.GetErr())
	}
	env.net.mu.Lock()
	up := env.net.up["t1"]
	env.net.mu.Unlock()
	if up {
		t.Fatal("the rejected task's node-local namespace was kept")
	}
}
