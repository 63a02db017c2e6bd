package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestJobFlags(t *testing.T) {
	parse := func(update bool, spec *shoalv1.ServiceSpec, args ...string) (*shoalv1.ServiceSpec, error) {
		t.Helper()
		var f specFlags
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f.bind(fs, update)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return spec, f.apply(fs, spec)
	}
	created := func() *shoalv1.ServiceSpec { return &shoalv1.ServiceSpec{Name: "j", Replicas: 1} } // as create builds it
	for _, tc := range []struct {
		name   string
		update bool
		spec   *shoalv1.ServiceSpec
		args   []string
		want   *shoalv1.ServiceSpec // nil: an error containing err
		err    string
	}{
		{"replicated-job", false, created(), []string{"--mode", "replicated-job", "--completions", "5", "--max-concurrent", "2"},
			&shoalv1.ServiceSpec{Name: "j", Mode: shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, Job: &shoalv1.JobConfig{Completions: 5, MaxConcurrent: 2}}, ""},
		{"global-job", false, created(), []string{"--mode", "global-job"},
			&shoalv1.ServiceSpec{Name: "j", Mode: shoalv1.ServiceMode_SERVICE_MODE_GLOBAL_JOB, Job: &shoalv1.JobConfig{}}, ""},
		{"cron", false, created(), []string{"--mode", "replicated-job", "--schedule", "@every 5s", "--concurrency-policy", "replace"},
			&shoalv1.ServiceSpec{Name: "j", Mode: shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, Job: &shoalv1.JobConfig{Schedule: "@every 5s", ConcurrencyPolicy: "replace"}}, ""},
		{"restart back-off on a job: on-failure", false, created(), []string{"--mode", "replicated-job", "--restart-max-delay", "1m"},
			&shoalv1.ServiceSpec{Name: "j", Mode: shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, Job: &shoalv1.JobConfig{},
				Task: &shoalv1.TaskSpec{Restart: &shoalv1.RestartPolicy{Condition: shoalv1.RestartCondition_RESTART_CONDITION_ON_FAILURE, DelayMs: 5000, MaxDelayMs: 60000}}}, ""},
		{"update: fewer completions lowers max concurrent", true,
			&shoalv1.ServiceSpec{Name: "j", Mode: shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, Job: &shoalv1.JobConfig{Completions: 5, MaxConcurrent: 5}},
			[]string{"--completions", "2"},
			&shoalv1.ServiceSpec{Name: "j", Mode: shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, Job: &shoalv1.JobConfig{Completions: 2}}, ""},
		{"update: --schedule \"\" makes it one-off", true,
			&shoalv1.ServiceSpec{Name: "j", Mode: shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, Job: &shoalv1.JobConfig{Completions: 1, Schedule: "@daily", ConcurrencyPolicy: "forbid"}},
			[]string{"--schedule", ""},
			&shoalv1.ServiceSpec{Name: "j", Mode: shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, Job: &shoalv1.JobConfig{Completions: 1}}, ""},
		{"unknown mode", false, created(), []string{"--mode", "cron"}, nil, "--mode: want replicated, global, replicated-job or global-job"},
		{"replicas on a job", false, created(), []string{"--mode", "replicated-job", "--replicas", "3"}, nil, "--replicas: a job runs --completions"},
		{"schedule on a service", false, created(), []string{"--schedule", "@hourly"}, nil, "--schedule: only for --mode replicated-job or global-job"},
		{"completions on a service update", true, &shoalv1.ServiceSpec{Name: "j", Replicas: 2}, []string{"--completions", "2"}, nil, "--completions: only for"},
	} {
		got, err := parse(tc.update, tc.spec, tc.args...)
		if tc.want == nil {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		// Compare the job part and the restart policy (apply also fills an
		// empty task and container).
		if !proto.Equal(got.GetJob(), tc.want.GetJob()) || got.GetMode() != tc.want.GetMode() || got.GetReplicas() != tc.want.GetReplicas() ||
			!proto.Equal(got.GetTask().GetRestart(), tc.want.GetTask().GetRestart()) {
			t.Errorf("%s: spec\n got %v\nwant %v", tc.name, got, tc.want)
		}
	}
}

func TestJobDisplay(t *testing.T) {
	svc := &shoalv1.Service{Meta: &shoalv1.Meta{Id: "s1"}, Spec: &shoalv1.ServiceSpec{Name: "backup", Mode: shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB,
		Job: &shoalv1.JobConfig{Completions: 5, Schedule: "@hourly"}}}
	if got := replicasColumn(svc, &shoalv1.ReplicaCount{Running: 3, Desired: 5}); got != "3/5 (completed)" {
		t.Errorf("REPLICAS of a job: %q", got)
	}
	if got := replicasColumn(&shoalv1.Service{Spec: &shoalv1.ServiceSpec{}}, &shoalv1.ReplicaCount{Running: 2, Desired: 3}); got != "2/3" {
		t.Errorf("REPLICAS of a service: %q", got)
	}
	now := time.Date(2026, 1, 1, 10, 30, 0, 0, time.UTC)
	svc.JobStatus = &shoalv1.JobStatus{Iteration: 4, LastExecution: timestamppb.New(now.Add(-30 * time.Minute)), NextExecution: timestamppb.New(now.Add(30 * time.Minute))}
	task := func(run uint64, st shoalv1.TaskState) *shoalv1.Task {
		return &shoalv1.Task{ServiceId: "s1", JobIteration: run, Status: &shoalv1.TaskStatus{State: st}}
	}
	tasks := []*shoalv1.Task{task(4, shoalv1.TaskState_TASK_STATE_COMPLETE), task(4, shoalv1.TaskState_TASK_STATE_COMPLETE),
		task(4, shoalv1.TaskState_TASK_STATE_COMPLETE), task(4, shoalv1.TaskState_TASK_STATE_RUNNING), task(3, shoalv1.TaskState_TASK_STATE_COMPLETE)}
	got := jobSummary(svc, tasks, now)
	for _, want := range []string{"backup: 3/5 completed", "run 4", "next run 2026-01-01T11:00:00Z"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary %q lacks %q", got, want)
		}
	}
}

