package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/agent/health"
	"github.com/shoal-dev/shoal/agent/image"
	"github.com/shoal-dev/shoal/agent/runtime"
	"github.com/shoal-dev/shoal/errdefs"
	"github.com/shoal-dev/shoal/overlay/dns"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// taskCtl is one task's controller. Its run goroutine alone drives the
// task; update and remove only record what the managers want and wake it.
type taskCtl struct {
	e   *Executor
	id  string
	log *slog.Logger

	mu      sync.Mutex // guards task and removed
	task    *shoalv1.Task
	removed bool

	wake chan struct{} // cap 1
	done chan struct{} // closed when run returns

	// Owned by the run goroutine.
	status         *shoalv1.TaskStatus
	released       bool // container, rootfs and network released
	releaseBackoff time.Duration
	netNSPath      string // set when overlay networks were attached
}

func newTaskCtl(e *Executor, t *shoalv1.Task, st *shoalv1.TaskStatus) *taskCtl {
	id := t.GetMeta().GetId()
	return &taskCtl{e: e, id: id, log: e.log.With("task_id", id, "service_id", t.GetServiceId()),
		task: t, status: st, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// update records the managers' newest copy of the task and says whether
// it changed in a way the controller acts on. Most updates are a new
// session resending everything (the managers no longer echo this node's
// own status reports): those neither wake the controller nor cost a
// write.
func (c *taskCtl) update(t *shoalv1.Task) bool {
	c.mu.Lock()
	changed := actionable(c.task, t)
	c.task = t
	c.mu.Unlock()
	if changed {
		c.poke()
	}
	return changed
}

// actionable: the desired state or the spec changed, or the managers ended
// the task themselves (ORPHANED).
func actionable(old, cur *shoalv1.Task) bool {
	if old.GetDesiredState() != cur.GetDesiredState() || !proto.Equal(old.GetSpec(), cur.GetSpec()) {
		return true
	}
	ended := func(t *shoalv1.Task) bool { return t.GetStatus().GetState() >= shoalv1.TaskState_TASK_STATE_COMPLETE }
	return ended(cur) && !ended(old)
}

func (c *taskCtl) remove() {
	c.mu.Lock()
	c.removed = true
	c.mu.Unlock()
	c.poke()
}

func (c *taskCtl) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *taskCtl) current() *shoalv1.Task {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.task
}

func (c *taskCtl) snapshot() (*shoalv1.Task, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.task, c.removed
}

// wantsStop: the task was removed, its desired state is SHUTDOWN/REMOVE,
// or the managers already count it as ended (ORPHANED while this node was
// cut off: a replacement runs elsewhere).
func (c *taskCtl) wantsStop() bool {
	t, removed := c.snapshot()
	return removed || t.GetDesiredState() >= shoalv1.TaskState_TASK_STATE_SHUTDOWN ||
		t.GetStatus().GetState() >= shoalv1.TaskState_TASK_STATE_COMPLETE
}

func (c *taskCtl) report(st *shoalv1.TaskStatus) {
	if st.GetState() < c.status.GetState() {
		return // states never go backwards
	}
	if st.ImageDigest == "" {
		st.ImageDigest = c.status.GetImageDigest()
	}
	if len(st.Addresses) == 0 && st.GetState() <= shoalv1.TaskState_TASK_STATE_RUNNING {
		st.Addresses = c.status.GetAddresses()
	}
	c.status = st
	c.e.setStatus(c.id, proto.Clone(st).(*shoalv1.TaskStatus))
}

func (c *taskCtl) run(ctx context.Context) {
	defer close(c.done)
	for ctx.Err() == nil {
		t, removed := c.snapshot()
		state := c.status.GetState()
		switch {
		case state == shoalv1.TaskState_TASK_STATE_RUNNING || (state == shoalv1.TaskState_TASK_STATE_STARTING && c.exists(ctx)):
			// A live container, removal included, is stopped with its
			// stop signal and grace period.
			c.supervise(ctx)
		case removed:
			if !c.release(ctx) {
				c.retryRelease(ctx)
				continue
			}
			c.purge()
			c.e.forget(c.id)
			c.log.Debug("task removed")
			return
		case state >= shoalv1.TaskState_TASK_STATE_COMPLETE:
			if !c.release(ctx) {
				c.retryRelease(ctx)
				continue
			}
			c.idle(ctx)
		case c.wantsStop():
			c.release(ctx)
			c.report(&shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_SHUTDOWN, Message: "shut down before it started"})
		default:
			c.start(ctx, t)
		}
	}
}

