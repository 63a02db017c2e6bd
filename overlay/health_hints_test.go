package overlay

import (
	"testing"

	"github.com/shoal-dev/shoal/overlay/dns"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A hint never makes peers answer a task whose health check has not
// passed: hints carry no health.
func TestHintStateHealth(t *testing.T) {
	running := shoalv1.TaskState_TASK_STATE_RUNNING
	for _, c := range []struct {
		st     *shoalv1.TaskStatus
		state  shoalv1.TaskState
		gossip bool
	}{
		{&shoalv1.TaskStatus{State: running}, running, true},
		{&shoalv1.TaskStatus{State: running, Health: shoalv1.TaskHealth_TASK_HEALTH_HEALTHY}, running, true},
		{&shoalv1.TaskStatus{State: running, Health: shoalv1.TaskHealth_TASK_HEALTH_STARTING}, 0, false},
		{&shoalv1.TaskStatus{State: running, Health: shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY}, shoalv1.TaskState_TASK_STATE_SHUTDOWN, true},
		{&shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_FAILED, Health: shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY}, shoalv1.TaskState_TASK_STATE_FAILED, true},
	} {
		state, gossip := HintState(c.st)
		if state != c.state || gossip != c.gossip {
			t.Errorf("%v: %s %v, want %s %v", c.st, state, gossip, c.state, c.gossip)
		}
	}
	// The leak this prevents: the managers' state still has the task
	// STARTING (health unknown) when a RUNNING hint arrives and marks it.
	st := []*shoalv1.NetworkState{{Network: &shoalv1.Network{Meta: &shoalv1.Meta{Id: "n1"}},
		Endpoints: []*shoalv1.Endpoint{{TaskId: "t1", State: shoalv1.TaskState_TASK_STATE_STARTING}}}}
	marked := markHints(st, map[hintKey]Hint{{"n1", "t1"}: {State: running}})
	if !dns.Serves(marked[0].GetEndpoints()[0]) {
		t.Fatal("a RUNNING mark serves an endpoint of unknown health: why hints for checked tasks must wait")
	}
}