// The wait of a one-off job: done at its completions, and ended at once
// when a slot's restart policy gave up.
func TestJobWaitProgress(t *testing.T) {
	svc := &shoalv1.Service{SpecVersion: 1, Spec: &shoalv1.ServiceSpec{Name: "j", Mode: shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB,
		Job: &shoalv1.JobConfig{Completions: 2}, Task: &shoalv1.TaskSpec{Restart: &shoalv1.RestartPolicy{Condition: shoalv1.RestartCondition_RESTART_CONDITION_NONE}}}}
	mk := func(id string, slot uint64, st shoalv1.TaskState) *shoalv1.Task {
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, Slot: slot, JobIteration: 1, SpecVersion: 1, DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING,
			Status: &shoalv1.TaskStatus{State: st, Timestamp: timestamppb.Now()}}
	}
	tasks := map[string]*shoalv1.Task{"a": mk("a", 1, shoalv1.TaskState_TASK_STATE_COMPLETE), "b": mk("b", 2, shoalv1.TaskState_TASK_STATE_RUNNING)}
	if done, want, st, _ := jobProgress(svc, 1, tasks, time.Now()); done != 1 || want != 2 || st != nil {
		t.Errorf("running: %d/%d stuck %v", done, want, st)
	}
	tasks["b"] = mk("b", 2, shoalv1.TaskState_TASK_STATE_COMPLETE)
	if done, want, _, _ := jobProgress(svc, 1, tasks, time.Now()); done != 2 || want != 2 {
		t.Errorf("complete: %d/%d", done, want)
	}
	tasks["b"] = mk("b", 2, shoalv1.TaskState_TASK_STATE_FAILED)
	if _, _, st, why := jobProgress(svc, 1, tasks, time.Now()); st == nil || !strings.Contains(why, "restart condition none") {
		t.Errorf("failed with condition none: stuck %v (%q)", st, why)
	}
}

// The wait of a global job counts the nodes the orchestrator runs it on:
// a node drained (or no longer eligible) mid-run, whose task was stopped
// and not replaced, is not waited for (the orchestrator does not count
// it either), so the wait ends once the other nodes completed.
func TestGlobalJobWaitSkipsWithdrawnNodes(t *testing.T) {
	svc := &shoalv1.Service{SpecVersion: 1, Spec: &shoalv1.ServiceSpec{Name: "g", Mode: shoalv1.ServiceMode_SERVICE_MODE_GLOBAL_JOB,
		Task: &shoalv1.TaskSpec{Restart: &shoalv1.RestartPolicy{Condition: shoalv1.RestartCondition_RESTART_CONDITION_ON_FAILURE}}}}
	mk := func(id, node string, desired, st shoalv1.TaskState) *shoalv1.Task {
		return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, NodeId: node, JobIteration: 1, SpecVersion: 1, DesiredState: desired,
			Status: &shoalv1.TaskStatus{State: st, Timestamp: timestamppb.Now()}}
	}
	run, shut := shoalv1.TaskState_TASK_STATE_RUNNING, shoalv1.TaskState_TASK_STATE_SHUTDOWN
	tasks := map[string]*shoalv1.Task{
		"a": mk("a", "n1", run, shoalv1.TaskState_TASK_STATE_COMPLETE),
		"b": mk("b", "n2", shut, shut), // n2 drained mid-run
	}
	if done, want, st, _ := jobProgress(svc, 1, tasks, time.Now()); done != 1 || want != 1 || st != nil {
		t.Errorf("n2 drained: %d/%d stuck %v; want 1/1 (n2 no longer runs the job)", done, want, st)
	}
	// n2 back: the orchestrator gives it a new task of the run.
	tasks["c"] = mk("c", "n2", run, run)
	if done, want, _, _ := jobProgress(svc, 1, tasks, time.Now()); done != 1 || want != 2 {
		t.Errorf("n2 back: %d/%d, want 1/2", done, want)
	}
}