// retryRelease waits before releasing again (a busy mount, a netlink
// hiccup): a task's resources are never forgotten while still held.
func (c *taskCtl) retryRelease(ctx context.Context) {
	c.releaseBackoff = min(max(2*c.releaseBackoff, 100*time.Millisecond), 30*time.Second)
	c.log.Warn("releasing the task's resources failed; retrying", "in", c.releaseBackoff)
	select {
	case <-time.After(c.releaseBackoff):
	case <-ctx.Done():
	}
}

// idle waits for a change from the managers.
func (c *taskCtl) idle(ctx context.Context) {
	select {
	case <-c.wake:
	case <-ctx.Done():
	}
}

// exists says whether the runtime knows the task (after a restart in
// STARTING, the container may or may not have been created).
func (c *taskCtl) exists(ctx context.Context) bool {
	_, err := c.e.cfg.Runtime.State(ctx, c.id)
	return err == nil
}

// start prepares and starts the container. A shutdown asked for meanwhile
// cancels a pull or a start that has not happened yet.
func (c *taskCtl) start(ctx context.Context, t *shoalv1.Task) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopWatch := make(chan struct{})
	defer close(stopWatch)
	go func() {
		for {
			select {
			case <-c.wake:
				if c.wantsStop() {
					cancel()
					c.poke() // let run see it too
					return
				}
			case <-stopWatch:
				return
			}
		}
	}()

	if c.status.GetState() < shoalv1.TaskState_TASK_STATE_ACCEPTED {
		c.report(&shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_ACCEPTED, Message: "accepted"})
	}
	// Whatever a previous attempt (before a restart) left is released so
	// that preparing starts clean; from here on the task holds resources.
	c.released = false
	c.release(ctx)
	c.released = false

	err := c.prepareAndStart(sctx, t)
	if err == nil {
		return
	}
	if ctx.Err() != nil {
		return // the agent is stopping; the next one carries on
	}
	c.release(ctx)
	if sctx.Err() != nil {
		c.report(&shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_SHUTDOWN, Message: "shut down before it started"})
		return
	}
	var rej rejectError
	if errors.As(err, &rej) {
		c.log.Warn("task rejected", "err", err)
		c.report(&shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_REJECTED, Message: "rejected", Err: err.Error()})
		return
	}
	c.log.Warn("task failed to start", "err", err)
	// The CLI's wait tells a failed start from a crash by this prefix
	// (cmd/shoal/cli/wait.go, startFailurePrefix).
	c.report(failedStatus("starting container: "+err.Error(), nil))
}

