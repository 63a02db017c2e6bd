package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// options are the command's flags.
type options struct {
	duration    time.Duration
	warmup      time.Duration
	callTimeout time.Duration
	concs       []int
	managers    []int
	only        string // shoal, etcd, all, none
	write       string // patch, update: shoal's write in the throughput cells
	shoalBin    string
	shoalSrc    string
	logLevel    string
	buildTags   string
	etcdBin     string
	jsonPath    string
	failover    int
	nodedown    int
	containers  int
	replicas    int
	bigService  int
	soak        int
	soakTasks   int
	soakSettle  time.Duration
	soakPprof   string
	keep        bool
	workdir     string
	shoalIPs    []string
	workerIP    string
	etcdIPs     []string
	etcdTLS     bool
	pprofDir    string
	// summarize and summarizeBase: -json files to fold into one table
	// (summarize.go); no cluster is started.
	summarize     string
	summarizeBase string
	// runs, baseBin, jsonDir: the throughput benchmark -runs times, each
	// run's report in jsonDir, another build's runs interleaved (repeat.go).
	runs    int
	baseBin string
	jsonDir string
	// agents, agentsNetwork: simulated agents connected to the shoal
	// clusters of the throughput cells (agents.go).
	agents        int
	agentsNetwork bool
}

const usageText = `bench: whole-cluster benchmarks of shoal, with etcd as the reference.

Usage (from the bench/ folder of the shoal repository, as root):

  go run . [flags]                     committed writes/s: shoal (1 and 3 managers) and etcd (3 members)
  go run . -only shoal -managers 3     shoal only
  go run . -failover 10                leader failover: kill -9 the leader, time to the first write
  go run . -nodedown 10                node-down detection: kill -9 a worker, time until it is DOWN
  go run . -bigservice 100000          one service of N replicas on 3 no-executor managers: time to N ASSIGNED,
                                       leader RSS, watch cuts and session failures, the max-replicas refusal
  go run . -soak 50 -soak-tasks 100    memory that stays flat: 50 rounds of 100 tasks created → RUNNING → removed on
                                       shoal dev, the idle RSS, heap, goroutines, fds, mounts, cgroups after each
  go run . -duration 3s -json out.json a short run, results also as JSON
  go run . -runs 6 -json-dir runs      six runs of the throughput benchmark, then the README's table of them;
                                       -base-bin B interleaves six runs of another build (its own column)
  go run . -only shoal -agents 200     the shoal cells with 200 simulated agents connected (-agents-network: and
                                       a service of one task per agent on an overlay network)
  go run . -summarize 'runs/*.json'    the README's table from several runs' -json files (ranges, medians);
                                       -summarize-base 'base/*.json' adds another build's ratios, same runs

Every process runs on loopback addresses (shoal 127.0.0.21-23 and 127.0.0.25,
etcd 127.0.0.31-33) and is killed on exit; data dirs live in a temp dir that
is removed unless -keep. The results are printed as markdown tables on stdout;
progress goes to stderr.

Flags:
`

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	var concs, managers, shoalIPs, etcdIPs string
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per cell")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before each cell's measured time")
	fs.DurationVar(&o.callTimeout, "call-timeout", 10*time.Second, "timeout of one write")
	fs.StringVar(&concs, "concurrency", "1,16,256", "comma-separated numbers of concurrent writers")
	fs.StringVar(&o.write, "write", "patch", "shoal's write in the throughput cells: patch (PatchService: the label alone) or update (UpdateService: the whole spec)")
	fs.StringVar(&managers, "managers", "1,3", "comma-separated shoal cluster sizes (managers) to measure")
	fs.StringVar(&o.only, "only", "all", "which throughput benchmarks to run: shoal, etcd, all, none (default none when -failover or -nodedown is given)")
	fs.StringVar(&o.shoalBin, "shoal-bin", "", "shoal binary (default: go build ./cmd/shoal of -shoal-src into the temp dir)")
	fs.StringVar(&o.shoalSrc, "shoal-src", "..", "shoal's source tree, for building the binary")
	fs.StringVar(&o.logLevel, "shoal-log-level", "", "--log-level for the shoal nodes (default: shoal's own, info)")
	fs.StringVar(&o.buildTags, "tags", "seccomp", "build tags for go build of shoal")
	fs.StringVar(&o.etcdBin, "etcd-bin", "/usr/bin/etcd", "etcd binary (Debian's etcd-server)")
	fs.StringVar(&o.jsonPath, "json", "", "also write the results as JSON to this file (- for stdout)")
	fs.IntVar(&o.failover, "failover", 0, "measure leader failover N times on a 3-manager cluster")
	fs.IntVar(&o.containers, "containers", 0, "measure service create → task RUNNING N times on shoal dev (real containers, in a netns of its own), then -replicas at once")
	fs.IntVar(&o.replicas, "replicas", 100, "with -containers: how many replicas to start at once on the one agent")
	fs.IntVar(&o.bigService, "bigservice", 0, "create one service of N replicas on 3 managers with no executor and measure convergence to N ASSIGNED tasks")
	fs.IntVar(&o.soak, "soak", 0, "run N rounds of -soak-tasks tasks created → RUNNING → removed → gone on shoal dev (real containers, in a netns of its own) and record the idle footprint after each")
	fs.IntVar(&o.soakTasks, "soak-tasks", 100, "with -soak: replicas of each round's service")
	fs.DurationVar(&o.soakSettle, "soak-settle", 5*time.Second, "with -soak: idle time after a round's tasks are gone before its figures are read")
	fs.StringVar(&o.soakPprof, "soak-pprof", "", "with -soak: write the node's heap profile after each round to DIR/heap-NNN.pb.gz (compare with go tool pprof -base) and its goroutines (debug=2) to DIR/goroutine-NNN.txt")
	fs.IntVar(&o.nodedown, "nodedown", 0, "measure worker-down detection N times on a 1-manager + 1-worker cluster")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir (data dirs and process logs)")
	fs.StringVar(&o.workdir, "workdir", "", "where to create the temp dir (default $TMPDIR or /tmp); must not be tmpfs for fsync to mean anything")
	fs.StringVar(&shoalIPs, "shoal-ips", "127.0.0.21,127.0.0.22,127.0.0.23", "loopback addresses of the shoal managers")
	fs.StringVar(&o.workerIP, "worker-ip", "127.0.0.25", "loopback address of the shoal worker (-nodedown)")
	fs.BoolVar(&o.etcdTLS, "etcd-tls", false, "run etcd with mutual TLS on client and peer URLs, as shoal always runs (default: plain HTTP)")
	fs.StringVar(&o.pprofDir, "pprof", "", "with the throughput benchmark: serve pprof on every shoal node (<ip>:"+debugPort+") and write a CPU profile of every manager for each cell's measured window to DIR/shoal-<N>m-c<C>-<node>-<leader|follower>.pb.gz; likewise every etcd member (--enable-pprof, plain HTTP only) to DIR/etcd-c<C>-<member>-<role>.pb.gz, and the benchmark process itself (the writers' client side) to DIR/<shoal-<N>m|etcd>-c<C>-bench.pb.gz")
	fs.StringVar(&o.summarize, "summarize", "", "comma-separated globs of -json reports of the throughput benchmark (-only all): print one table of them (ranges and medians per concurrency) and run nothing")
	fs.StringVar(&o.summarizeBase, "summarize-base", "", "with -summarize: globs of another build's reports from the same interleaved runs, for a \"base\" column")
	fs.IntVar(&o.runs, "runs", 1, "run the throughput benchmark N times (needs -json-dir), then print the table of the runs (-summarize)")
	fs.StringVar(&o.baseBin, "base-bin", "", "with -runs: another shoal binary, run as often, interleaved (order alternating per run), for the table's base column")
	fs.StringVar(&o.jsonDir, "json-dir", "", "with -runs or -base-bin: write each run's JSON report to DIR/shoal-NN.json (DIR/base-NN.json)")
	fs.IntVar(&o.agents, "agents", 0, "with the shoal throughput cells: join N simulated agents (real identities and agent sessions over mTLS, run in the benchmark process, their CPU in the client CPU) to each shoal cluster before its cells and keep them connected through them")
	fs.BoolVar(&o.agentsNetwork, "agents-network", false, "with -agents: also create an overlay network and a service of one task per agent on it, RUNNING before the cells")
	fs.StringVar(&etcdIPs, "etcd-ips", "127.0.0.31,127.0.0.32,127.0.0.33", "loopback addresses of the etcd members")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.summarizeBase != "" && o.summarize == "" {
		return nil, errors.New("-summarize-base needs -summarize")
	}
	if err := checkRepeat(o, fs); err != nil {
		return nil, err
	}
	onlySet := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "only" {
			onlySet = true
		}
	})
	if !onlySet && (o.failover > 0 || o.nodedown > 0 || o.containers > 0 || o.bigService > 0 || o.soak > 0) {
		o.only = "none"
	}
	switch o.only {
	case "shoal", "etcd", "all", "none":
	default:
		return nil, fmt.Errorf("-only: want shoal, etcd, all or none, got %q", o.only)
	}
	if err := checkAgents(o); err != nil {
		return nil, err
	}
	switch o.write {
	case "patch", "update":
	default:
		return nil, fmt.Errorf("-write: want patch or update, got %q", o.write)
	}
	var err error
	if o.concs, err = intList(concs); err != nil {
		return nil, fmt.Errorf("-concurrency: %w", err)
	}
	if o.managers, err = intList(managers); err != nil {
		return nil, fmt.Errorf("-managers: %w", err)
	}
	if o.duration <= 0 || o.warmup < 0 || o.callTimeout <= 0 {
		return nil, errors.New("-duration and -call-timeout must be > 0, -warmup >= 0")
	}
	if o.failover < 0 || o.nodedown < 0 || o.bigService < 0 || o.soak < 0 {
		return nil, errors.New("-failover, -nodedown, -bigservice and -soak must be >= 0")
	}
	if o.soakTasks < 1 || o.soakSettle < 0 {
		return nil, errors.New("-soak-tasks must be >= 1, -soak-settle >= 0")
	}

	if o.pprofDir != "" {
		if err := os.MkdirAll(o.pprofDir, 0o755); err != nil {
			return nil, fmt.Errorf("-pprof: %w", err)
		}
	}

	if o.shoalIPs, err = loopbackList(shoalIPs); err != nil {
		return nil, fmt.Errorf("-shoal-ips: %w", err)
	}
	if o.etcdIPs, err = loopbackList(etcdIPs); err != nil {
		return nil, fmt.Errorf("-etcd-ips: %w", err)
	}
	if len(o.etcdIPs) != 3 {
		return nil, errors.New("-etcd-ips: want 3 addresses")
	}
	if _, err := loopbackList(o.workerIP); err != nil {
		return nil, fmt.Errorf("-worker-ip: %w", err)
	}
	for _, m := range o.managers {
		if m > len(o.shoalIPs) {
			return nil, fmt.Errorf("-managers %d: only %d addresses in -shoal-ips", m, len(o.shoalIPs))
		}
	}
	if o.failover > 0 && len(o.shoalIPs) < 3 {
		return nil, errors.New("-failover needs 3 addresses in -shoal-ips")
	}
	if o.bigService > 0 && len(o.shoalIPs) < 3 {
		return nil, errors.New("-bigservice needs 3 addresses in -shoal-ips")
	}
	if slices.Contains(o.shoalIPs, o.workerIP) {
		return nil, errors.New("-worker-ip must differ from -shoal-ips")
	}
	return o, nil
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

