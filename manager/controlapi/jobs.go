package controlapi

import (
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/specrules"
)

// MaxTaskHistoryLimit bounds the cluster setting task_history_limit: ended
// tasks are kept per slot, so the store holds up to this many times the
// replicas.
const MaxTaskHistoryLimit = 100

// jobDefaults fills a job's defaults, in spec itself: one completion, as
// many at once as completions (taskDefaults gives a job restart on-failure:
// a job's COMPLETE task is never restarted; a FAILED one is retried).
func jobDefaults(spec *shoalv1.ServiceSpec) {
	if !specrules.IsJob(spec.GetMode()) {
		return
	}
	if spec.Job == nil {
		spec.Job = &shoalv1.JobConfig{}
	}
	if spec.GetMode() == shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB {
		if spec.Job.Completions == 0 {
			spec.Job.Completions = specrules.DefaultCompletions
		}
		if spec.Job.MaxConcurrent == 0 {
			spec.Job.MaxConcurrent = spec.Job.Completions
		}
	}
	if spec.Job.Schedule != "" && spec.Job.ConcurrencyPolicy == "" {
		spec.Job.ConcurrencyPolicy = specrules.ConcurrencyForbid
	}
	// A job's restart policy defaults to on-failure: taskDefaults.
}

// jobStatusAfterUpdate is a job's status once its spec is replaced: an
// update of a one-off job starts a new run (the orchestrator stops the old
// run's tasks and starts the new one's); a cron job's new spec applies
// from its next firing, which is computed again (from now) when the
// schedule changed. Not a job: nil.
func jobStatusAfterUpdate(cur *shoalv1.Service, spec *shoalv1.ServiceSpec, now time.Time) *shoalv1.JobStatus {
	if !specrules.IsJob(spec.GetMode()) {
		return nil
	}
	js := &shoalv1.JobStatus{}
	if c := cur.GetJobStatus(); c != nil {
		js = proto.Clone(c).(*shoalv1.JobStatus)
	}
	switch {
	case spec.GetJob().GetSchedule() == "":
		js.Iteration++
		js.LastExecution = timestamppb.New(now)
		js.NextExecution = nil
	case spec.GetJob().GetSchedule() != cur.GetSpec().GetJob().GetSchedule():
		js.NextExecution = nil
	}
	return js
}

// jobReplicaCount is a job's REPLICAS: the completed tasks of its current
// run out of the completions wanted (replicated-job) or of the run's tasks
// (global-job: one per node that got one).
func jobReplicaCount(r raftstore.Reader, svc *shoalv1.Service) *shoalv1.ReplicaCount {
	rc := &shoalv1.ReplicaCount{}
	iter := svc.GetJobStatus().GetIteration()
	nodes := map[string]bool{}
	for _, t := range raftstore.Find[*shoalv1.Task](r, raftstore.IndexServiceID, svc.GetMeta().GetId()) {
		if iter == 0 || t.GetJobIteration() != iter {
			continue
		}
		nodes[t.GetNodeId()] = true
		if t.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_COMPLETE {
			rc.Running++
		}
	}
	if svc.GetSpec().GetMode() == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL_JOB {
		rc.Desired = int64(len(nodes))
	} else {
		rc.Desired = max(svc.GetSpec().GetJob().GetCompletions(), specrules.DefaultCompletions)
	}
	return rc
}