func (c *taskCtl) prepareAndStart(ctx context.Context, t *shoalv1.Task) error {
	e := c.e
	ref := t.GetSpec().GetContainer().GetImage()
	c.report(&shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_PREPARING, Message: "preparing"})
	img, err := e.pulls.do(ctx, ref, func() (image.Image, error) { return e.ensureImage(e.baseCtx(), ref) })
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	_, checked, err := e.healthCheck(t, img.Config.Healthcheck)
	if err != nil {
		return reject("image %s: %v", img.Digest, err)
	}
	p := e.paths(c.id)
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("task dir: %w", err)
	}
	if err := e.mountRootfs(p, img); err != nil {
		return fmt.Errorf("mounting the rootfs of image %s: %w", img.Digest, err)
	}
	var nsPath string
	var addrs []string
	hostNet := hostNetwork(t)
	if hostNet {
		if err := e.confirmHostNetwork(ctx, t); err != nil {
			return err
		}
	}
	if len(t.GetNetworks()) > 0 && e.cfg.Overlay == nil && !hostNet {
		// Running it without its networks would give a task that cannot
		// reach its peers and that no name points at.
		return reject("this node runs no overlay networks (its advertise address must be a non-loopback IPv4 address): the task's networks cannot be attached")
	}
	if e.cfg.Network != nil && !hostNet {
		att, err := e.cfg.Network.Setup(ctx, c.id)
		if err != nil {
			return fmt.Errorf("network: %w", err)
		}
		nsPath = att.NetNSPath
		for _, a := range att.Addresses {
			ip, _, _ := strings.Cut(a, "/")
			addrs = append(addrs, ip)
		}
		if atts := t.GetNetworks(); e.cfg.Overlay != nil && len(atts) > 0 {
			if iso, ok := e.cfg.Network.(portIsolator); ok {
				if err := iso.Isolate(c.id); err != nil {
					return fmt.Errorf("network: %w", err)
				}
			}
			if _, err := e.cfg.Overlay.Attach(ctx, nsPath, atts); err != nil {
				if errdefs.IsFailedPrecondition(err) {
					// The node cannot attach such a network at all (an
					// overlay network on a bridge-only node): a retry
					// here would fail the same way.
					return reject("%w", err)
				}
				return fmt.Errorf("attaching networks: %w", err)
			}
			c.netNSPath = nsPath
			if err := c.startDiscovery(ctx, t, p); err != nil {
				return err
			}
		}
	}
	spec, err := e.runtimeSpec(t, img, p, nsPath)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.report(&shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_STARTING, Message: "starting", ImageDigest: img.Digest, Addresses: addrs})
	select {
	case e.startSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	err = e.cfg.Runtime.Start(e.baseCtx(), spec, p.log)
	<-e.startSem
	if err != nil {
		return err
	}
	st, err := e.cfg.Runtime.State(ctx, c.id)
	if err != nil {
		return err
	}
	running := &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING, Message: "started", Pid: int32(st.Pid),
		ImageDigest: img.Digest, Addresses: addrs}
	if checked {
		// Never RUNNING without a health while a check exists: discovery
		// would answer it before its first probe.
		running.Health = shoalv1.TaskHealth_TASK_HEALTH_STARTING
	}
	c.report(running)
	c.log.Info("task running", "pid", st.Pid, "image", img.Digest)
	return nil
}

