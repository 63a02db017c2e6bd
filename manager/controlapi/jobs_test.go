package controlapi

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func jobSpec(name string, job *shoalv1.JobConfig) *shoalv1.ServiceSpec {
	return &shoalv1.ServiceSpec{Name: name, Mode: shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, Job: job,
		Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest"}}}
}

// A job gets its defaults (one completion, max_concurrent = completions,
// restart on-failure, forbid for a cron job); an update of a one-off job
// starts a new run, a cron job's keeps its run and recomputes its next
// firing only when the schedule changed; the status survives updates.
func TestJobDefaultsAndUpdates(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	resp, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: jobSpec("once", &shoalv1.JobConfig{Completions: 3})})
	if err != nil {
		t.Fatal(err)
	}
	spec := resp.GetService().GetSpec()
	if spec.GetJob().GetMaxConcurrent() != 3 || spec.GetTask().GetRestart().GetCondition() != shoalv1.RestartCondition_RESTART_CONDITION_ON_FAILURE {
		t.Fatalf("defaults: %v", spec)
	}
	id := resp.GetService().GetMeta().GetId()
	// The orchestrator starts run 1.
	if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
		svc, _ := raftstore.Get[*shoalv1.Service](tx, id)
		svc = proto.Clone(svc).(*shoalv1.Service)
		svc.JobStatus = &shoalv1.JobStatus{Iteration: 1, LastExecution: timestamppb.Now()}
		return tx.Update(svc)
	}); err != nil {
		t.Fatal(err)
	}
	up, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, IgnoreVersion: true, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if got := up.GetService().GetJobStatus().GetIteration(); got != 2 {
		t.Fatalf("after an update of a one-off job: iteration %d, want 2", got)
	}

	cron, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: jobSpec("cron", &shoalv1.JobConfig{Schedule: "@hourly"})})
	if err != nil {
		t.Fatal(err)
	}
	cspec := cron.GetService().GetSpec()
	if cspec.GetJob().GetConcurrencyPolicy() != "forbid" {
		t.Fatalf("cron default policy: %q", cspec.GetJob().GetConcurrencyPolicy())
	}
	cid := cron.GetService().GetMeta().GetId()
	next := timestamppb.New(timestamppb.Now().AsTime().Add(3600e9))
	if _, err := st.Update(ctx, func(tx raftstore.WriteTx) error {
		svc, _ := raftstore.Get[*shoalv1.Service](tx, cid)
		svc = proto.Clone(svc).(*shoalv1.Service)
		svc.JobStatus = &shoalv1.JobStatus{Iteration: 4, NextExecution: next}
		return tx.Update(svc)
	}); err != nil {
		t.Fatal(err)
	}
	cspec.Labels = map[string]string{"a": "b"}
	up, err = s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: cid, IgnoreVersion: true, Spec: cspec})
	if err != nil {
		t.Fatal(err)
	}
	if js := up.GetService().GetJobStatus(); js.GetIteration() != 4 || !proto.Equal(js.GetNextExecution(), next) {
		t.Fatalf("cron job after an update keeping its schedule: %v", js)
	}
	cspec.Job.Schedule = "@daily"
	up, err = s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: cid, IgnoreVersion: true, Spec: cspec})
	if err != nil {
		t.Fatal(err)
	}
	if js := up.GetService().GetJobStatus(); js.GetIteration() != 4 || js.GetNextExecution() != nil {
		t.Fatalf("cron job after a schedule change: %v (want next_execution cleared for the orchestrator)", js)
	}

	// Bad job specs are refused with the field path.
	_, err = s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: jobSpec("bad", &shoalv1.JobConfig{Schedule: "every day"})})
	wantCode(t, err, codes.InvalidArgument, "spec.job.schedule")
}

func TestTaskHistoryLimitSetting(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	version := func() uint64 {
		c, _ := raftstore.ClusterOf(st.View())
		return c.GetMeta().GetVersion()
	}
	for _, v := range []int64{-1, MaxTaskHistoryLimit + 1} {
		_, err := s.UpdateCluster(ctx, &shoalv1.UpdateClusterRequest{Version: version(), Settings: &shoalv1.ClusterSettings{TaskHistoryLimit: v}})
		wantCode(t, err, codes.InvalidArgument, "settings.task_history_limit")
	}
	resp, err := s.UpdateCluster(ctx, &shoalv1.UpdateClusterRequest{Version: version(), Settings: &shoalv1.ClusterSettings{TaskHistoryLimit: 2}})
	if err != nil || resp.GetCluster().GetSettings().GetTaskHistoryLimit() != 2 {
		t.Fatalf("update: %v, %v", resp, err)
	}
}

// A job has no rollout (the orchestrator's job rules run its tasks, and
// nothing would ever move an update status on): a task change of a job
// starts no update status, and `service rollback` of a one-off job goes
// back to the previous spec as a new run, as an update would, with no
// rollback status either.
func TestJobUpdateAndRollbackStartNoRollout(t *testing.T) {
	s, _ := newServer(t)
	ctx := context.Background()
	resp, err := s.CreateService(ctx, &shoalv1.CreateServiceRequest{Spec: jobSpec("once", &shoalv1.JobConfig{Completions: 2})})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetService().GetMeta().GetId()
	spec := proto.Clone(resp.GetService().GetSpec()).(*shoalv1.ServiceSpec)
	spec.Task.Container.Image = "demo:2"
	up, err := s.UpdateService(ctx, &shoalv1.UpdateServiceRequest{ServiceId: id, IgnoreVersion: true, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if up.GetService().GetUpdateStatus() != nil || up.GetService().GetSpecVersion() != 2 {
		t.Fatalf("a job's update: spec_version %d, update status %v (want none: nothing would ever complete it)",
			up.GetService().GetSpecVersion(), up.GetService().GetUpdateStatus())
	}
	iter := up.GetService().GetJobStatus().GetIteration()
	rb, err := s.RollbackService(ctx, &shoalv1.RollbackServiceRequest{ServiceId: id})
	if err != nil {
		t.Fatal(err)
	}
	got := rb.GetService()
	if got.GetSpec().GetTask().GetContainer().GetImage() != "demo:latest" || got.GetUpdateStatus() != nil ||
		got.GetJobStatus().GetIteration() != iter+1 || got.GetSpecVersion() != 3 {
		t.Fatalf("a job's rollback: image %q, update status %v, iteration %d (want %d: a new run), spec_version %d",
			got.GetSpec().GetTask().GetContainer().GetImage(), got.GetUpdateStatus(), got.GetJobStatus().GetIteration(), iter+1, got.GetSpecVersion())
	}
}
