package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/shoal-dev/shoal/agent/simagent"
	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// benchOptions are the flags of `shoal bench schedule`.
type benchOptions struct {
	nodes, tasks, services, managers int
	state, shoalBin, profile         string
	// agentsProfile is where the CPU profile of this process (the
	// simulated agents) goes, over the same window as --profile.
	agentsProfile      string
	profileSeconds     int
	joinParallel, wave int
	// createParallel is how many CreateService calls are in flight at
	// once (--services above 1).
	createParallel int
	runTimeout     time.Duration
	// managerMemLimit, if set, is the managers' GOMEMLIMIT (to measure a
	// fixed soft limit against shoal's own policy, memlimit.go).
	managerMemLimit string
	// heartbeat, if set, is written to the cluster's heartbeat period
	// before the sessions open.
	heartbeat time.Duration
	verbose   bool
}

func (a *app) benchCmd() *cobra.Command {
	c := &cobra.Command{Use: "bench", Short: "Whole-cluster benchmarks"}
	var o benchOptions
	s := &cobra.Command{
		Use:   "schedule --nodes N --tasks M [--services K] [--managers 1|3]",
		Short: "Time M tasks to ASSIGNED and RUNNING through real managers and N simulated agents",
		Long: `Starts 1 or 3 managers (this binary, as child processes on 127.0.0.1, running no
tasks and drained), joins N simulated nodes with the worker token (each its own
certificate), opens their dispatcher sessions (one mTLS connection each), then
creates K services of M/K replicas and times until the store shows every task
ASSIGNED (committed) and RUNNING (committed), counted with ListTasks'
totals through the control API (as an operator would see it; more often
as the end nears) and checked by reading every task. Prints the rates and the leader's RSS; the last line is "R tasks/s" (to RUNNING).

--state DIR keeps the managers' data and the simulated identities, so that
a later run with the same --managers skips the join (it first removes the
services a previous run left).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			if o.shoalBin == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("finding this binary to start the managers: %w", err)
				}
				o.shoalBin = exe
			}
			return runBenchSchedule(cmd.Context(), a.out, a.errOut, o)
		},
	}
	f := s.Flags()
	f.IntVar(&o.nodes, "nodes", 100, "simulated nodes")
	f.IntVar(&o.tasks, "tasks", 1000, "tasks in all")
	f.IntVar(&o.services, "services", 1, "services the tasks are split over")
	f.IntVar(&o.managers, "managers", 1, "managers: 1 or 3")
	f.StringVar(&o.state, "state", "", "directory keeping the managers' data and the simulated node identities between runs (default: a temp dir, removed)")
	f.StringVar(&o.profile, "profile", "", "write a CPU profile of the leader (from service creation on) to this file")
	f.StringVar(&o.agentsProfile, "agents-profile", "", "write a CPU profile of the simulated agents (this process; from service creation on, --profile-seconds long) to this file")
	f.IntVar(&o.profileSeconds, "profile-seconds", 30, "length of the --profile and --agents-profile")
	f.IntVar(&o.joinParallel, "join-parallel", 16, "joins in flight at once")
	f.IntVar(&o.createParallel, "create-parallel", 32, "services created at once (CreateService calls in flight)")
	f.IntVar(&o.wave, "wave", 100, "sessions opened at once (a wave must be open before the next dials)")
	f.DurationVar(&o.runTimeout, "run-timeout", 15*time.Minute, "give up when the tasks are not all RUNNING after this")
	f.DurationVar(&o.heartbeat, "heartbeat-period", 0, "set the cluster's heartbeat period (settings.heartbeat_period_ms) before the sessions open; 0: keep it (500ms by default; sessions are told a longer one beyond 500 nodes)")
	f.BoolVar(&o.verbose, "verbose", false, "log the simulated agents (sessions opened and ended, errors) to stderr")
	f.StringVar(&o.shoalBin, "shoal-bin", "", "binary to start the managers with (default: this one)")
	_ = f.MarkHidden("shoal-bin")
	f.StringVar(&o.managerMemLimit, "manager-gomemlimit", "", "GOMEMLIMIT of the managers (default: shoal's own soft limit)")
	_ = f.MarkHidden("manager-gomemlimit")
	c.AddCommand(s)
	return c
}

func (o benchOptions) validate() error {
	switch {
	case o.nodes < 1:
		return fmt.Errorf("--nodes: %d: need at least 1", o.nodes)
	case o.tasks < 1:
		return fmt.Errorf("--tasks: %d: need at least 1", o.tasks)
	case o.services < 1 || o.services > o.tasks:
		return fmt.Errorf("--services: %d: need 1..--tasks (%d)", o.services, o.tasks)
	case o.managers != 1 && o.managers != 3:
		return fmt.Errorf("--managers: %d: 1 or 3", o.managers)
	case o.joinParallel < 1 || o.wave < 1 || o.profileSeconds < 1 || o.createParallel < 1:
		return errors.New("--join-parallel, --create-parallel, --wave and --profile-seconds must be positive")
	}
	return nil
}

// benchManager is one manager child process.
type benchManager struct {
	name, dir, addr, agentAddr, debugAddr string
	cmd                                   *exec.Cmd
	done                                  chan error
}

// benchState is what --state keeps next to the managers' data dirs.
type benchState struct {
	Managers []struct{ Name, Addr, AgentAddr string }
}

// benchRun is one `shoal bench schedule`.
type benchRun struct {
	o        benchOptions
	out, log io.Writer
	root     string
	ms       []*benchManager
	cl       *client.Client
}

func (r *benchRun) logf(format string, args ...any) {
	fmt.Fprintf(r.log, "bench: "+format+"\n", args...)
}

func runBenchSchedule(ctx context.Context, out, errOut io.Writer, o benchOptions) (err error) {
	applyBenchGC(os.Getenv)
	r := &benchRun{o: o, out: out, log: errOut, root: o.state}
	if r.root == "" {
		if r.root, err = os.MkdirTemp("", "shoal-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(r.root)
	} else if r.root, err = filepath.Abs(r.root); err != nil {
		return err
	} else if err := os.MkdirAll(r.root, 0o700); err != nil {
		return fmt.Errorf("--state: %w", err)
	}
	defer r.stopManagers()
	if err := r.startManagers(ctx); err != nil {
		return err
	}
	return r.run(ctx)
}

// benchGCPercent is the GOGC of the bench process, which runs the simulated
// agents: they are the harness, not the product, yet share the machine's
// cores with the leader. Under the managers' policy (GOGC=300 and a soft
// limit of about 1 GiB) 5,000 agents spent about a third of their CPU in
// the GC (marking, assists, and scanning some 60,000 goroutine stacks each
// cycle; eighth round). A GC every tenfold growth of the live heap costs
// memory the machine has (the live heap of 5,000 agents is a few hundred
// MB) and leaves the cores to the managers being measured.
const benchGCPercent = 1000

// benchGC is the bench process's GC policy: GOGC benchGCPercent and no
// soft memory limit (the cmd's limit keeper yields to it), each unless
// GOGC or GOMEMLIMIT is set, which wins. set says whether each applies.
func benchGC(getenv func(string) string) (gcPercent int, setGC, noLimit bool) {
	return benchGCPercent, getenv("GOGC") == "", getenv("GOMEMLIMIT") == ""
}

// applyBenchGC applies benchGC to this process.
func applyBenchGC(getenv func(string) string) {
	pct, setGC, noLimit := benchGC(getenv)
	if setGC {
		debug.SetGCPercent(pct)
	}
	if noLimit {
		debug.SetMemoryLimit(math.MaxInt64)
	}
}

// freePort returns a port free on 127.0.0.1 now.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startManagers starts the managers: from --state when it holds them (same
// count), else a new cluster (init, then join one at a time).
func (r *benchRun) startManagers(ctx context.Context) error {
	statePath := filepath.Join(r.root, "bench.json")
	var st benchState
	reuse := false
	if b, err := os.ReadFile(statePath); err == nil {
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("--state: %s: %w", statePath, err)
		}
		if len(st.Managers) != r.o.managers {
			return fmt.Errorf("--state %s holds a cluster of %d managers, not --managers %d: use another directory", r.root, len(st.Managers), r.o.managers)
		}
		reuse = true
	} else {
		for i := range r.o.managers {
			api, err := freePort()
			if err != nil {
				return err
			}
			ag, err := freePort()
			if err != nil {
				return err
			}
			st.Managers = append(st.Managers, struct{ Name, Addr, AgentAddr string }{fmt.Sprintf("m%d", i+1), api, ag})
		}
	}
	for _, m := range st.Managers {
		bm := &benchManager{name: m.Name, dir: filepath.Join(r.root, m.Name), addr: m.Addr, agentAddr: m.AgentAddr}
		if r.o.profile != "" {
			var err error
			if bm.debugAddr, err = freePort(); err != nil {
				return err
			}
		}
		r.ms = append(r.ms, bm)
	}
	first := r.ms[0]
	if reuse {
		r.logf("restarting %d manager(s) from %s", len(r.ms), r.root)
		for _, m := range r.ms {
			if err := r.startManager(m, "daemon"); err != nil {
				return err
			}
		}
	} else {
		r.logf("shoal init on %s", first.addr)
		if err := r.startManager(first, "init", "--advertise-addr", first.addr); err != nil {
			return err
		}
	}
	// init writes the admin credentials once the cluster is bootstrapped.
	if err := r.waitFile(ctx, filepath.Join(first.dir, "admin", "admin.key")); err != nil {
		return err
	}
	cl, err := client.Dial(ctx, client.Config{Hosts: []string{first.addr}, CertDir: filepath.Join(first.dir, "admin")})
	if err != nil {
		return err
	}
	r.cl = cl
	if _, err := r.waitCluster(ctx, 1); err != nil {
		return err
	}
	if !reuse {
		gc, err := r.getCluster(ctx)
		if err != nil {
			return err
		}
		for i, m := range r.ms[1:] {
			r.logf("shoal join %s as a manager", m.addr)
			if err := r.startManager(m, "join", "--advertise-addr", m.addr, "--token", gc.GetCluster().GetTokens().GetManager(), first.addr); err != nil {
				return err
			}
			if _, err := r.waitCluster(ctx, i+2); err != nil {
				return err
			}
		}
		b, _ := json.Marshal(st)
		if err := os.WriteFile(statePath, b, 0o600); err != nil {
			return err
		}
	} else if _, err := r.waitCluster(ctx, len(r.ms)); err != nil {
		return err
	}
	r.cl.Close()
	var hosts []string
	for _, m := range r.ms {
		hosts = append(hosts, m.addr)
	}
	r.cl, err = client.Dial(ctx, client.Config{Hosts: hosts, CertDir: filepath.Join(first.dir, "admin")})
	return err
}

// waitFile waits until path exists (a manager writes it).
func (r *benchRun) waitFile(ctx context.Context, path string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if err := r.alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not written after 2 minutes", path)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // poll interval
		}
	}
}

// startManager starts a manager child: no executor (it runs no tasks), no
// gossip, its log in <dir>.log.
func (r *benchRun) startManager(m *benchManager, verb string, args ...string) error {
	logf, err := os.OpenFile(m.dir+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	full := append([]string{"--data-dir", m.dir, "--log-level", "warn", verb}, args...)
	full = append(full, "--agent-addr", m.agentAddr, "--gossip-port", "-1", "--no-executor")
	if verb == "daemon" {
		full = append(full, "--listen-addr", m.addr)
	} else {
		full = append(full, "--node-name", "bench-"+m.name)
	}
	cmd := exec.Command(r.o.shoalBin, full...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = os.Environ()
	if m.debugAddr != "" {
		cmd.Env = append(cmd.Env, "SHOAL_DEBUG_ADDR="+m.debugAddr)
	}
	if r.o.managerMemLimit != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+r.o.managerMemLimit)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting manager %s: %w", m.name, err)
	}
	m.cmd, m.done = cmd, make(chan error, 1)
	go func() { m.done <- cmd.Wait() }()
	return nil
}

// stopManagers stops every manager (SIGTERM, then SIGKILL to its process
// group after 10 s).
func (r *benchRun) stopManagers() {
	if r.cl != nil {
		r.cl.Close()
	}
	for _, m := range r.ms {
		if m.cmd == nil {
			continue
		}
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, m := range r.ms {
		if m.cmd == nil {
			continue
		}
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
			<-m.done
		}
	}
}

// alive fails when a manager has exited.
func (r *benchRun) alive() error {
	for _, m := range r.ms {
		select {
		case err := <-m.done:
			m.done <- err
			return fmt.Errorf("manager %s exited (%v); last lines of %s.log:\n%s", m.name, err, m.dir, tailFile(m.dir+".log", 20))
		default:
		}
	}
	return nil
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// setHeartbeat writes the cluster's heartbeat period.
func (r *benchRun) setHeartbeat(ctx context.Context, period time.Duration) error {
	cur, err := r.getCluster(ctx)
	if err != nil {
		return fmt.Errorf("reading the cluster settings: %w", err)
	}
	set := cur.GetCluster().GetSettings()
	if set == nil {
		set = &shoalv1.ClusterSettings{}
	}
	set.HeartbeatPeriodMs = period.Milliseconds()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := r.cl.Control.UpdateCluster(cctx, &shoalv1.UpdateClusterRequest{Settings: set, IgnoreVersion: true}); err != nil {
		return fmt.Errorf("--heartbeat-period: %w", err)
	}
	return nil
}

func (r *benchRun) getCluster(ctx context.Context) (*shoalv1.GetClusterResponse, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return r.cl.Control.GetCluster(cctx, &shoalv1.GetClusterRequest{})
}

// waitCluster waits until the cluster has a leader and voters voters.
func (r *benchRun) waitCluster(ctx context.Context, voters int) (*shoalv1.GetClusterResponse, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := r.alive(); err != nil {
			return nil, err
		}
		gc, err := r.getCluster(ctx)
		if err == nil && gc.GetLeaderId() != "" {
			n := 0
			for _, m := range gc.GetMembers() {
				if strings.EqualFold(m.GetSuffrage(), "voter") {
					n++
				}
			}
			if n == voters {
				return gc, nil
			}
			err = fmt.Errorf("%d voters, want %d", n, voters)
		} else if err == nil {
			err = errors.New("no leader yet")
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("waiting for the managers: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond): // poll interval
		}
	}
}

// leader returns the manager that leads now.
func (r *benchRun) leader(ctx context.Context) (*benchManager, error) {
	gc, err := r.waitCluster(ctx, len(r.ms))
	if err != nil {
		return nil, err
	}
	for _, mem := range gc.GetMembers() {
		if mem.GetNodeId() != gc.GetLeaderId() {
			continue
		}
		for _, m := range r.ms {
			if m.addr == mem.GetAddr() {
				return m, nil
			}
		}
	}
	return nil, fmt.Errorf("the leader %s is none of the managers started", gc.GetLeaderId())
}

// benchServicePrefix names the services the benchmark creates (and removes
// when it finds them left over in --state).
const benchServicePrefix = "bench-sched-"

func (r *benchRun) run(ctx context.Context) error {
	o := r.o
	if err := r.drainManagers(ctx); err != nil {
		return err
	}
	if err := r.removeServices(ctx); err != nil {
		return err
	}

	// Identities: reuse what --state holds, join the rest.
	idPath := filepath.Join(r.root, "simnodes.json")
	ids, err := simagent.LoadIdentities(idPath)
	if err != nil {
		return err
	}
	joinNote := fmt.Sprintf("%d reused", len(ids.Nodes))
	if missing := o.nodes - len(ids.Nodes); missing > 0 {
		gc, err := r.getCluster(ctx)
		if err != nil {
			return err
		}
		names := make([]string, missing)
		for i := range names {
			names[i] = fmt.Sprintf("sim-%05d", len(ids.Nodes)+i+1)
		}
		r.logf("joining %d simulated nodes (%d at a time)", missing, o.joinParallel)
		start := time.Now()
		joined, err := simagent.Join(ctx, r.ms[0].addr, gc.GetCluster().GetTokens().GetWorker(), names, o.joinParallel)
		if err != nil {
			return err
		}
		took := time.Since(start)
		if ids.CACertPEM == nil {
			ids.CACertPEM = joined.CACertPEM
		}
		ids.Nodes = append(ids.Nodes, joined.Nodes...)
		if o.state != "" {
			if err := simagent.SaveIdentities(idPath, ids); err != nil {
				return err
			}
		}
		joinNote = fmt.Sprintf("%d joined in %.1f s = %.0f joins/s, %d reused", missing, took.Seconds(), float64(missing)/took.Seconds(), len(ids.Nodes)-missing)
	}
	use := &simagent.Identities{CACertPEM: ids.CACertPEM, Nodes: ids.Nodes[:o.nodes]}

	var agentLog *slog.Logger
	if o.verbose {
		agentLog = slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if o.heartbeat > 0 {
		if err := r.setHeartbeat(ctx, o.heartbeat); err != nil {
			return err
		}
		r.logf("heartbeat period set to %s", o.heartbeat)
	}
	counters := &simagent.Counters{Target: int64(o.tasks)}
	r.logf("opening %d sessions (%d at a time)", o.nodes, o.wave)
	start := time.Now()
	fleet, err := simagent.Start(ctx, use, r.hosts(), counters, o.wave, 2*time.Minute, agentLog)
	if err != nil {
		return err
	}
	defer func() {
		r.logf("closing %d sessions", fleet.Size())
		fleet.Stop()
	}()
	sessions := time.Since(start)

	leader, err := r.leader(ctx)
	if err != nil {
		return err
	}
	pid := leader.cmd.Process.Pid
	var logOffset int64
	if fi, err := os.Stat(leader.dir + ".log"); err == nil {
		logOffset = fi.Size()
	}
	rssBefore, _ := procStatusKB(pid, "VmRSS")
	cpuBefore, cpuErr := procCPU(pid)
	// This process runs the simulated agents (and the counting): its own
	// CPU, the managers being other processes.
	selfBefore, selfErr := procCPU(os.Getpid())

	profDone := make(chan error, 1)
	if o.profile != "" {
		// The heap with every session open and no task yet: what the
		// sessions themselves hold.
		if err := fetchPprof(ctx, leader.debugAddr, "heap", o.profile+".idle.heap"); err != nil {
			r.logf("idle heap profile: %v", err)
		} else {
			r.logf("leader heap profile before the tasks in %s.idle.heap", o.profile)
		}
		// The text form ends with the runtime's memory statistics
		// (stacks, heap in use and idle), which the RSS is made of.
		if err := fetchPprof(ctx, leader.debugAddr, "heap?debug=1", o.profile+".idle.heap.txt"); err != nil {
			r.logf("idle heap statistics: %v", err)
		}
		go func() {
			profDone <- fetchPprof(ctx, leader.debugAddr, fmt.Sprintf("profile?seconds=%d", o.profileSeconds), o.profile)
		}()
	}

	agentsProfDone := make(chan error, 1)
	if o.agentsProfile != "" {
		go func() {
			agentsProfDone <- selfCPUProfile(ctx, o.agentsProfile, time.Duration(o.profileSeconds)*time.Second)
		}()
	}

	// Create the services, a few at a time, and time from the first call.
	per, extra := o.tasks/o.services, o.tasks%o.services
	r.logf("creating %d service(s) of %d task(s) in all (%d at a time)", o.services, o.tasks, min(o.createParallel, o.services))
	start = time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.createParallel)
	for i := range o.services {
		replicas := per
		if i < extra {
			replicas++
		}
		g.Go(func() error {
			cctx, cancel := context.WithTimeout(gctx, time.Minute)
			defer cancel()
			_, err := r.cl.Control.CreateService(cctx, &shoalv1.CreateServiceRequest{Spec: benchSpec(fmt.Sprintf("%s%05d", benchServicePrefix, i+1), replicas)})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("creating the services: %w", err)
	}
	created := time.Since(start)

	// Progress is counted from the store through the control API
	// (benchprogress.go): the tasks placed until all are, then the tasks
	// RUNNING, each time a count is due; the RSS every sampleEvery.
	const sampleEvery = 50 * time.Millisecond
	var toAssigned, toRunning time.Duration
	var peak int64
	assigned, running, polls := 0, 0, 0
	lastLog := time.Now()
	nextCount := time.Now()
	for toRunning == 0 {
		if err := r.alive(); err != nil {
			return err
		}
		if rss, err := procStatusKB(pid, "VmRSS"); err == nil {
			peak = max(peak, rss)
		}
		if now := time.Now(); !now.Before(nextCount) {
			polls++
			if toAssigned == 0 {
				if assigned, err = r.assignedCount(ctx); err != nil {
					return err
				}
				if assigned >= o.tasks {
					toAssigned = time.Since(start)
				}
			}
			if toAssigned != 0 {
				if running, err = r.countTasks(ctx, runningFilter); err != nil {
					return err
				}
				if running >= o.tasks {
					toRunning = time.Since(start)
					break
				}
			}
			done := assigned
			if toAssigned != 0 {
				done = running
			}
			nextCount = time.Now().Add(nextPoll(done, o.tasks, time.Since(start)))
		}
		if time.Since(start) > o.runTimeout {
			return fmt.Errorf("after %v: %d of %d tasks ASSIGNED, %d RUNNING", o.runTimeout, assigned, o.tasks, running)
		}
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			if toAssigned == 0 {
				// RUNNING is counted once all are placed.
				r.logf("%v: %d of %d ASSIGNED (ListTasks counts)", time.Since(start).Round(time.Millisecond), assigned, o.tasks)
			} else {
				r.logf("%v: %d ASSIGNED, %d RUNNING of %d (ListTasks counts)", time.Since(start).Round(time.Millisecond), assigned, running, o.tasks)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(sampleEvery, max(time.Until(nextCount), time.Millisecond))):
		}
	}
	rssAt, _ := procStatusKB(pid, "VmRSS")
	hwm, _ := procStatusKB(pid, "VmHWM")
	cpuAt, err := procCPU(pid)
	cpuErr = errors.Join(cpuErr, err)
	selfAt, err := procCPU(os.Getpid())
	selfErr = errors.Join(selfErr, err)
	peak = max(peak, rssAt)

	// The counts said M tasks RUNNING; the whole list must show them too
	// (a check by another path: every task read). Until it does, the
	// clock runs on: the time is then the first check that agreed.
	running, checks := 0, 0
	for {
		if running, err = r.countRunning(ctx); err != nil {
			return err
		}
		checks++
		if running == o.tasks {
			break
		}
		if time.Since(start) > o.runTimeout {
			return fmt.Errorf("after %v: the counts said %d tasks RUNNING, but ListTasks shows %d of %d RUNNING", o.runTimeout, o.tasks, running, o.tasks)
		}
		r.logf("ListTasks shows %d of %d RUNNING; checking again", running, o.tasks)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second): // poll interval of the store check
		}
	}
	if checks > 1 {
		toRunning = time.Since(start)
	}
	downs := countLines(leader.dir+".log", logOffset, `msg="node down"`)
	if o.profile != "" {
		if err := <-profDone; err != nil {
			r.logf("profile: %v", err)
		} else {
			r.logf("leader CPU profile (%d s from service creation) in %s", o.profileSeconds, o.profile)
		}
	}
	if o.agentsProfile != "" {
		if err := <-agentsProfDone; err != nil {
			r.logf("agents profile: %v", err)
		} else {
			r.logf("simulated agents' CPU profile (%d s from service creation) in %s", o.profileSeconds, o.agentsProfile)
		}
	}
	if o.profile != "" {
		if err := fetchPprof(ctx, leader.debugAddr, "heap", o.profile+".heap"); err != nil {
			r.logf("heap profile: %v", err)
		} else {
			r.logf("leader heap profile at the end in %s.heap", o.profile)
		}
	}
	rate := func(d time.Duration) float64 { return float64(o.tasks) / d.Seconds() }
	fmt.Fprintf(r.out, "managers %d (leader %s), simulated nodes %d (%s; %d sessions open in %.1f s), services %d, tasks %d\n",
		len(r.ms), leader.name, o.nodes, joinNote, o.nodes, sessions.Seconds(), o.services, o.tasks)
	fmt.Fprintf(r.out, "services created in %.2f s\n", created.Seconds())
	fmt.Fprintf(r.out, "to ASSIGNED (committed): %d tasks in %.2f s = %.0f tasks/s\n", o.tasks, toAssigned.Seconds(), rate(toAssigned))
	fmt.Fprintf(r.out, "to RUNNING (committed): %d tasks in %.2f s = %.0f tasks/s\n", o.tasks, toRunning.Seconds(), rate(toRunning))
	fmt.Fprintf(r.out, "leader RSS: %d MiB before, %d MiB at the end, peak %d MiB sampled, VmHWM %d MiB\n", rssBefore>>10, rssAt>>10, peak>>10, hwm>>10)
	if cpuErr == nil {
		// Less sensitive to the machine's load than the rates: what the
		// leader spent, not how long it waited for a core.
		cpu := cpuAt - cpuBefore
		fmt.Fprintf(r.out, "leader CPU from service creation to all RUNNING: %.1f s = %.3f s per 1,000 tasks\n", cpu.Seconds(), cpu.Seconds()*1000/float64(o.tasks))
	}
	if selfErr == nil {
		cpu := selfAt - selfBefore
		fmt.Fprintf(r.out, "simulated agents (this process) CPU meanwhile: %.1f s = %.3f s per 1,000 tasks\n", cpu.Seconds(), cpu.Seconds()*1000/float64(o.tasks))
	}
	if hwm, err := procStatusKB(os.Getpid(), "VmHWM"); err == nil {
		fmt.Fprintf(r.out, "simulated agents (this process) peak RSS: %d MiB\n", hwm>>10)
	}
	fmt.Fprintf(r.out, "verified: %d of %d tasks RUNNING (ListTasks); nodes marked down during the run: %d\n", running, o.tasks, downs)
	fmt.Fprintf(r.out, "counted from the store (ListTasks totals, %d counts)\n", polls)
	fmt.Fprintf(r.out, "%.0f tasks/s\n", rate(toRunning))
	return nil
}

func (r *benchRun) hosts() []string {
	var hs []string
	for _, m := range r.ms {
		hs = append(hs, m.addr)
	}
	return hs
}

// benchSpec is a service that needs nothing of a node: the simulated
// agents run nothing.
func benchSpec(name string, replicas int) *shoalv1.ServiceSpec {
	return &shoalv1.ServiceSpec{
		Name: name, Labels: map[string]string{"bench": "schedule"},
		Mode: shoalv1.ServiceMode_SERVICE_MODE_REPLICATED, Replicas: int64(replicas),
		Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "shoal-bench:none", Command: []string{"/bin/true"}}},
	}
}

// drainManagers keeps tasks off the managers' own nodes. The node object
// also changes as its agent's session opens (READY), so a drain that hits
// a version conflict reads the node again (retryConflict).
func (r *benchRun) drainManagers(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return retryConflict(func() error { return r.drainManagersOnce(cctx) })
}

func (r *benchRun) drainManagersOnce(cctx context.Context) error {
	ln, err := client.ListNodes(cctx, r.cl.Control, &shoalv1.ListNodesRequest{})
	if err != nil {
		return err
	}
	for _, n := range ln.GetNodes() {
		if n.GetRole() != shoalv1.NodeRole_NODE_ROLE_MANAGER || n.GetSpec().GetAvailability() == shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN {
			continue
		}
		spec := n.GetSpec()
		if spec == nil {
			spec = &shoalv1.NodeSpec{}
		}
		spec.Availability = shoalv1.NodeAvailability_NODE_AVAILABILITY_DRAIN
		if _, err := r.cl.Control.UpdateNode(cctx, &shoalv1.UpdateNodeRequest{NodeId: n.GetMeta().GetId(), Version: n.GetMeta().GetVersion(), Spec: spec}); err != nil {
			return fmt.Errorf("draining manager node %s: %w", n.GetMeta().GetId(), err)
		}
	}
	return nil
}

// removeServices removes the benchmark's services and waits until their
// tasks are gone.
func (r *benchRun) removeServices(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ls, err := client.ListServices(cctx, r.cl.Control, &shoalv1.ListServicesRequest{})
	if err != nil {
		return err
	}
	n := 0
	start := time.Now()
	for _, s := range ls.GetServices() {
		if !strings.HasPrefix(s.GetSpec().GetName(), benchServicePrefix) {
			continue
		}
		if _, err := r.cl.Control.RemoveService(cctx, &shoalv1.RemoveServiceRequest{Ref: s.GetMeta().GetId()}); err != nil {
			return fmt.Errorf("removing service %s: %w", s.GetSpec().GetName(), err)
		}
		n++
	}
	if n == 0 {
		return nil
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		lt, err := client.ListTasks(ctx, r.cl.Control, &shoalv1.ListTasksRequest{}, grpc.MaxCallRecvMsgSize(1<<30))
		if err == nil && len(lt.GetTasks()) == 0 {
			r.logf("removed %d service(s) in %.1f s", n, time.Since(start).Seconds())
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tasks of the removed services still there after 10 minutes (%v)", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second): // poll interval
		}
	}
}

// countRunning counts the benchmark's tasks RUNNING in the store.
func (r *benchRun) countRunning(ctx context.Context) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	lt, err := client.ListTasks(cctx, r.cl.Control, &shoalv1.ListTasksRequest{}, grpc.MaxCallRecvMsgSize(1<<30))
	if err != nil {
		return 0, fmt.Errorf("listing the tasks: %w", err)
	}
	n := 0
	for _, t := range lt.GetTasks() {
		if t.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_RUNNING && t.GetDesiredState() == shoalv1.TaskState_TASK_STATE_RUNNING {
			n++
		}
	}
	return n, nil
}

// fetchPprof writes the pprof profile named by what (profile?seconds=N,
// heap) from the endpoint at addr (SHOAL_DEBUG_ADDR of the leader) to
// path.
func fetchPprof(ctx context.Context, addr, what, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/%s", addr, what), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// selfCPUProfile writes a CPU profile of this process, for d (or until
// ctx ends), to path.
func selfCPUProfile(ctx context.Context, path string, d time.Duration) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	pprof.StopCPUProfile()
	return f.Close()
}

// countLines counts the lines of path after offset that contain text.
func countLines(path string, offset int64, text string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0
	}
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), text) {
			n++
		}
	}
	return n
}

// procCPU is the CPU time (user and system) process pid has used so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseProcStatCPU(string(b))
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// parseProcStatCPU reads utime and stime (fields 14 and 15) from the text
// of /proc/PID/stat. The command name (field 2) is in parentheses and may
// hold spaces and parentheses itself, so fields are counted from the last
// ')'.
func parseProcStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("/proc/PID/stat: no command name")
	}
	// After the name: field 3 (state) onwards; utime is field 14.
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/PID/stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/PID/stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// procStatusKB reads a kB field (VmRSS, VmHWM) of /proc/PID/status.
func procStatusKB(pid int, key string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == key {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, errors.New(key + " not in /proc/PID/status")
}