// supervise waits for the container to end or to be told to stop.
func (c *taskCtl) supervise(ctx context.Context) {
	rt := c.e.cfg.Runtime
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		st  runtime.State
		err error
	}
	exited := make(chan result, 1)
	go func() {
		st, err := rt.Wait(wctx, c.id)
		exited <- result{st, err}
	}()
	c.readoptNetworks(ctx)
	if c.status.GetState() < shoalv1.TaskState_TASK_STATE_RUNNING {
		// Re-adopted in STARTING: the container was started but RUNNING
		// was never recorded (crash in between). Say so now.
		if st, err := rt.State(ctx, c.id); err == nil && st.Status == runtime.StatusRunning {
			running := &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING, Message: "started", Pid: int32(st.Pid)}
			if _, checked, err := c.e.healthCheck(c.current(), c.e.imageHealthcheck(c.status.GetImageDigest())); err == nil && checked {
				// As at a start: never RUNNING without a health while a
				// check exists (startHealth below reports from here).
				running.Health = shoalv1.TaskHealth_TASK_HEALTH_STARTING
			}
			c.report(running)
		}
	}
	stopping := false
	stopFailed := make(chan struct{}, 1)
	wake := make(chan struct{}, 1)
	if c.wantsStop() {
		wake <- struct{}{} // told to stop before we got here
	}
	healthc := c.startHealth(wctx)
	var unhealthy *health.Status // set: stopping it for failing its check
	for {
		var r result
		select {
		case r = <-exited:
		case s := <-healthc:
			if stopping || unhealthy != nil {
				continue
			}
			c.reportHealth(s)
			if s.Health == shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY {
				c.log.Warn("task unhealthy; stopping it", "failing_streak", s.FailingStreak)
				unhealthy = &s
				select {
				case wake <- struct{}{}:
				default:
				}
			}
			continue
		case <-c.wake:
			select {
			case wake <- struct{}{}:
			default:
			}
			continue
		case <-stopFailed:
			stopping = false // try again
			select {
			case wake <- struct{}{}:
			default:
			}
			continue
		case <-wake:
			if stopping || !c.wantsStop() && unhealthy == nil {
				continue
			}
			stopping = true
			t, _ := c.snapshot()
			cs := t.GetSpec().GetContainer()
			sig, err := stopSignal(cs.GetStopSignal(), c.e.imageStopSignal(c.status.GetImageDigest()))
			if err != nil {
				c.log.Warn("bad stop signal; using SIGTERM", "err", err)
				sig, _ = stopSignal("", "")
			}
			grace := stopGrace(cs.GetStopGraceMs())
			drain := endpointDrain(t, grace)
			c.log.Debug("stopping task", "signal", sig, "grace", grace, "endpoint_drain", drain)
			go func() {
				if drain > 0 && !c.e.drain(wctx, t, drain, grace) {
					return // endpointdrain.go
				}
				// Stop sends the signal, waits out the grace period and
				// kills; Wait (above) then reports the exit.
				if err := rt.Stop(wctx, c.id, sig, grace); err != nil && wctx.Err() == nil {
					c.log.Warn("stopping task; will retry", "err", err)
					select {
					case <-time.After(time.Second):
					case <-wctx.Done():
						return
					}
					stopFailed <- struct{}{}
				}
			}()
			continue
		case <-ctx.Done():
			return // agent stopping: the container keeps running
		}
		if r.err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(r.err, runtime.ErrNotFound) {
				c.report(failedStatus("the container is gone (its state vanished while the agent was not watching)", nil))
				return
			}
			c.log.Warn("waiting for task", "err", r.err)
			c.report(failedStatus("lost track of the container: "+r.err.Error(), nil))
			return
		}
		if st := c.exitStatus(r.st, stopping); unhealthy != nil && !c.wantsStop() {
			c.report(unhealthyStatus(*unhealthy, st.GetExitCode()))
		} else {
			c.report(st)
		}
		return
	}
}

// exitStatus turns the runtime's final state into the task's.
func (c *taskCtl) exitStatus(st runtime.State, stopped bool) *shoalv1.TaskStatus {
	if st.Status == runtime.StatusFailed {
		msg := "the task's shim died unexpectedly"
		if st.Error != "" {
			msg += ": " + st.Error
		}
		return failedStatus(msg, nil)
	}
	ex := st.Exit
	if ex == nil {
		return failedStatus("the container ended without an exit status", nil)
	}
	if ex.Error != "" {
		return failedStatus("starting container: "+ex.Error, ex)
	}
	if stopped {
		return &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_SHUTDOWN, Message: "shut down", ExitCode: int32(ex.Code)}
	}
	if ex.OOMKilled {
		lim := c.current().GetSpec().GetResources().GetLimits().GetMemoryBytes()
		return failedStatus(fmt.Sprintf("OOM killed: the container used more than its memory limit (%d bytes)", lim), ex)
	}
	if ex.Code == 0 {
		return &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_COMPLETE, Message: "finished"}
	}
	if ex.Signal != 0 {
		return failedStatus(fmt.Sprintf("killed by signal %d (exit code %d)", ex.Signal, ex.Code), ex)
	}
	return failedStatus(fmt.Sprintf("exit code %d", ex.Code), ex)
}

func failedStatus(msg string, ex *runtime.ExitStatus) *shoalv1.TaskStatus {
	st := &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_FAILED, Message: "failed", Err: msg}
	if ex != nil {
		st.ExitCode = int32(ex.Code)
		st.OomKilled = ex.OOMKilled
	}
	return st
}

