package dispatcher

import (
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// Endpoint.health follows the task's reported health, and a change of it
// alone is a change the node is sent.
func TestEndpointHealthFollowsStatus(t *testing.T) {
	base := []raftstore.Object{mkNode("n1", "192.168.250.1:4243", ready), mkNet("a"), mkSvc("s1", "", map[string]string{"a": "10.1.0.2/24"}, "a")}
	var nt networkTracker
	var last shoalv1.TaskHealth = -1
	for i, h := range []shoalv1.TaskHealth{
		shoalv1.TaskHealth_TASK_HEALTH_STARTING, shoalv1.TaskHealth_TASK_HEALTH_HEALTHY,
		shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY, shoalv1.TaskHealth_TASK_HEALTH_NONE,
	} {
		task := mkNetTask("t1", "s1", "n1", stRunning, "a=10.1.0.3/24")
		task.Status.Health = h
		states := NodeNetworks(objs(append(base, task)...), "n1")
		if len(states) != 1 || len(states[0].GetEndpoints()) != 1 {
			t.Fatalf("states %v", states)
		}
		if got := states[0].GetEndpoints()[0].GetHealth(); got != h {
			t.Fatalf("endpoint health %s, want %s", got, h)
		}
		msgs := nt.diff(states, i == 0)
		if h != last && len(msgs) != 1 {
			t.Fatalf("health %s: %d messages, want the changed network", h, len(msgs))
		}
		last = h
	}
}
