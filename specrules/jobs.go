package specrules

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Job defaults, filled in by the Control API.
const (
	// DefaultCompletions is job.completions when unset.
	DefaultCompletions = 1
	// MaxCompletions bounds one run of a replicated job (the cluster's
	// replica cap applies to services; a job's slots are tasks too).
	MaxCompletions = 1_000_000
	// MinEvery is the shortest "@every D" schedule.
	MinEvery = time.Second
)

// Concurrency policies of a cron job: what a firing does while the
// previous run is still going.
const (
	ConcurrencyAllow   = "allow"
	ConcurrencyForbid  = "forbid"
	ConcurrencyReplace = "replace"
)

// IsJob reports whether mode runs tasks to completion.
func IsJob(mode shoalv1.ServiceMode) bool {
	return mode == shoalv1.ServiceMode_SERVICE_MODE_REPLICATED_JOB || mode == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL_JOB
}

// Schedule is a parsed job.schedule: Next is the first firing strictly
// after t (in UTC).
type Schedule interface {
	Next(t time.Time) time.Time
}

// cronParser reads the five standard fields (minute hour day-of-month
// month day-of-week) and the descriptors (@yearly, @monthly, @weekly,
// @daily, @hourly, @every D). robfig/cron is the parser: its
// descriptors, ranges, steps and names are what crontab users expect, and
// its Next handles month lengths and leap years.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a job.schedule. Schedules are in UTC.
func ParseSchedule(expr string) (Schedule, error) {
	expr = strings.TrimSpace(expr)
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return nil, fmt.Errorf("time zones are not supported (schedules are in UTC)")
	}
	if d, ok := strings.CutPrefix(expr, "@every "); ok {
		every, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil {
			return nil, fmt.Errorf("@every: %v", err)
		}
		if every < MinEvery || every%time.Second != 0 {
			return nil, fmt.Errorf("@every: want a whole number of seconds, at least %s, got %s", MinEvery, every)
		}
		return utc{cron.Every(every)}, nil
	}
	s, err := cronParser.Parse(expr)
	if err != nil {
		return nil, err
	}
	return utc{s}, nil
}

// utc evaluates a schedule in UTC whatever the manager's local zone.
type utc struct{ s cron.Schedule }

func (u utc) Next(t time.Time) time.Time { return u.s.Next(t.UTC()) }

// jobRules checks the job part of a service spec: the mode's own fields,
// and that job fields appear only on job modes.
func jobRules(p *Problems, spec *shoalv1.ServiceSpec) {
	job := spec.GetJob()
	mode := spec.GetMode()
	if !IsJob(mode) {
		if job.GetSchedule() != "" {
			p.Add("spec.job.schedule", "a schedule needs mode replicated-job or global-job, not %s", modeName(mode))
		} else if job != nil {
			p.Add("spec.job", "only for modes replicated-job and global-job, not %s", modeName(mode))
		}
		return
	}
	if spec.GetReplicas() != 0 {
		p.Add("spec.replicas", "must be unset for a %s (use job.completions), got %d", modeName(mode), spec.GetReplicas())
	}
	if len(spec.GetEndpoint().GetPorts()) > 0 {
		p.Add("spec.endpoint.ports", "a %s runs to completion: it cannot publish ports", modeName(mode))
	}
	if mode == shoalv1.ServiceMode_SERVICE_MODE_GLOBAL_JOB {
		if job.GetCompletions() != 0 {
			p.Add("spec.job.completions", "a global-job runs once on every eligible node: completions must be unset, got %d", job.GetCompletions())
		}
		if job.GetMaxConcurrent() != 0 {
			p.Add("spec.job.max_concurrent", "a global-job runs once on every eligible node: max_concurrent must be unset, got %d", job.GetMaxConcurrent())
		}
	} else {
		completions := job.GetCompletions()
		switch {
		case completions < 0:
			p.Add("spec.job.completions", "must be >= 1 (0: the default, %d), got %d", DefaultCompletions, completions)
		case completions > MaxCompletions:
			p.Add("spec.job.completions", "must be at most %d, got %d", MaxCompletions, completions)
		case completions == 0:
			completions = DefaultCompletions
		}
		switch mc := job.GetMaxConcurrent(); {
		case mc < 0:
			p.Add("spec.job.max_concurrent", "must be >= 1 (0: as many as completions), got %d", mc)
		case completions > 0 && mc > completions:
			p.Add("spec.job.max_concurrent", "must be at most job.completions (%d), got %d", completions, mc)
		}
	}
	if s := job.GetSchedule(); s != "" {
		if len(s) > MaxConstraint {
			p.Add("spec.job.schedule", "%d bytes long, at most %d", len(s), MaxConstraint)
		} else if sched, err := ParseSchedule(s); err != nil {
			p.Add("spec.job.schedule", "%q is not a cron expression (5 fields, @hourly, @daily, @weekly, @monthly, @yearly or @every D): %v", s, err)
		} else if sched.Next(time.Now()).IsZero() {
			// robfig/cron gives up after five years and returns the zero time.
			p.Add("spec.job.schedule", "%q never fires (no such date in the next five years, e.g. 30 February)", s)
		}
	}
	switch cp := job.GetConcurrencyPolicy(); cp {
	case "", ConcurrencyAllow, ConcurrencyForbid, ConcurrencyReplace:
		if cp != "" && job.GetSchedule() == "" {
			p.Add("spec.job.concurrency_policy", "only for a job with a schedule")
		}
	default:
		p.Add("spec.job.concurrency_policy", "must be allow, forbid or replace, got %q", cp)
	}
}

// restartBackoff checks restart.max_delay_ms: a duration, and a cap no
// smaller than the delay it caps.
func restartBackoff(p *Problems, rf string, rp *shoalv1.RestartPolicy) {
	duration(p, rf+".max_delay_ms", rp.GetMaxDelayMs())
	if m := rp.GetMaxDelayMs(); m > 0 && m < rp.GetDelayMs() {
		p.Add(rf+".max_delay_ms", "must be 0 (no back-off) or at least delay_ms (%d), got %d", rp.GetDelayMs(), m)
	}
}

func modeName(m shoalv1.ServiceMode) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(m.String(), "SERVICE_MODE_")), "_", "-")
}
