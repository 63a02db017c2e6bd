package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/agent/health"
	"github.com/shoal-dev/shoal/agent/image"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// healthCheck is the check task t runs on an image whose HEALTHCHECK is
// img (nil: none): the service's HealthCheck over the image's (see
// health.Resolve). ok is false when there is none. An error is a check
// that cannot run here: the task is rejected rather than run unchecked.
func (e *Executor) healthCheck(t *shoalv1.Task, img *image.Healthcheck) (health.Check, bool, error) {
	var ic *health.ImageCheck
	if img != nil {
		ic = &health.ImageCheck{Test: img.Test, Interval: img.Interval, Timeout: img.Timeout, StartPeriod: img.StartPeriod, Retries: img.Retries}
	}
	c, ok, err := health.Resolve(t.GetSpec().GetContainer().GetHealthcheck(), ic)
	if err != nil || !ok {
		return c, ok, err
	}
	if _, canExec := e.cfg.Runtime.(health.Execer); c.Kind == health.KindExec && !canExec {
		return c, false, fmt.Errorf("healthcheck: this node's runtime cannot run exec checks")
	}
	return c, true, nil
}

// imageHealthcheck is the HEALTHCHECK of the image with this digest (nil
// if it has none or the image is not in the store any more).
func (e *Executor) imageHealthcheck(digest string) *image.Healthcheck {
	if digest == "" {
		return nil
	}
	img, ok := e.cfg.Images.Get(digest)
	if !ok || img.Digest != digest {
		return nil
	}
	return img.Config.Healthcheck
}

// startHealth starts the task's health check, if it has one, for as long
// as ctx lasts (supervise's). Each news arrives on the returned channel
// (nil without a check), for supervise's loop to report: one goroutine
// owns the task's status.
func (c *taskCtl) startHealth(ctx context.Context) <-chan health.Status {
	check, ok, err := c.e.healthCheck(c.current(), c.e.imageHealthcheck(c.status.GetImageDigest()))
	if err != nil {
		// Checked before the start; an image gone since cannot be checked.
		c.log.Warn("the task's health check cannot run", "err", err)
		return nil
	}
	if !ok {
		return nil
	}
	st, err := c.e.cfg.Runtime.State(ctx, c.id)
	if err != nil || st.Pid <= 0 {
		c.log.Warn("no container process to check", "err", err)
		return nil
	}
	ex, _ := c.e.cfg.Runtime.(health.Execer)
	// The container's init holds the task's network namespace, whichever
	// way it got it (the node network's or a private one).
	p, err := health.ProberFor(check, c.id, fmt.Sprintf("/proc/%d/ns/net", st.Pid), ex)
	if err != nil {
		c.log.Warn("the task's health check cannot run", "err", err)
		return nil
	}
	started := st.StartedAt
	if started.IsZero() {
		started = time.Now()
	}
	prev := health.Status{Health: c.status.GetHealth(), Output: c.status.GetHealthOutput(),
		CheckedAt: c.status.GetHealthCheckedAt().AsTime(), FailingStreak: c.status.GetHealthFailingStreak()}
	m := health.NewMachine(check, started, prev)
	initial := m.Status() // m is Run's from here on
	ch := make(chan health.Status)
	go func() {
		_ = health.Run(ctx, m, p, health.RealClock, func(s health.Status) {
			select {
			case ch <- s:
			case <-ctx.Done():
			}
		})
	}()
	c.log.Debug("health check started", "kind", check.Kind, "interval", check.Interval)
	if initial.Health != c.status.GetHealth() {
		c.reportHealth(initial) // STARTING
	}
	return ch
}

// reportHealth reports the task's health with its RUNNING status.
func (c *taskCtl) reportHealth(s health.Status) {
	st := proto.Clone(c.status).(*shoalv1.TaskStatus)
	setHealth(st, s)
	c.report(st)
}

func setHealth(st *shoalv1.TaskStatus, s health.Status) {
	st.Health = s.Health
	st.HealthOutput = s.Output
	st.HealthFailingStreak = s.FailingStreak
	if !s.CheckedAt.IsZero() {
		st.HealthCheckedAt = timestamppb.New(s.CheckedAt)
	} else {
		st.HealthCheckedAt = nil
	}
}

// unhealthyStatus is the end of a task stopped for failing its check:
// FAILED (the restart policy replaces it) with the last probe's output,
// its first line clipped, in the error.
func unhealthyStatus(s health.Status, exitCode int32) *shoalv1.TaskStatus {
	out, _, _ := strings.Cut(s.Output, "\n")
	if len(out) > 200 {
		out = strings.ToValidUTF8(out[:200], "") + "..."
	}
	st := failedStatus("unhealthy: "+out, nil)
	st.ExitCode = exitCode
	setHealth(st, s)
	return st
}
