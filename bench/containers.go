package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"

	shoalnet "github.com/shoal-dev/shoal/agent/network"
	"github.com/shoal-dev/shoal/agent/runtime/hostclean"
	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// The containers benchmark runs `shoal dev` (one process: manager + agent,
// real containers) inside a network namespace of its own, so that the
// node bridge and task addresses exist only there, and measures through
// the control API:
//   - service create --replicas 1 → its task RUNNING (n times),
//   - service create --replicas 100 → all 100 RUNNING on the one agent,
//   - the node process' RSS idle and with 100 tasks, and what the 100
//     per-task shims add (PSS: shared binary pages are counted once).

// containersNS is the benchmark's network namespace, named after its pid
// so that two benchmarks on one machine never share or delete each other's.
var containersNS = fmt.Sprintf("shoal-bench-ctr-%d", os.Getpid())

func benchContainers(ctx context.Context, e *env, n, big int) ([]*sampleSet, error) {
	dn, err := startDev(ctx, e, "ctr", nil)
	if err != nil {
		return nil, err
	}
	defer dn.stop(ctx)
	cl, pid, dir := dn.cl, dn.pid, dn.dir
	// Settle, then the idle footprint.
	time.Sleep(2 * time.Second)
	idleRSS := rssKB(pid)

	one := &sampleSet{Name: "create→running", What: "`service create --replicas 1` of the demo image → its task RUNNING (watch), shoal dev in a netns, container with netns + veth on the node bridge"}
	for i := range n {
		d, id, err := createAndWait(ctx, cl, fmt.Sprintf("one%d", i), 1)
		if err != nil {
			return []*sampleSet{one}, err
		}
		one.Samples = append(one.Samples, d)
		if err := removeAndWait(ctx, cl, id); err != nil {
			return []*sampleSet{one}, err
		}
	}

	many := &sampleSet{Name: fmt.Sprintf("%d replicas", big), What: fmt.Sprintf("`service create --replicas %d` → all %d RUNNING on the one agent", big, big)}
	d, manyID, err := createAndWait(ctx, cl, "many", big)
	if err != nil {
		return []*sampleSet{one, many}, err
	}
	many.Samples = append(many.Samples, d)
	time.Sleep(2 * time.Second)
	busyRSS := rssKB(pid)
	shims, shimPSS := shimsPSS(filepath.Join(dir, "runtime"))
	many.Notes = append(many.Notes,
		fmt.Sprintf("shoal dev process (manager + agent) RSS: idle %.1f MiB, with %d tasks %.1f MiB", float64(idleRSS)/1024, big, float64(busyRSS)/1024),
		fmt.Sprintf("%d shims: %.1f MiB PSS in all (%.2f MiB each)", shims, float64(shimPSS)/1024, float64(shimPSS)/1024/float64(max(shims, 1))))
	start := time.Now()
	if err := removeAndWait(ctx, cl, manyID); err != nil {
		return []*sampleSet{one, many}, err
	}
	many.Notes = append(many.Notes, fmt.Sprintf("`service rm` of the %d → every task gone from the store (containers stopped, cleaned): %v", big, time.Since(start).Round(time.Millisecond)))
	return []*sampleSet{one, many}, nil
}

// devNode is a `shoal dev` process in a network namespace of the
// benchmark's, with its own data dir and cgroup parent.
type devNode struct {
	e        *env
	ns       *benchNetns
	p        *proc
	cl       *client.Client
	pid      int
	dir      string // data dir
	cgParent string
	logPath  string
}

