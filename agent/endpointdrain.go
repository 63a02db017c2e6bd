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
// period is taken. With an EndpointWithdrawal the drain also waits for
// every node's acknowledgement, up to half the grace period.
var EndpointDrain = time.Second

// endpointDrain is the least wait before signalling t: EndpointDrain, at most
// grace/2, only for a task on overlay networks that is meant to stop (not
// one the managers already count as ended: its endpoints are gone).
func endpointDrain(t *shoalv1.Task, grace time.Duration) time.Duration {
	if len(t.GetNetworks()) == 0 || t.GetDesiredState() < shoalv1.TaskState_TASK_STATE_SHUTDOWN ||
		t.GetStatus().GetState() >= shoalv1.TaskState_TASK_STATE_COMPLETE {
		return 0
	}
	return max(min(EndpointDrain, grace/2), 0)
}

// EndpointWithdrawal tells when every node that could send a task new
// connections (through its names, VIPs or published ports) has stopped
// doing so: the daemon counts the nodes' gossiped acknowledgements, each
// made once that node's refresh without the task has finished. A fixed
// drain alone is not enough: a node whose refresh takes longer (many
// task namespaces, a burst of changes) kept balancing new connections to
// a task already gone ("no route to host").
type EndpointWithdrawal interface {
	// WaitWithdrawn returns true once every such node has withdrawn t,
	// false if ctx ended first.
	WaitWithdrawn(ctx context.Context, t *shoalv1.Task) bool
}

// drain waits before signalling t: d (endpointDrain) and, with a
// Withdrawal, until every node has withdrawn t, for at most grace/2 in
// all (a node that never answers holds the stop that long); false if
// ctx ended first.
func (e *Executor) drain(ctx context.Context, t *shoalv1.Task, d, grace time.Duration) bool {
	w := e.cfg.Withdrawal
	if w == nil {
		return drainWait(ctx, d)
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, max(grace/2, d))
	withdrawn := w.WaitWithdrawn(wctx, t)
	cancel()
	if ctx.Err() != nil {
		return false
	}
	if !withdrawn {
		e.log.Warn("endpoint drain: signalling before every node withdrew the task", "task_id", t.GetMeta().GetId(),
			"waited", time.Since(start).Round(time.Millisecond))
	}
	if rest := d - time.Since(start); rest > 0 {
		return drainWait(ctx, rest)
	}
	return true
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
