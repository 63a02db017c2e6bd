package health

import (
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Result is one probe's outcome.
type Result struct {
	OK     bool
	Output string
}

// Status is a task's health as reported with its status.
type Status struct {
	Health        shoalv1.TaskHealth
	Output        string
	CheckedAt     time.Time
	FailingStreak int64
}

// Machine turns probe results into a task's health. It is pure (time is
// passed in) and owned by one goroutine.
type Machine struct {
	check   Check
	started time.Time // the container's start: the start period runs from it
	st      Status
}

// NewMachine starts from prev (the health last reported, for a task
// re-adopted by a restarted agent: a healthy task stays healthy rather
// than leaving discovery until its next probe), STARTING if none.
func NewMachine(c Check, started time.Time, prev Status) *Machine {
	if prev.Health == shoalv1.TaskHealth_TASK_HEALTH_NONE {
		prev = Status{Health: shoalv1.TaskHealth_TASK_HEALTH_STARTING}
	}
	return &Machine{check: c, started: started, st: prev}
}

// Status is the current health.
func (m *Machine) Status() Status { return m.st }

// inStartPeriod: failures now do not count.
func (m *Machine) inStartPeriod(now time.Time) bool {
	return m.st.Health == shoalv1.TaskHealth_TASK_HEALTH_STARTING && now.Before(m.started.Add(m.check.StartPeriod))
}

// Observe records a probe's result at now and says whether the health or
// the failing streak changed (news to report). A success makes the task
// HEALTHY and ends a streak; a failure within the start period while
// STARTING changes nothing; any other failure lengthens the streak, and
// Retries failures in a row make the task UNHEALTHY.
func (m *Machine) Observe(now time.Time, r Result) (Status, bool) {
	prev := m.st
	m.st.Output = Truncate(r.Output)
	m.st.CheckedAt = now
	switch {
	case r.OK:
		m.st.Health = shoalv1.TaskHealth_TASK_HEALTH_HEALTHY
		m.st.FailingStreak = 0
	case m.inStartPeriod(now):
	default:
		m.st.FailingStreak++
		if m.st.FailingStreak >= max(m.check.Retries, 1) {
			m.st.Health = shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY
		}
	}
	return m.st, m.st.Health != prev.Health || m.st.FailingStreak != prev.FailingStreak
}

// Next is the wait before the next probe: StartInterval at most while
// starting within the start period, else the interval.
func (m *Machine) Next(now time.Time) time.Duration {
	if m.inStartPeriod(now) {
		return min(m.check.Interval, StartInterval)
	}
	return m.check.Interval
}

// Unhealthy says whether the task is to be replaced.
func (m *Machine) Unhealthy() bool { return m.st.Health == shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY }
