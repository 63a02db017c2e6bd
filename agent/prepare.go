package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"

	"github.com/shoal-dev/shoal/agent/image"
	"github.com/shoal-dev/shoal/agent/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/specrules"
)

// Images is what the executor needs of the node's image store
// (agent/image.Store).
type Images interface {
	Get(ref string) (image.Image, bool)
	Pull(ctx context.Context, ref string, opts image.PullOptions) (image.Image, error)
	LowerDirs(img image.Image) []string
	MarkUsed(ref string) error
}

// NetAttachment is a task's network namespace as the node network made it.
type NetAttachment struct {
	NetNSPath string
	Addresses []string
}

// Network gives each task a network namespace (agent/network.Manager
// behind an adapter). Setup and Teardown are idempotent.
type Network interface {
	Setup(ctx context.Context, taskID string) (NetAttachment, error)
	Teardown(ctx context.Context, taskID string) error
}

// Overlay attaches a task's namespace to its overlay networks
// (Task.networks; overlay.Node behind an adapter). Attach runs after
// Network.Setup, Detach before Network.Teardown; both are idempotent.
// An Attach error classified errdefs.FailedPrecondition (a network this
// node can never attach) rejects the task.
type Overlay interface {
	Attach(ctx context.Context, netNSPath string, atts []*shoalv1.NetworkAttachment) (OverlayAttachment, error)
	Detach(ctx context.Context, netNSPath string, atts []*shoalv1.NetworkAttachment) error
}

// Discovery serves names and VIPs to a task on overlay networks
// (overlay.Discovery behind an adapter): Start runs after Overlay.Attach
// (and again for a task re-adopted after an agent restart), Stop on
// release. Stop of an unknown task is a no-op.
type Discovery interface {
	Start(ctx context.Context, taskID, netNSPath string, networkIDs []string) error
	Stop(taskID string) error
}

// netNSPather is a Network that can say where a task's namespace is
// without touching it (agent/network.Manager): re-adopted tasks need it.
type netNSPather interface{ NetNSPath(taskID string) string }

// portIsolator is a Network that can cut a task's node-local port off
// from the other isolated ports (agent/network.Manager): a task on
// overlay networks is isolated, so that tasks of different overlay
// networks on one node cannot reach each other through the node bridge.
type portIsolator interface{ Isolate(taskID string) error }

// resolvConfTarget is where a task on an overlay network finds the
// embedded DNS server's resolv.conf.
const resolvConfTarget = "/etc/resolv.conf"

// resolvConfPath is the task's resolv.conf on the node (in its task dir).
func (p taskPaths) resolvConf() string { return filepath.Join(p.dir, "resolv.conf") }

// networkIDs are the ids of the task's attached networks.
func networkIDs(t *shoalv1.Task) []string {
	var ids []string
	for _, a := range t.GetNetworks() {
		if id := a.GetNetworkId(); id != "" {
			ids = append(ids, id)
		}
	}
	return ids
}

// mountsOwnResolvConf: the spec mounts something on /etc/resolv.conf
// (or on /etc itself), which then wins over the embedded DNS server's.
func mountsOwnResolvConf(c *shoalv1.ContainerSpec) bool {
	for _, m := range c.GetMounts() {
		switch filepath.Clean(m.GetTarget()) {
		case resolvConfTarget, "/etc":
			return true
		}
	}
	return false
}

// hostNetwork reports whether the task runs in the node's network
// namespace: it is attached to a "host" network, its only one (the
// managers refuse a host network beside others). Host networks are the
// only ones without a subnet, so their attachment alone has no address
// (manager/allocator): the agent needs no network state to tell.
func hostNetwork(t *shoalv1.Task) bool {
	atts := t.GetNetworks()
	return len(atts) == 1 && atts[0].GetAddress() == "" && atts[0].GetNetworkId() != ""
}

// driverChecker is an Overlay that can say which driver a network has,
// from the network states the node holds (the daemon's overlay adapter).
// The executor asks it before running a task in the node's namespace, so
// that an attachment missing its address by some fault never turns into
// host networking.
type driverChecker interface {
	NetworkDriver(ctx context.Context, networkID string) (string, error)
}

// confirmHostNetwork checks, where the node holds network states, that a
// task that looks like a host-network task (hostNetwork) is one.
func (e *Executor) confirmHostNetwork(ctx context.Context, t *shoalv1.Task) error {
	dc, ok := e.cfg.Overlay.(driverChecker)
	if !ok {
		return nil // no network states on this node: the allocator's word
	}
	id := t.GetNetworks()[0].GetNetworkId()
	d, err := dc.NetworkDriver(ctx, id)
	if err != nil {
		return fmt.Errorf("network %s: %w", id, err)
	}
	if d != specrules.DriverHost {
		return reject("network %s: the attachment has no address but the network's driver is %s, not host", id, d)
	}
	return nil
}

