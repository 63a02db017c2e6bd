package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/specrules"
)

// jobFlags are the job-mode and restart back-off flags of service
// create/update (part of specFlags). Update applies only those given.
type jobFlags struct {
	completions, maxConcurrent int64
	schedule, policy           string
	restartMaxDelay            time.Duration
}

func (j *jobFlags) bind(fs *pflag.FlagSet) {
	fs.Int64Var(&j.completions, "completions", 0, "replicated-job: tasks to run to completion (default 1)")
	fs.Int64Var(&j.maxConcurrent, "max-concurrent", 0, "replicated-job: tasks running at once (default: --completions)")
	fs.StringVar(&j.schedule, "schedule", "", `job modes: run on a cron schedule, in UTC ("*/5 * * * *", @hourly, @daily, @weekly, "@every 30s"); "" on update: run once`)
	fs.StringVar(&j.policy, "concurrency-policy", "", "cron jobs: a firing while the previous run goes: forbid (skip it, the default), allow (run both) or replace (stop the old run)")
	fs.DurationVar(&j.restartMaxDelay, "restart-max-delay", 0, "exponential back-off: the restart delay doubles with each consecutive restart up to this (0: no back-off)")
}

// jobMode reads the job modes of --mode (replicated and global are
// specFlags' own).
func jobMode(name string) (shoalv1.ServiceMode, bool) {
	switch name {
	case "replicated-job":
		return shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, true
	case "global-job":
		return shoalv1.ServiceMode_SERVICE_MODE_GLOBAL_JOB, true
	}
	return 0, false
}

// apply writes the job flags into spec, after the mode is known. Errors
// the API would give anyway (ranges, the cron syntax) are left to it, so
// there is one wording; flags that contradict the mode are caught here.
func (j *jobFlags) apply(fs *pflag.FlagSet, spec *shoalv1.ServiceSpec) error {
	set := fs.Changed
	job := specrules.IsJob(spec.GetMode())
	if job && set("replicas") {
		return fmt.Errorf("--replicas: a job runs --completions tasks to completion")
	}
	for _, name := range []string{"completions", "max-concurrent", "schedule", "concurrency-policy"} {
		if set(name) && !job {
			return fmt.Errorf("--%s: only for --mode replicated-job or global-job", name)
		}
	}
	if job && spec.Job == nil {
		spec.Job = &shoalv1.JobConfig{}
	}
	if set("completions") {
		spec.Job.Completions = j.completions
		if !set("max-concurrent") && spec.Job.MaxConcurrent > j.completions {
			spec.Job.MaxConcurrent = 0 // the default again: as many as completions
		}
	}
	if set("max-concurrent") {
		spec.Job.MaxConcurrent = j.maxConcurrent
	}
	if set("schedule") {
		spec.Job.Schedule = j.schedule
		if j.schedule == "" && !set("concurrency-policy") {
			spec.Job.ConcurrencyPolicy = ""
		}
	}
	if set("concurrency-policy") {
		spec.Job.ConcurrencyPolicy = j.policy
	}
	if set("restart-max-delay") {
		t := spec.Task
		if t.Restart == nil {
			t.Restart = &shoalv1.RestartPolicy{DelayMs: 5000}
			if job {
				t.Restart.Condition = shoalv1.RestartCondition_RESTART_CONDITION_ON_FAILURE
			}
		}
		t.Restart.MaxDelayMs = j.restartMaxDelay.Milliseconds()
	}
	return nil
}

// jobReplicas is the REPLICAS column of a job in `service ls`: completed
// tasks of the current run out of those wanted.
func jobReplicas(rc *shoalv1.ReplicaCount) string {
	return fmt.Sprintf("%d/%d (completed)", rc.GetRunning(), rc.GetDesired())
}

// jobSummary is the line `service ps` prints above a job's tasks: the
// current run's completions and, for a cron job, its next firing.
func jobSummary(svc *shoalv1.Service, tasks []*shoalv1.Task, now time.Time) string {
	js := svc.GetJobStatus()
	iter := js.GetIteration()
	done, total := 0, 0
	nodes := map[string]bool{}
	for _, t := range tasks {
		if t.GetServiceId() != svc.GetMeta().GetId() || iter == 0 || t.GetJobIteration() != iter {
			continue
		}
		nodes[t.GetNodeId()] = true
		if t.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_COMPLETE {
			done++
		}
	}
	if svc.GetSpec().GetMode() == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL_JOB {
		total = len(nodes)
	} else {
		total = int(max(svc.GetSpec().GetJob().GetCompletions(), specrules.DefaultCompletions))
	}
	line := fmt.Sprintf("%s: %d/%d completed", svc.GetSpec().GetName(), done, total)
	if iter > 0 {
		line += fmt.Sprintf(" (run %d", iter)
		if last := js.GetLastExecution(); last != nil {
			line += ", started " + ago(last, now)
		}
		line += ")"
	} else {
		line += " (not run yet)"
	}
	if next := js.GetNextExecution(); next != nil {
		line += fmt.Sprintf("; next run %s", next.AsTime().UTC().Format(time.RFC3339))
	}
	return line
}

// replicasColumn is `service ls`'s REPLICAS: running/desired, or for a
// job its completions ("3/5 (completed)").
func replicasColumn(svc *shoalv1.Service, rc *shoalv1.ReplicaCount) string {
	if specrules.IsJob(svc.GetSpec().GetMode()) {
		return jobReplicas(rc)
	}
	return fmt.Sprintf("%d/%d", rc.GetRunning(), rc.GetDesired())
}

// printJobSummary prints jobSummary above `service ps` of a job (not with
// -q or --format json, whose output stays a plain list). A service it
// cannot read gets no summary: the task list that follows reports the
// error its own way.
func (a *app) printJobSummary(cmd *cobra.Command, ref string, lf listFlags) error {
	if lf.quiet || lf.format == "json" {
		return nil
	}
	return a.withClient(cmd, func(ctx context.Context, ctl shoalv1.ControlClient) error {
		r, err := ctl.GetService(ctx, &shoalv1.GetServiceRequest{Ref: ref})
		svc := r.GetService()
		if err != nil || !specrules.IsJob(svc.GetSpec().GetMode()) {
			return nil // no summary (see above)
		}
		tr, err := client.ListTasks(ctx, ctl, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": svc.GetMeta().GetId()}})
		if err != nil {
			return err
		}
		fmt.Fprintln(a.out, jobSummary(svc, tr.GetTasks(), time.Now()))
		return nil
	})
}

// defaultTaskHistoryLimit is what task_history_limit 0 stands for (the
// orchestrator's HistoryLimit; the CLI does not import manager code).
const defaultTaskHistoryLimit = 5
