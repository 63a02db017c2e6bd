package orchestrator

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/specrules"
)

func jobStatus(iter uint64, last, next time.Time) svcOpt {
	return func(s *shoalv1.Service) {
		s.JobStatus = &shoalv1.JobStatus{Iteration: iter}
		if !last.IsZero() {
			s.JobStatus.LastExecution = timestamppb.New(last)
		}
		if !next.IsZero() {
			s.JobStatus.NextExecution = timestamppb.New(next)
		}
	}
}

func TestPlanJobRun(t *testing.T) {
	hourly, err := specrules.ParseSchedule("@hourly")
	if err != nil {
		t.Fatal(err)
	}
	// t0 is 03:04:05: the next hour is 04:00.
	nextHour := time.Date(2026, 1, 2, 4, 0, 0, 0, time.UTC)
	prevHour := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	cron := func(policy string, opts ...svcOpt) *shoalv1.Service {
		return mkService("j", 0, append([]svcOpt{job(1, 0), schedule("@hourly", policy)}, opts...)...)
	}
	never, err := specrules.ParseSchedule("0 0 30 2 *") // refused by the API; an older one may have stored it
	if err != nil {
		t.Fatal(err)
	}
	var zero time.Time
	for _, tc := range []struct {
		name  string
		svc   *shoalv1.Service
		sched specrules.Schedule
		going bool
		// want: fired, skipped, the status's iteration / last / next (zero:
		// unset); noStatus: nothing to write.
		fired, skipped bool
		noStatus       bool
		iter           uint64
		last, next     time.Time
		wake           time.Duration
	}{
		{name: "one-off: the first run starts", svc: mkService("j", 0, job(1, 0)), fired: true, iter: 1, last: t0},
		{name: "one-off: once only", svc: mkService("j", 0, job(1, 0), iteration(1)), noStatus: true},
		{name: "cron just created: next computed, nothing fires", svc: cron(""), sched: hourly, iter: 0, next: nextHour, wake: nextHour.Sub(t0)},
		{name: "cron before its time: wait", svc: cron("", jobStatus(3, prevHour.Add(-time.Hour), prevHour.Add(time.Hour))), sched: hourly,
			noStatus: true, wake: prevHour.Add(time.Hour).Sub(t0)},
		{name: "due: fires", svc: cron("", jobStatus(3, zero, prevHour)), sched: hourly, fired: true, iter: 4, last: t0, next: nextHour, wake: nextHour.Sub(t0)},
		{name: "due, run going, forbid (default): skipped, next moves on", svc: cron("", jobStatus(3, prevHour.Add(-time.Hour), prevHour)), sched: hourly, going: true,
			skipped: true, iter: 3, last: prevHour.Add(-time.Hour), next: nextHour, wake: nextHour.Sub(t0)},
		{name: "due, run going, forbid named", svc: cron("forbid", jobStatus(3, zero, prevHour)), sched: hourly, going: true,
			skipped: true, iter: 3, next: nextHour, wake: nextHour.Sub(t0)},
		{name: "due, run going, allow: fires", svc: cron("allow", jobStatus(3, zero, prevHour)), sched: hourly, going: true,
			fired: true, iter: 4, last: t0, next: nextHour, wake: nextHour.Sub(t0)},
		{name: "due, run going, replace: fires", svc: cron("replace", jobStatus(3, zero, prevHour)), sched: hourly, going: true,
			fired: true, iter: 4, last: t0, next: nextHour, wake: nextHour.Sub(t0)},
		{name: "five firings missed while leaderless: one run, next after now", svc: cron("", jobStatus(3, zero, prevHour.Add(-5*time.Hour))), sched: hourly,
			fired: true, iter: 4, last: t0, next: nextHour, wake: nextHour.Sub(t0)},
		{name: "a schedule that never fires: no next, nothing fires", svc: cron("replace"), sched: never, noStatus: true},
		{name: "a schedule that never fires, with a next stored: nothing fires", svc: cron("replace", jobStatus(3, zero, prevHour)), sched: never, noStatus: true},
	} {
		run := PlanJobRun(tc.svc, tc.sched, tc.going, t0)
		if run.Fired != tc.fired || run.Skipped != tc.skipped || run.Wake != tc.wake {
			t.Errorf("%s: fired %v skipped %v wake %s; want %v %v %s", tc.name, run.Fired, run.Skipped, run.Wake, tc.fired, tc.skipped, tc.wake)
		}
		if tc.noStatus {
			if run.Status != nil {
				t.Errorf("%s: writes %v, want nothing", tc.name, run.Status)
			}
			continue
		}
		want := &shoalv1.JobStatus{Iteration: tc.iter}
		if !tc.last.IsZero() {
			want.LastExecution = timestamppb.New(tc.last)
		}
		if !tc.next.IsZero() {
			want.NextExecution = timestamppb.New(tc.next)
		}
		if !proto.Equal(run.Status, want) {
			t.Errorf("%s: status %v, want %v", tc.name, run.Status, want)
		}
	}
}