// hostResolvConf is the node's resolv.conf that host-network tasks get,
// or "" when the node has none.
func (e *Executor) hostResolvConf() string {
	src := e.cfg.HostResolvConf
	if src == "" {
		src = resolvConfTarget
	}
	if st, err := os.Stat(src); err != nil || !st.Mode().IsRegular() {
		return ""
	}
	return src
}

// OverlayAttachment is what Overlay.Attach did.
type OverlayAttachment struct {
	// NoEgress: a network is internal; the task's default route was
	// removed and must not be restored (the task has no egress).
	NoEgress bool
}

// rejectError marks a failure that means the task cannot run on this node
// at all (bad image, impossible limits): reported as REJECTED.
type rejectError struct{ err error }

func (e rejectError) Error() string { return e.err.Error() }
func (e rejectError) Unwrap() error { return e.err }

func reject(format string, a ...any) error { return rejectError{fmt.Errorf(format, a...)} }

// taskPaths are a task's files on the node.
type taskPaths struct {
	dir, rootfs, upper, work, log string
}

func (e *Executor) paths(id string) taskPaths {
	dir := filepath.Join(e.cfg.Dir, "tasks", id)
	return taskPaths{dir: dir, rootfs: filepath.Join(dir, "rootfs"), upper: filepath.Join(dir, "upper"),
		work: filepath.Join(dir, "work"), log: filepath.Join(e.cfg.Dir, "logs", id+".log")}
}

// LogPath is where task id's stdout and stderr are written (JSON lines,
// rotated to .1, .2; see agent/runtime). Empty for an unknown task.
func (e *Executor) LogPath(id string) string {
	e.mu.Lock()
	_, ok := e.ctls[id]
	e.mu.Unlock()
	if !ok {
		return ""
	}
	return e.paths(id).log
}

// ensureImage finds the task's image in the store or pulls it.
func (e *Executor) ensureImage(ctx context.Context, ref string) (image.Image, error) {
	if ref == "" {
		return image.Image{}, reject("task has no image")
	}
	if img, ok := e.cfg.Images.Get(ref); ok {
		_ = e.cfg.Images.MarkUsed(img.Digest)
		return img, nil
	}
	// A pinned reference (name:tag@sha256:...) names content: whatever
	// this node holds under that digest is the same image.
	if _, d, ok := strings.Cut(ref, "@"); ok {
		if img, ok := e.cfg.Images.Get(d); ok && img.Digest == d {
			_ = e.cfg.Images.MarkUsed(img.Digest)
			return img, nil
		}
	}
	pctx, cancel := context.WithTimeout(ctx, e.cfg.PullTimeout)
	defer cancel()
	img, err := e.cfg.Images.Pull(pctx, ref, e.cfg.Pull)
	if err != nil {
		if ctx.Err() != nil {
			return image.Image{}, ctx.Err()
		}
		if errors.Is(pctx.Err(), context.DeadlineExceeded) {
			return image.Image{}, reject("pulling image %q: no answer from the registry within %s", ref, e.cfg.PullTimeout)
		}
		// Every pull failure (unknown image, unreachable registry,
		// refused credentials, corrupt layer) means the task cannot run
		// here; the orchestrator decides whether to try again.
		return image.Image{}, rejectError{fmt.Errorf("image %q is not on this node and could not be pulled: %w", ref, err)}
	}
	return img, nil
}

// mountRootfs gives the task its own writable overlay on the image layers.
func (e *Executor) mountRootfs(p taskPaths, img image.Image) error {
	lower := e.cfg.Images.LowerDirs(img)
	if len(lower) == 0 {
		return reject("image %s has no layers", img.Digest)
	}
	if _, err := image.OverlayOptions(lower, p.upper, p.work); err != nil {
		return rejectError{err}
	}
	// A restarted agent may find it mounted already.
	if mounted(p.rootfs) {
		return nil
	}
	return e.mount(lower, p.upper, p.work, p.rootfs)
}

// mounted says whether dir is a mount point (its device differs from its
// parent's).
func mounted(dir string) bool {
	var st, pst syscall.Stat_t
	if syscall.Stat(dir, &st) != nil || syscall.Stat(filepath.Dir(dir), &pst) != nil {
		return false
	}
	return st.Dev != pst.Dev
}

