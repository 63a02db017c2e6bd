package orchestrator

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/specrules"
)

// JobRun is what PlanJobRun decides about a job's runs.
type JobRun struct {
	// Status is the job status to write; nil leaves it as it is.
	Status *shoalv1.JobStatus
	// Fired: a new run starts (Status carries its iteration).
	Fired bool
	// Skipped: a firing came while the previous run was still going, and
	// the forbid policy skipped it.
	Skipped bool
	// Wake > 0: look again then (the next firing).
	Wake time.Duration
}

// PlanJobRun decides, from the job status in raft, whether a job starts a
// run now. sched is the parsed job.schedule (nil: a one-off job); going
// says whether the current run is still going (jobProgress.going).
//
//   - A one-off job's first run starts at once (iteration 1). Later runs
//     come from `service update` (the Control API bumps the iteration).
//   - A cron job without next_execution (just created, or its schedule
//     changed) only computes it: nothing fires at creation.
//   - Once now reaches next_execution the firing is due: allow starts a
//     run beside the going one, replace starts one that stops it, forbid
//     skips the firing while the run is going. Either way next_execution
//     moves to the schedule's first time after now — not after the missed
//     one — so firings missed while no leader existed (or while this
//     manager was slow) make one firing, not one each.
//
// A schedule that never fires (the API refuses it) fires nothing.
//
// The new status is written in the same raft entry as the run's first
// tasks, so a leader that fails over either wrote both or neither: the
// next leader neither fires twice nor skips.
func PlanJobRun(svc *shoalv1.Service, sched specrules.Schedule, going bool, now time.Time) JobRun {
	js := svc.GetJobStatus()
	if sched == nil {
		if js.GetIteration() == 0 {
			return JobRun{Status: &shoalv1.JobStatus{Iteration: 1, LastExecution: timestamppb.New(now)}, Fired: true}
		}
		return JobRun{}
	}
	if sched.Next(now).IsZero() {
		// A schedule that never fires (30 February; the API refuses it):
		// its zero "next" time would be due at every pass.
		return JobRun{}
	}
	next := js.GetNextExecution()
	if next == nil {
		return JobRun{Status: &shoalv1.JobStatus{Iteration: js.GetIteration(), LastExecution: js.GetLastExecution(),
			NextExecution: timestamppb.New(sched.Next(now))}, Wake: sched.Next(now).Sub(now)}
	}
	if now.Before(next.AsTime()) {
		return JobRun{Wake: next.AsTime().Sub(now)}
	}
	after := sched.Next(now)
	run := JobRun{Wake: after.Sub(now)}
	if going && svc.GetSpec().GetJob().GetConcurrencyPolicy() != specrules.ConcurrencyAllow &&
		svc.GetSpec().GetJob().GetConcurrencyPolicy() != specrules.ConcurrencyReplace {
		run.Skipped = true
		run.Status = &shoalv1.JobStatus{Iteration: js.GetIteration(), LastExecution: js.GetLastExecution(), NextExecution: timestamppb.New(after)}
		return run
	}
	run.Fired = true
	run.Status = &shoalv1.JobStatus{Iteration: js.GetIteration() + 1, LastExecution: timestamppb.New(now), NextExecution: timestamppb.New(after)}
	return run
}
