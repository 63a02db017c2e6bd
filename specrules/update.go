package specrules

import (
	"math"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// MaxUpdateWait bounds update.delay_ms and monitor_ms: a day is already
// more than any rollout should wait between two slots.
const MaxUpdateWait = 24 * 60 * 60 * 1000

// updateConfig checks an update (or rollback) config: field is
// "spec.update" or "spec.rollback". Zero values are the defaults
// (parallelism 0 is "all at once", monitor 0 is 5 s).
func updateConfig(p *Problems, field string, u *shoalv1.UpdateConfig) {
	if u == nil {
		return
	}
	if n := u.GetParallelism(); n < 0 {
		p.Add(field+".parallelism", "must be >= 0 (0: all at once), got %d", n)
	}
	for _, w := range []struct {
		name string
		v    int64
	}{{"delay_ms", u.GetDelayMs()}, {"monitor_ms", u.GetMonitorMs()}} {
		switch {
		case w.v < 0:
			p.Add(field+"."+w.name, "must be >= 0, got %d", w.v)
		case w.v > MaxUpdateWait:
			p.Add(field+"."+w.name, "must be at most %d (24 h), got %d", int64(MaxUpdateWait), w.v)
		}
	}
	if r := u.GetMaxFailureRatio(); math.IsNaN(r) || r < 0 || r > 1 {
		p.Add(field+".max_failure_ratio", "must be between 0 and 1, got %v", r)
	}
	rollback := field == "spec.rollback"
	switch a := u.GetFailureAction(); a {
	case "", "pause", "continue":
	case "rollback":
		if rollback {
			p.Add(field+".failure_action", "a rollback that fails cannot roll back: pause or continue")
		}
	default:
		if rollback {
			p.Add(field+".failure_action", "must be pause or continue, got %q", a)
		} else {
			p.Add(field+".failure_action", "must be pause, continue or rollback, got %q", a)
		}
	}
	switch o := u.GetOrder(); o {
	case "", "stop-first", "start-first":
	default:
		p.Add(field+".order", "must be stop-first or start-first, got %q", o)
	}
}
