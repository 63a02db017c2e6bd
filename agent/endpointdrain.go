package agent

import (
	"context"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// EndpointDrain is how long a task on overlay networks keeps running
// after it was asked to stop, before it is signalled: the managers deliver
// a stopping task's endpoints as SHUTDOWN at once, so every host's DNS
// and VIPs stop sending it new connections, but that news travels to the
// other hosts while this node gets the stop; signalled at once, the task
// would close its listener under connections still being balanced to it
// (a rolling update's "connection refused"). At most half the stop grace
// period is taken.
var EndpointDrain = time.Second

// endpointDrain is the wait before signalling t: EndpointDrain, at most
// grace/2, only for a task on overlay networks that is meant to stop (not
// one the managers already count as ended: its endpoints are gone).
func endpointDrain(t *shoalv1.Task, grace time.Duration) time.Duration {
	if len(t.GetNetworks()) == 0 || t.GetDesiredState() < shoalv1.TaskState_TASK_STATE_SHUTDOWN ||
		t.GetStatus().GetState() >= shoalv1.TaskState_TASK_STATE_COMPLETE {
		return 0
	}
	return max(min(EndpointDrain, grace/2), 0)
}

// drainWait waits d (a hook, so tests can hold a stop between the drain
// and the signal); false if ctx ended first.
var drainWait = func(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