// loopbackList parses comma-separated IPv4 addresses and refuses anything
// outside 127.0.0.0/8: the benchmark never sends traffic anywhere else.
func loopbackList(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		ip := net.ParseIP(f)
		if ip == nil || ip.To4() == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("%q is not an IPv4 loopback address (127.0.0.0/8)", f)
		}
		if slices.Contains(out, f) {
			return nil, fmt.Errorf("%q given twice", f)
		}
		out = append(out, f)
	}
	return out, nil
}

// env is what every part of one benchmark run shares.
type env struct {
	o        *options
	dir      string // temp dir: binaries, data dirs, logs
	sup      *supervisor
	shoalBin string
	start    time.Time

	mu   sync.Mutex // guards logs
	logs []string   // every process log, for error reports
}

// logf prints progress to stderr.
func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%7.1fs] %s\n", time.Since(e.start).Seconds(), fmt.Sprintf(format, args...))
}

func (e *env) addLog(path string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !slices.Contains(e.logs, path) {
		e.logs = append(e.logs, path)
	}
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	os.Exit(run(o))
}

func run(o *options) int {
	if o.summarize != "" {
		if err := runSummarize(os.Stdout, o.summarize, o.summarizeBase); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal a second one kills the benchmark at once
		// (its children die with it: they have a parent-death signal).
		<-ctx.Done()
		stop()
	}()

	dir, err := os.MkdirTemp(o.workdir, "shoal-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	e := &env{o: o, dir: dir, sup: newSupervisor(), start: time.Now()}
	failed := false
	defer func() {
		e.sup.killAll()
		if failed {
			e.printLogTails(os.Stderr)
		}
		if o.keep {
			e.logf("kept %s", dir)
		} else if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
	}()
	warnIfTmpfs(e, dir)

	if o.runs > 1 || o.baseBin != "" {
		if err := repeat(ctx, e); err != nil {
			if ctx.Err() != nil {
				fmt.Fprintln(os.Stderr, "bench: interrupted")
				return 130
			}
			fmt.Fprintln(os.Stderr, "bench:", err)
			failed = true
			return 1
		}
		return 0
	}

	rep, err := benchmark(ctx, e)
	if rep != nil {
		if werr := rep.write(os.Stdout, o.jsonPath); werr != nil {
			fmt.Fprintln(os.Stderr, "bench:", werr)
			failed = true
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: interrupted")
			return 130
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		failed = true
	}
	if failed {
		return 1
	}
	return 0
}

// benchmark runs the selected measurements; a partial report is returned
// with an error.
func benchmark(ctx context.Context, e *env) (*report, error) {
	o := e.o
	rep := newReport(o)
	needShoal := o.only == "shoal" || o.only == "all" || o.failover > 0 || o.nodedown > 0 || o.containers > 0 || o.bigService > 0 || o.soak > 0
	if needShoal {
		bin, err := shoalBinary(ctx, e)
		if err != nil {
			return nil, err
		}
		e.shoalBin = bin
		rep.Meta.ShoalVersion = shoalVersion(o.shoalSrc)
		if o.shoalBin != "" {
			// A given binary: its own build's revision, not the tree's.
			if rep.Meta.ShoalVersion = binaryVersion(bin); rep.Meta.ShoalVersion == "" {
				rep.Meta.ShoalVersion = "unknown"
			}
		}
	}
	if o.only == "etcd" || o.only == "all" {
		rep.Meta.EtcdVersion = etcdVersion(ctx, o.etcdBin)
	}

	if o.only == "shoal" || o.only == "all" {
		for _, m := range o.managers {
			cells, err := benchShoal(ctx, e, m, rep)
			rep.Cells = append(rep.Cells, cells...)
			if err != nil {
				return rep, fmt.Errorf("shoal, %d managers: %w", m, err)
			}
		}
	}
	if o.only == "etcd" || o.only == "all" {
		cells, err := benchEtcd(ctx, e)
		rep.Cells = append(rep.Cells, cells...)
		if err != nil {
			return rep, fmt.Errorf("etcd: %w", err)
		}
	}
	if o.failover > 0 {
		fo, err := benchFailover(ctx, e, o.failover)
		rep.Events = append(rep.Events, fo...)
		if err != nil {
			return rep, fmt.Errorf("failover: %w", err)
		}
	}
	if o.containers > 0 {
		cs, err := benchContainers(ctx, e, o.containers, o.replicas)
		rep.Events = append(rep.Events, cs...)
		if err != nil {
			return rep, fmt.Errorf("containers: %w", err)
		}
	}
	if o.soak > 0 {
		rs, err := benchSoak(ctx, e, o.soak, o.soakTasks)
		rep.Soak, rep.SoakTasks = rs, o.soakTasks
		if err != nil {
			return rep, fmt.Errorf("soak: %w", err)
		}
	}
	if o.bigService > 0 {
		bs, err := benchBigService(ctx, e, o.bigService)
		rep.Events = append(rep.Events, bs)
		if err != nil {
			return rep, fmt.Errorf("bigservice: %w", err)
		}
	}
	if o.nodedown > 0 {
		nd, err := benchNodeDown(ctx, e, o.nodedown)
		rep.Events = append(rep.Events, nd)
		if err != nil {
			return rep, fmt.Errorf("nodedown: %w", err)
		}
	}
	return rep, nil
}

// shoalBinary returns -shoal-bin, or builds ../cmd/shoal into the temp dir.
func shoalBinary(ctx context.Context, e *env) (string, error) {
	if e.o.shoalBin != "" {
		p, err := filepath.Abs(e.o.shoalBin)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("-shoal-bin: %w", err)
		}
		return p, nil
	}
	out := filepath.Join(e.dir, "bin", "shoal")
	args := []string{"build", "-o", out}
	if e.o.buildTags != "" {
		args = append(args, "-tags", e.o.buildTags)
	}
	args = append(args, "./cmd/shoal")
	e.logf("building shoal: (cd %s && go %s)", e.o.shoalSrc, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = e.o.shoalSrc
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building shoal in %s: %w", e.o.shoalSrc, err)
	}
	// Each task's shim (and container init), found beside shoal.
	// The flags are runtime.ShimBuildArgs (static; a test in agent/runtime
	// checks this copy): this module does not import the runtime.
	shim := []string{"build", "-o", filepath.Join(filepath.Dir(out), "shoal-shim"),
		"-tags", "seccomp,netgo,osusergo", "-ldflags", "-s -w -linkmode external -extldflags -static"}
	cmd = exec.CommandContext(ctx, "go", append(shim, "./cmd/shoal-shim")...)
	cmd.Dir = e.o.shoalSrc
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building shoal-shim in %s: %w", e.o.shoalSrc, err)
	}
	return out, nil
}

// shoalVersion describes the source tree the binary was built from.
func shoalVersion(src string) string {
	out, err := exec.Command("git", "-C", src, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	v := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", src, "status", "--porcelain").Output(); err == nil && len(st) > 0 {
		v += "+dirty"
	}
	return v
}

func etcdVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(strings.TrimPrefix(line, "etcd Version:"))
}

// printLogTails shows the end of every process log after a failure.
func (e *env) printLogTails(w io.Writer) {
	e.mu.Lock()
	logs := slices.Clone(e.logs)
	e.mu.Unlock()
	for _, l := range logs {
		fmt.Fprintf(w, "---- last lines of %s\n%s\n", l, tail(l, 25))
	}
	if !e.o.keep {
		fmt.Fprintln(w, "(run with -keep to keep the data dirs and full logs)")
	}
}

// warnIfTmpfs warns when the data dirs would live in memory, where fsync
// costs nothing and the comparison means little.
func warnIfTmpfs(e *env, dir string) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil && st.Type == 0x01021994 {
		e.logf("WARNING: %s is on tmpfs: fsync is free there; use -workdir on a disk", dir)
	}
}