// startDev starts `shoal dev` (data dir <tmp>/<name>) with extra
// environment variables and waits until its node is READY.
func startDev(ctx context.Context, e *env, name string, extraEnv []string) (_ *devNode, err error) {
	demo, err := demoImage(ctx, e)
	if err != nil {
		return nil, err
	}
	ns, err := newBenchNetns(ctx)
	if err != nil {
		return nil, err
	}
	d := &devNode{e: e, ns: ns, dir: filepath.Join(e.dir, name),
		cgParent: fmt.Sprintf("/shoal-bench-%d", os.Getpid()), logPath: filepath.Join(e.dir, name+"-dev.log")}
	defer func() {
		if err != nil {
			d.stop(ctx)
		}
	}()
	args := append([]string{"dev", "--data-dir", d.dir, "--cgroup-parent", d.cgParent, "--load-image", demo}, e.logArgs()...)
	d.p, err = e.sup.startEnv("dev", d.logPath, nil, extraEnv, "nsenter", append([]string{"--net=" + ns.path, "--", e.shoalBin}, args...)...)
	if err != nil {
		return nil, err
	}
	d.pid = d.p.cmd.Process.Pid
	if err := waitFor(ctx, 30*time.Second, func() error {
		c, err := client.Dial(ctx, client.Config{DataDir: d.dir, Hosts: []string{"127.0.0.1:4242"},
			DialOptions: []grpc.DialOption{grpc.WithContextDialer(ns.dial)}})
		d.cl = c
		return err // no credentials until init wrote them
	}); err != nil {
		return nil, fmt.Errorf("shoal dev: %w (log %s: %s)", err, d.logPath, tail(d.logPath, 20))
	}
	if err := waitFor(ctx, 30*time.Second, func() error {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		r, err := client.ListNodes(cctx, d.cl.Control, &shoalv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		if len(r.GetNodes()) != 1 || r.GetNodes()[0].GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_READY {
			return fmt.Errorf("node not ready yet")
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("shoal dev did not come up: %w (log %s: %s)", err, d.logPath, tail(d.logPath, 20))
	}
	return d, nil
}

// stop kills the node, then any container it left, its mounts and
// cgroups, and removes the namespace.
func (d *devNode) stop(ctx context.Context) {
	if d.cl != nil {
		d.cl.Close()
	}
	_ = d.e.sup.kill(d.p)
	cctx := context.WithoutCancel(ctx)
	if err := hostclean.KillCgroups(cctx, d.cgParent); err != nil {
		d.e.logf("shoal dev: %v", err)
	}
	if err := hostclean.UnmountUnder(d.dir); err != nil {
		d.e.logf("shoal dev: %v", err)
	}
	if err := hostclean.RemoveCgroups(cctx, d.cgParent); err != nil {
		d.e.logf("shoal dev: %v", err)
	}
	d.ns.remove()
}

// createAndWait creates a service and returns how long until replicas of
// its tasks are RUNNING, as seen on the watch stream.
func createAndWait(ctx context.Context, cl *client.Client, name string, replicas int) (time.Duration, string, error) {
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	stream, err := cl.Control.Watch(wctx, &shoalv1.WatchRequest{Kinds: []string{"task"}})
	if err != nil {
		return 0, "", err
	}
	start := time.Now()
	resp, err := cl.Control.CreateService(wctx, &shoalv1.CreateServiceRequest{Spec: &shoalv1.ServiceSpec{
		Name: name, Replicas: int64(replicas),
		Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo:latest", StopGraceMs: 2000}}}})
	if err != nil {
		return 0, "", err
	}
	id := resp.GetService().GetMeta().GetId()
	running := map[string]bool{}
	for len(running) < replicas {
		ev, err := stream.Recv()
		if err != nil {
			return 0, id, fmt.Errorf("service %s: %d/%d running: %w", name, len(running), replicas, err)
		}
		t := ev.GetObject().GetTask()
		if t == nil || t.GetServiceId() != id {
			continue
		}
		switch t.GetStatus().GetState() {
		case shoalv1.TaskState_TASK_STATE_RUNNING:
			running[t.GetMeta().GetId()] = true
		case shoalv1.TaskState_TASK_STATE_FAILED, shoalv1.TaskState_TASK_STATE_REJECTED:
			return 0, id, fmt.Errorf("service %s: task %s %s: %s", name, t.GetMeta().GetId(), t.GetStatus().GetState(), t.GetStatus().GetErr())
		}
	}
	return time.Since(start), id, nil
}

func removeAndWait(ctx context.Context, cl *client.Client, id string) error {
	if _, err := cl.Control.RemoveService(ctx, &shoalv1.RemoveServiceRequest{Ref: id}); err != nil {
		return err
	}
	return waitFor(ctx, 5*time.Minute, func() error {
		// The service is gone at once; its tasks until they stopped.
		r, err := client.ListTasks(ctx, cl.Control, &shoalv1.ListTasksRequest{})
		if err != nil {
			return err
		}
		left := 0
		for _, t := range r.GetTasks() {
			if t.GetServiceId() == id {
				left++
			}
		}
		if left > 0 {
			return fmt.Errorf("%d tasks left", left)
		}
		return nil
	})
}

func waitFor(ctx context.Context, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// demoImage builds the demo image archive with the project's own tools.
func demoImage(ctx context.Context, e *env) (string, error) {
	bin := filepath.Join(e.dir, "bin", "shoal-demo")
	out := filepath.Join(e.dir, "bin", "demo.oci.tar")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/shoal-demo")
	build.Dir = e.o.shoalSrc
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	mk := exec.CommandContext(ctx, "go", "run", "./cmd/shoal-mkimage", "--binary", bin, "--out", out)
	mk.Dir = e.o.shoalSrc
	mk.Env = append(os.Environ(), "GOFLAGS=")
	for _, c := range []*exec.Cmd{build, mk} {
		if b, err := c.CombinedOutput(); err != nil {
			return "", fmt.Errorf("%s: %w\n%s", strings.Join(c.Args, " "), err, b)
		}
	}
	return out, nil
}

// benchNetns is a network namespace made for the benchmark (loopback only).
type benchNetns struct{ path string }

func newBenchNetns(ctx context.Context) (*benchNetns, error) {
	for _, args := range [][]string{{"netns", "add", containersNS}, {"-n", containersNS, "link", "set", "lo", "up"}} {
		if b, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, b)
		}
	}
	return &benchNetns{path: "/run/netns/" + containersNS}, nil
}

func (n *benchNetns) remove() { _ = exec.Command("ip", "netns", "del", containersNS).Run() }

// dial opens a TCP connection from inside the namespace.
func (n *benchNetns) dial(ctx context.Context, addr string) (net.Conn, error) {
	return shoalnet.DialContextIn(ctx, n.path, "tcp", addr)
}

// rssKB reads VmRSS of pid.
func rssKB(pid int) int64 {
	return statusField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
}

func statusField(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v
		}
	}
	return 0
}

// shimsPSS sums the proportional set size of every task shim (pids from
// <runtime>/<task>/shim.json).
func shimsPSS(runtimeDir string) (n int, kb int64) {
	ents, _ := os.ReadDir(runtimeDir)
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join(runtimeDir, ent.Name(), "shim.json"))
		if err != nil {
			continue
		}
		i := strings.Index(string(b), `"shim_pid":`)
		if i < 0 {
			continue
		}
		rest := strings.TrimLeft(string(b[i+len(`"shim_pid":`):]), " ")
		end := strings.IndexAny(rest, ",}")
		pid, err := strconv.Atoi(strings.TrimSpace(rest[:end]))
		if err != nil {
			continue
		}
		if v := statusField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:"); v > 0 {
			n++
			kb += v
		}
	}
	return n, kb
}
