package health

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Prober runs one probe. It must return once ctx ends (the probe's
// deadline), leaving nothing running.
type Prober interface {
	Probe(ctx context.Context) Result
}

// ProbeFunc adapts a function to Prober.
type ProbeFunc func(ctx context.Context) Result

// Probe implements Prober.
func (f ProbeFunc) Probe(ctx context.Context) Result { return f(ctx) }

// Clock is what Run needs of time; tests pass a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// RealClock is the wall clock.
var RealClock Clock = realClock{}

// Run probes until the task is unhealthy (it returns nil after handing
// over the UNHEALTHY status) or ctx ends (ctx.Err()). news is called, on
// Run's goroutine, with each status that is news.
func Run(ctx context.Context, m *Machine, p Prober, clk Clock, news func(Status)) error {
	for {
		select {
		case <-clk.After(m.Next(clk.Now())):
		case <-ctx.Done():
			return ctx.Err()
		}
		r := probeOnce(ctx, p, m.check.Timeout)
		if ctx.Err() != nil {
			return ctx.Err() // the task is stopping: its probe's failure is no news
		}
		if st, changed := m.Observe(clk.Now(), r); changed {
			news(st)
		}
		if m.Unhealthy() {
			return nil
		}
	}
}

// probeOnce runs p with its deadline; a probe cut short by it fails with
// a message saying so.
func probeOnce(ctx context.Context, p Prober, timeout time.Duration) Result {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r := p.Probe(pctx)
	if errors.Is(pctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		out := fmt.Sprintf("health check timed out after %s", timeout)
		if r.Output != "" {
			out += ": " + r.Output
		}
		return Result{OK: false, Output: out}
	}
	return r
}