// release gives back what a task holds on the node while it runs: the
// container (killed if still there), its cgroups, the rootfs mount, the
// writable layer and the network namespace. The log stays until the task
// is removed. Idempotent.
func (c *taskCtl) release(ctx context.Context) bool {
	if c.released {
		return true
	}
	e := c.e
	rctx := context.WithoutCancel(ctx)
	ok := true
	if err := e.cfg.Runtime.Remove(rctx, c.id); err != nil {
		c.log.Warn("removing container", "err", err)
		ok = false
	}
	p := e.paths(c.id)
	if err := e.unmount(p.rootfs); err != nil {
		c.log.Warn("unmounting rootfs", "err", err)
		ok = false
	} else if err := os.RemoveAll(p.dir); err != nil {
		c.log.Warn("removing task dir", "err", err)
		ok = false
	}
	if e.cfg.Discovery != nil {
		if err := e.cfg.Discovery.Stop(c.id); err != nil {
			c.log.Warn("stopping the task's DNS server and VIPs", "err", err)
		}
	}
	if atts := c.current().GetNetworks(); e.cfg.Overlay != nil && c.netNSPath != "" && len(atts) > 0 {
		if err := e.cfg.Overlay.Detach(rctx, c.netNSPath, atts); err != nil {
			// The namespace's teardown removes the veths anyway.
			c.log.Warn("detaching overlay networks", "err", err)
		}
	}
	if e.cfg.Network != nil {
		if err := e.cfg.Network.Teardown(rctx, c.id); err != nil {
			c.log.Warn("removing network namespace", "err", err)
			ok = false
		}
	}
	c.released = ok
	if ok {
		c.releaseBackoff = 0
	}
	return ok
}

// purge deletes the task's logs (it is gone from the managers).
func (c *taskCtl) purge() {
	logp := c.e.paths(c.id).log
	matches, _ := filepath.Glob(logp + ".*")
	for _, p := range append(matches, logp) {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("removing log", "path", p, "err", err)
		}
	}
}

// baseCtx is the executor's context: work shared between tasks (a pull)
// or that must not be torn by one task's cancellation (a start) runs on it.
func (e *Executor) baseCtx() context.Context {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx == nil {
		return context.Background()
	}
	return e.ctx
}

// startDiscovery writes the task's resolv.conf (the embedded DNS server)
// into its task dir and starts its DNS server and VIPs in nsPath.
func (c *taskCtl) startDiscovery(ctx context.Context, t *shoalv1.Task, p taskPaths) error {
	e := c.e
	if e.cfg.Discovery == nil || c.netNSPath == "" {
		return nil
	}
	host := e.cfg.HostResolvConf
	if host == "" {
		host = resolvConfTarget
	}
	if err := dns.WriteResolvConf(p.resolvConf(), host); err != nil {
		return fmt.Errorf("service discovery: resolv.conf: %w", err)
	}
	if err := e.cfg.Discovery.Start(ctx, c.id, c.netNSPath, networkIDs(t)); err != nil {
		return fmt.Errorf("service discovery: %w", err)
	}
	return nil
}

// readoptNetworks gives a task re-adopted after an agent restart its
// overlay attachments (idempotent: the veths survive in the kernel), its
// DNS server and its VIPs again. A task this agent started has them.
func (c *taskCtl) readoptNetworks(ctx context.Context) {
	e := c.e
	t := c.current()
	if c.netNSPath != "" || e.cfg.Overlay == nil || len(t.GetNetworks()) == 0 || hostNetwork(t) {
		return
	}
	pather, ok := e.cfg.Network.(netNSPather)
	if !ok {
		return
	}
	nsPath := pather.NetNSPath(c.id)
	if _, err := os.Stat(nsPath); err != nil {
		c.log.Warn("re-adopted task: no network namespace", "err", err)
		return
	}
	if iso, ok := e.cfg.Network.(portIsolator); ok {
		if err := iso.Isolate(c.id); err != nil {
			c.log.Warn("re-adopted task: isolating its node-local port", "err", err)
		}
	}
	if _, err := e.cfg.Overlay.Attach(ctx, nsPath, t.GetNetworks()); err != nil {
		c.log.Warn("re-adopted task: overlay networks", "err", err)
	}
	c.netNSPath = nsPath
	if err := c.startDiscovery(ctx, t, e.paths(c.id)); err != nil {
		c.log.Warn("re-adopted task", "err", err)
	}
}