// A firing's status and its tasks land in one entry; a new leader reading
// the store after it neither fires again nor loses the run, and one that
// reads the store from before it fires exactly once.
func TestCronFailoverContinuesFromTheStore(t *testing.T) {
	every, err := specrules.ParseSchedule("@every 30s")
	if err != nil {
		t.Fatal(err)
	}
	svc := mkService("j", 0, job(3, 2), schedule("@every 30s", ""), jobStatus(1, ago(time.Minute), ago(time.Second)))
	var prior []*shoalv1.Task
	for i, id := range []string{"old1", "old2", "old3"} {
		prior = append(prior, mkTask(id, "j", uint64(i+1), inRun(1), ended(tsComplete, ago(40*time.Second))))
	}

	// Leader A fires at t0 and writes the status with the run's tasks.
	_, prog := reconcileReplicatedJob(svc, prior, t0, nil)
	run := PlanJobRun(svc, every, prog.going(), t0)
	if !run.Fired {
		t.Fatalf("leader A: no firing: %+v", run)
	}
	fired := proto.Clone(svc).(*shoalv1.Service)
	fired.JobStatus = run.Status
	pa, _ := reconcileReplicatedJob(fired, prior, t0, nil)
	if got := describe(pa); got != "+1@1 +2@1" {
		t.Fatalf("leader A's run: %q", got)
	}
	stored := applyPlan(prior, pa, t0)

	// Leader B takes over a second later from that store: the run goes on
	// (no new firing: next_execution is ahead) and nothing is duplicated.
	later := t0.Add(time.Second)
	_, prog = reconcileReplicatedJob(fired, stored, later, nil)
	if run := PlanJobRun(fired, every, prog.going(), later); run.Fired || run.Status != nil {
		t.Fatalf("leader B fires again: %+v", run)
	}
	if pb, _ := reconcileReplicatedJob(fired, stored, later, nil); !pb.Empty() {
		t.Fatalf("leader B changes the run: %q", describe(pb))
	}
	// Two tasks complete: the third slot is started, once.
	var after []*shoalv1.Task
	for _, tk := range stored {
		if tk.GetJobIteration() == 2 {
			tk = cloneTask(tk)
			tk.Status = &shoalv1.TaskStatus{State: tsComplete, Timestamp: timestamppb.New(later)}
		}
		after = append(after, tk)
	}
	if pb, _ := reconcileReplicatedJob(fired, after, later, nil); describe(pb) != "+3@1" {
		t.Fatalf("leader B after two completions: %q, want +3@1", describe(pb))
	}

	// Leader C read the store from before A's entry (A's entry was lost
	// with it): it fires once, itself.
	_, prog = reconcileReplicatedJob(svc, prior, later, nil)
	if run := PlanJobRun(svc, every, prog.going(), later); !run.Fired || run.Status.GetIteration() != 2 {
		t.Fatalf("leader C: %+v, want one firing of run 2", run)
	}
}
