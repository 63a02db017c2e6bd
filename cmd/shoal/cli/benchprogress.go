package cli

import (
	"context"
	"fmt"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// The benchmark counts committed progress from what the store says, as an
// operator would read it: ListTasks with state filters, one item a page,
// reading the response's total (the manager counts the matching tasks
// without sending them). It does not count from the simulated agents: the
// dispatcher no longer echoes an agent's own statuses back to it
// (manager/dispatcher/echoes.go), so what an agent believes about its
// tasks is its own reports, not what was committed. A watch of the tasks
// through the control API was tried first: at 5,000 nodes × 100,000 tasks
// its one stream carries ~300,000 events in seconds, falls its ring
// (16,384 events) behind and is cut, and reading the whole task list to
// resume it weighs on the leader it measures.

// Task filters of the counts.
var (
	pendingFilter = map[string]string{"state": "pending"}
	allFilter     = map[string]string{"desired-state": "running"}
	runningFilter = map[string]string{"state": "running", "desired-state": "running"}
)

// countTasks is the number of tasks matching filters (ListTasks' total).
func (r *benchRun) countTasks(ctx context.Context, filters map[string]string) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := r.cl.Control.ListTasks(cctx, &shoalv1.ListTasksRequest{Filters: filters, Page: &shoalv1.Page{PageSize: 1}})
	if err != nil {
		return 0, fmt.Errorf("counting the tasks (%v): %w", filters, err)
	}
	return int(resp.GetTotal()), nil
}

// assignedCount is the tasks placed (committed) out of those to run:
// every task desired RUNNING less the PENDING ones (the state index holds
// PENDING tasks, so that count costs the manager next to nothing).
func (r *benchRun) assignedCount(ctx context.Context) (int, error) {
	all, err := r.countTasks(ctx, allFilter)
	if err != nil {
		return 0, err
	}
	pending, err := r.countTasks(ctx, pendingFilter)
	if err != nil {
		return 0, err
	}
	return max(all-pending, 0), nil
}

// Bounds of the interval between two counts (see nextPoll).
const (
	minPoll = 100 * time.Millisecond
	maxPoll = time.Second
)

// nextPoll is the wait before the next count, given done of target tasks
// counted after elapsed: a quarter of the time the rest should take at the
// rate so far, within [minPoll, maxPoll]. A count walks the manager's task
// table (100,000 tasks: tens of milliseconds of the leader's CPU), so it
// is rare while the end is far and frequent near it, where it sets how
// late the measured time can be.
func nextPoll(done, target int, elapsed time.Duration) time.Duration {
	if done <= 0 || elapsed <= 0 {
		return maxPoll
	}
	rest := time.Duration(float64(elapsed) * float64(target-done) / float64(done))
	return min(max(rest/4, minPoll), maxPoll)
}