// runtimeSpec turns the task's container spec and its image config into
// what the runtime runs, with docker's rules: the spec's command replaces
// the image entrypoint (and then the image cmd is dropped), the spec's
// args replace the image cmd; env is the image's, overridden by key, plus
// HOSTNAME. A spec that breaks a rule (specrules, the managers' rules plus
// this node's data dir) is rejected, never adjusted.
func (e *Executor) runtimeSpec(t *shoalv1.Task, img image.Image, p taskPaths, nsPath string) (runtime.Spec, error) {
	if err := e.checkSpec(t.GetSpec()); err != nil {
		return runtime.Spec{}, err
	}
	c := t.GetSpec().GetContainer()
	if c.GetStopSignal() == "" && img.Config.StopSignal != "" {
		if _, err := specrules.ParseSignal(img.Config.StopSignal); err != nil {
			return runtime.Spec{}, reject("image %s: its StopSignal: %v (set the service's --stop-signal)", img.Digest, err)
		}
	}
	var argv []string
	switch {
	case len(c.GetCommand()) > 0:
		argv = append(append(argv, c.GetCommand()...), c.GetArgs()...)
	case len(c.GetArgs()) > 0:
		argv = append(append(argv, img.Config.Entrypoint...), c.GetArgs()...)
	default:
		argv = append(append(argv, img.Config.Entrypoint...), img.Config.Cmd...)
	}
	if len(argv) == 0 {
		return runtime.Spec{}, reject("no command: the service gives none and image %s has no entrypoint or cmd", img.Digest)
	}
	hostname := firstNonEmpty(c.GetHostname(), shortID(t.GetMeta().GetId()))
	// HOSTNAME is the container's, as in docker, unless the spec sets it
	// (an image's value cannot know the container's name).
	env := mergeEnv(mergeEnv(img.Config.Env, []string{"HOSTNAME=" + hostname}), c.GetEnv())
	if err := checkExecutable(p.rootfs, argv[0], env); err != nil {
		return runtime.Spec{}, reject("%v", err)
	}
	spec := runtime.Spec{
		ID:             t.GetMeta().GetId(),
		Rootfs:         p.rootfs,
		Args:           argv,
		Env:            env,
		Cwd:            firstNonEmpty(c.GetWorkdir(), img.Config.WorkingDir, "/"),
		User:           firstNonEmpty(c.GetUser(), img.Config.User),
		Hostname:       hostname,
		ReadOnlyRootfs: c.GetReadOnly(),
		NetNSPath:      nsPath,
		CapAdd:         c.GetCapAdd(),
		CapDrop:        c.GetCapDrop(),
		Init:           c.GetInit(),
	}
	for i, m := range c.GetMounts() {
		switch m.GetType() {
		case "bind":
			spec.Mounts = append(spec.Mounts, runtime.Mount{Source: m.GetSource(), Destination: m.GetTarget(), ReadOnly: m.GetReadOnly()})
		case "tmpfs":
			spec.Mounts = append(spec.Mounts, runtime.Mount{Tmpfs: true, Destination: m.GetTarget(), ReadOnly: m.GetReadOnly()})
		default:
			return runtime.Spec{}, reject("mounts[%d].type: unknown mount type %q", i, m.GetType())
		}
	}
	if nsPath != "" && e.cfg.Overlay != nil && e.cfg.Discovery != nil && len(t.GetNetworks()) > 0 && !mountsOwnResolvConf(c) {
		spec.Mounts = append(spec.Mounts, runtime.Mount{Source: p.resolvConf(), Destination: resolvConfTarget, ReadOnly: true})
	}
	if hostNetwork(t) {
		spec.HostNetwork = true
		// The node's resolvers, as the node itself uses them: the task
		// shares its network namespace (no embedded DNS server there).
		if src := e.hostResolvConf(); src != "" && !mountsOwnResolvConf(c) {
			spec.Mounts = append(spec.Mounts, runtime.Mount{Source: src, Destination: resolvConfTarget, ReadOnly: true})
		}
	}
	res := t.GetSpec().GetResources()
	lim := res.GetLimits()
	spec.Resources = runtime.Resources{MemoryBytes: lim.GetMemoryBytes(), NanoCPUs: lim.GetNanoCpus(), PidsLimit: lim.GetPids()}
	if r := res.GetReservations().GetNanoCpus(); r > 0 {
		// A reservation weighs the task in CPU contention.
		spec.Resources.CPUShares = specrules.CPUShares(r)
	}
	if nodeMem := e.cfg.NodeMemory; nodeMem > 0 && lim.GetMemoryBytes() > nodeMem {
		return runtime.Spec{}, reject("memory limit %d bytes is more than this node has (%d bytes)", lim.GetMemoryBytes(), nodeMem)
	}
	if ic, ok := e.cfg.Runtime.(initChecker); ok && spec.Init {
		if err := ic.CheckInit(); err != nil {
			return runtime.Spec{}, reject("spec.task.container.init: %v", err)
		}
	}
	if err := spec.Validate(); err != nil {
		return runtime.Spec{}, rejectError{err}
	}
	return spec, nil
}

// initChecker is a runtime that can tell whether it has the init that
// --init asks for (runtime.Libcontainer): a node without it rejects such a
// task rather than failing it on every restart.
type initChecker interface{ CheckInit() error }

