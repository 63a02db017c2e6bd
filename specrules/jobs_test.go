package specrules

import (
	"strings"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestJobRules(t *testing.T) {
	rjob := func(job *shoalv1.JobConfig) func(*shoalv1.ServiceSpec) {
		return func(s *shoalv1.ServiceSpec) {
			s.Mode, s.Replicas, s.Job = shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB, 0, job
		}
	}
	gjob := func(job *shoalv1.JobConfig) func(*shoalv1.ServiceSpec) {
		return func(s *shoalv1.ServiceSpec) {
			s.Mode, s.Replicas, s.Job = shoalv1.ServiceMode_SERVICE_MODE_GLOBAL_JOB, 0, job
		}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*shoalv1.ServiceSpec)
		want   []string // substrings of the error; none = valid
	}{
		{"replicated-job, defaults", rjob(nil), nil},
		{"replicated-job 5 of 2 at a time", rjob(&shoalv1.JobConfig{Completions: 5, MaxConcurrent: 2}), nil},
		{"global-job", gjob(nil), nil},
		{"cron 5 fields", rjob(&shoalv1.JobConfig{Schedule: "*/5 * * * 1-5"}), nil},
		{"cron @daily, replace", rjob(&shoalv1.JobConfig{Schedule: "@daily", ConcurrencyPolicy: "replace"}), nil},
		{"cron @every 30s, allow", gjob(&shoalv1.JobConfig{Schedule: "@every 30s", ConcurrencyPolicy: "allow"}), nil},
		{"completions < 0", rjob(&shoalv1.JobConfig{Completions: -1}), []string{"spec.job.completions: must be >= 1"}},
		{"completions too many", rjob(&shoalv1.JobConfig{Completions: MaxCompletions + 1}), []string{"spec.job.completions: must be at most"}},
		{"max_concurrent < 0", rjob(&shoalv1.JobConfig{MaxConcurrent: -1}), []string{"spec.job.max_concurrent: must be >= 1"}},
		{"max_concurrent > completions", rjob(&shoalv1.JobConfig{Completions: 3, MaxConcurrent: 4}), []string{"spec.job.max_concurrent: must be at most job.completions (3), got 4"}},
		{"max_concurrent > default completions", rjob(&shoalv1.JobConfig{MaxConcurrent: 2}), []string{"spec.job.max_concurrent: must be at most job.completions (1)"}},
		{"invalid cron", rjob(&shoalv1.JobConfig{Schedule: "61 * * * *"}), []string{"spec.job.schedule: \"61 * * * *\" is not a cron expression"}},
		{"a date that never comes (30 February)", rjob(&shoalv1.JobConfig{Schedule: "0 0 30 2 *"}), []string{"spec.job.schedule: \"0 0 30 2 *\" never fires"}},
		{"29 February fires in leap years", rjob(&shoalv1.JobConfig{Schedule: "0 0 29 2 *"}), nil},
		{"6 fields", rjob(&shoalv1.JobConfig{Schedule: "0 * * * * *"}), []string{"spec.job.schedule"}},
		{"@every too short", rjob(&shoalv1.JobConfig{Schedule: "@every 500ms"}), []string{"spec.job.schedule", "at least 1s"}},
		{"time zone", rjob(&shoalv1.JobConfig{Schedule: "TZ=Europe/Paris 0 * * * *"}), []string{"spec.job.schedule", "UTC"}},
		{"unknown policy", rjob(&shoalv1.JobConfig{Schedule: "@hourly", ConcurrencyPolicy: "queue"}), []string{"spec.job.concurrency_policy: must be allow, forbid or replace, got \"queue\""}},
		{"policy without schedule", rjob(&shoalv1.JobConfig{ConcurrencyPolicy: "allow"}), []string{"spec.job.concurrency_policy: only for a job with a schedule"}},
		{"schedule on a replicated service", func(s *shoalv1.ServiceSpec) { s.Job = &shoalv1.JobConfig{Schedule: "@hourly"} },
			[]string{"spec.job.schedule: a schedule needs mode replicated-job or global-job, not replicated"}},
		{"job config on a global service", func(s *shoalv1.ServiceSpec) {
			s.Mode, s.Replicas, s.Job = shoalv1.ServiceMode_SERVICE_MODE_GLOBAL, 0, &shoalv1.JobConfig{Completions: 2}
		}, []string{"spec.job: only for modes replicated-job and global-job, not global"}},
		{"replicas on a job", func(s *shoalv1.ServiceSpec) { rjob(nil)(s); s.Replicas = 3 }, []string{"spec.replicas: must be unset for a replicated-job (use job.completions), got 3"}},
		{"ports on a job", func(s *shoalv1.ServiceSpec) {
			rjob(nil)(s)
			s.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: "n"}}
			s.Endpoint = &shoalv1.EndpointSpec{Ports: []*shoalv1.PortConfig{{TargetPort: 80, PublishedPort: 8080, Protocol: "tcp"}}}
		}, []string{"spec.endpoint.ports: a replicated-job runs to completion"}},
		{"completions on a global-job", gjob(&shoalv1.JobConfig{Completions: 2, MaxConcurrent: 1}),
			[]string{"spec.job.completions: a global-job runs once", "spec.job.max_concurrent: a global-job runs once"}},
		{"restart back-off cap below the delay", func(s *shoalv1.ServiceSpec) {
			s.Task.Restart = &shoalv1.RestartPolicy{DelayMs: 5000, MaxDelayMs: 1000}
		}, []string{"spec.task.restart.max_delay_ms: must be 0 (no back-off) or at least delay_ms (5000), got 1000"}},
		{"restart back-off cap negative", func(s *shoalv1.ServiceSpec) { s.Task.Restart = &shoalv1.RestartPolicy{MaxDelayMs: -1} },
			[]string{"spec.task.restart.max_delay_ms: must be >= 0"}},
		{"restart back-off", func(s *shoalv1.ServiceSpec) {
			s.Task.Restart = &shoalv1.RestartPolicy{DelayMs: 1000, MaxDelayMs: 60_000}
		}, nil},
	} {
		s := validService()
		tc.mutate(s)
		err := Service(s).Err()
		switch {
		case len(tc.want) == 0 && err != nil:
			t.Errorf("%s: unexpected error: %v", tc.name, err)
		case len(tc.want) > 0 && err == nil:
			t.Errorf("%s: accepted, want %q", tc.name, tc.want)
		case err != nil:
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: error %q does not contain %q", tc.name, err, w)
				}
			}
		}
	}
}

func TestParseScheduleNext(t *testing.T) {
	at := time.Date(2026, 3, 31, 23, 59, 30, 0, time.UTC)
	for _, tc := range []struct {
		expr string
		want time.Time
	}{
		{"@every 30s", at.Add(30 * time.Second)},
		{"* * * * *", time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)},
		{"@hourly", time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)},
		{"@daily", time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)},
		{"@weekly", time.Date(2026, 4, 5, 0, 0, 0, 0, time.UTC)}, // Sunday
		{"30 2 29 2 *", time.Date(2028, 2, 29, 2, 30, 0, 0, time.UTC)},
		{"0 9 * * mon-fri", time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)},
	} {
		s, err := ParseSchedule(tc.expr)
		if err != nil {
			t.Fatalf("%s: %v", tc.expr, err)
		}
		// Evaluated in UTC whatever the zone of the time given.
		if got := s.Next(at.In(time.FixedZone("X", 5*3600))); !got.Equal(tc.want) {
			t.Errorf("%s: Next = %s, want %s", tc.expr, got, tc.want)
		}
	}
}