// checkSpec applies the managers' rules to the task's spec, and the ones
// only this node can judge: a bind source must stay clear of the node's
// data dir, also once symlinks are followed (in the source or in the data
// dir's own path).
func (e *Executor) checkSpec(ts *shoalv1.TaskSpec) error {
	dirs := e.nodeDataDirs()
	probs := specrules.Task("spec.task", ts, specrules.Node{DataDir: dirs[0]})
	if len(probs) == 0 {
		for i, m := range ts.GetContainer().GetMounts() {
			if m.GetType() != "bind" {
				continue
			}
			srcs := []string{m.GetSource()}
			if real, err := filepath.EvalSymlinks(m.GetSource()); err == nil && real != m.GetSource() {
				srcs = append(srcs, real)
			}
			for _, src := range srcs {
				for _, dir := range dirs {
					if err := specrules.BindSource(src, dir); err != nil {
						f := fmt.Sprintf("spec.task.container.mounts[%d].source", i)
						if src == m.GetSource() {
							probs.Add(f, "%v (%s)", err, dir)
						} else {
							probs.Add(f, "%q resolves to %v", m.GetSource(), err)
						}
						break
					}
				}
			}
		}
	}
	if len(probs) > 0 {
		return rejectError{fmt.Errorf("the task's spec breaks the rules: %w", probs)}
	}
	return nil
}

// nodeDataDirs is the directory a task may not reach through a bind mount,
// as configured (made absolute) and, if different, with symlinks resolved.
func (e *Executor) nodeDataDirs() []string {
	d := firstNonEmpty(e.cfg.NodeDataDir, e.cfg.Dir)
	if abs, err := filepath.Abs(d); err == nil {
		d = abs
	}
	dirs := []string{d}
	if real, err := filepath.EvalSymlinks(d); err == nil && real != d {
		dirs = append(dirs, real)
	}
	return dirs
}

// checkExecutable makes "image without the requested command" a clear
// rejection instead of an exec error deep in the container's init.
func checkExecutable(rootfs, cmd string, env []string) error {
	if strings.Contains(cmd, "/") {
		if !filepath.IsAbs(cmd) {
			return nil // relative to the workdir: let the runtime judge
		}
		if !executableIn(rootfs, cmd) {
			return fmt.Errorf("command %q not found in the image", cmd)
		}
		return nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir != "" && executableIn(rootfs, filepath.Join(dir, cmd)) {
			return nil
		}
	}
	return fmt.Errorf("command %q not found in the image's PATH (%s)", cmd, path)
}

// executableIn says whether p, resolved inside rootfs, is an executable
// regular file. Every symlink on the way, intermediate directories
// included, is resolved inside the rootfs as the container will see it
// (an absolute target is relative to the rootfs, ".." stops at its root):
// securejoin's OpenInRoot opens it without ever leaving the rootfs, so an
// image's /bin -> /usr/local/secret cannot make us look at the host's.
func executableIn(rootfs, p string) bool {
	f, err := pathrs.OpenInRoot(rootfs, p)
	if err != nil {
		return false
	}
	defer f.Close()
	var fi os.FileInfo
	if fi, err = f.Stat(); err != nil { // fstat works on the O_PATH handle
		return false
	}
	return fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

func mergeEnv(base, over []string) []string {
	out := make([]string, 0, len(base)+len(over))
	idx := map[string]int{}
	for _, list := range [][]string{base, over} {
		for _, kv := range list {
			k, _, _ := strings.Cut(kv, "=")
			if i, ok := idx[k]; ok {
				out[i] = kv
				continue
			}
			idx[k] = len(out)
			out = append(out, kv)
		}
	}
	return out
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// stopSignal is the signal that stops a task: the spec's, else the
// image's (nginx's SIGQUIT), else SIGTERM; names and numbers as specrules
// reads them for the managers ("SIGTERM", "TERM", "15", "RTMIN+3").
func stopSignal(spec, image string) (syscall.Signal, error) {
	s := firstNonEmpty(spec, image, specrules.DefaultStopSignal)
	n, err := specrules.ParseSignal(s)
	if err != nil {
		return 0, fmt.Errorf("stop signal: %w", err)
	}
	return syscall.Signal(n), nil
}

// imageStopSignal is the StopSignal of the image with this digest ("" if
// it has none or the image is not in the store any more).
func (e *Executor) imageStopSignal(digest string) string {
	if digest == "" {
		return ""
	}
	img, ok := e.cfg.Images.Get(digest)
	if !ok || img.Digest != digest {
		return ""
	}
	return img.Config.StopSignal
}

// stopGrace is the spec's grace period, specrules' default when unset.
func stopGrace(ms int64) time.Duration { return specrules.StopGrace(ms) }
