package runtimebench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/shoal-dev/shoal/agent/runtime"
	"github.com/shoal-dev/shoal/agent/runtime/hostclean"
)

// BenchOptions configure Bench.
type BenchOptions struct {
	N      int    // iterations of each runtime (after one warm-up each)
	Rootfs string // must hold /bin/true; empty: built from Busybox
	// Busybox is a static busybox binary for the default rootfs (default
	// /bin/busybox, Debian's busybox-static).
	Busybox string
	Runc    string // runc binary, looked up in PATH (default "runc")
	// NoSpare turns the spare shim off (WithSpareShim(false)): every
	// Start then includes a shim's start-up.
	NoSpare bool
	// Progress, if set, gets one line per iteration.
	Progress io.Writer
}

// BenchResult holds the measured lifecycle durations, in the order run.
type BenchResult struct {
	Ours, Runc []time.Duration
	// OursStart, OursWait and OursRemove split Ours: Start (shim takes
	// the task, container created and started, supervisor up), Wait
	// (/bin/true runs and exits, the supervisor cleans up and records the
	// exit) and Remove.
	OursStart, OursWait, OursRemove []time.Duration
	Rootfs                          string // "" when a temporary one was built
	RuncPath                        string
}

// Bench measures a container's whole lifecycle, create → start → exit →
// clean-up, of /bin/true: through this runtime (Start, Wait, Remove: shim,
// libcontainer, cgroups, state dir) and through the runc CLI (`runc run`,
// which creates, starts, waits and deletes) with an equivalent config
// (OCISpec: same namespaces, capabilities, seccomp profile, masked paths).
// Runs alternate, ours then runc's, so that machine noise hits both.
//
// The shim is shoal-shim beside the caller's binary or in PATH (as for
// the agent): for a meaningful figure, the one built with it
// (`make bench-runtime`). Bench must run as root,
// and removes everything it created: tasks, runc state, cgroups (under
// its own parent), temporary dirs.
func Bench(ctx context.Context, o BenchOptions) (res *BenchResult, retErr error) {
	if err := requireRoot(os.Geteuid()); err != nil {
		return nil, err
	}
	if o.N < 1 {
		return nil, fmt.Errorf("%w: n must be at least 1", runtime.ErrInvalidArgument)
	}
	if o.Runc == "" {
		o.Runc = "runc"
	}
	runc, err := exec.LookPath(o.Runc)
	if err != nil {
		return nil, fmt.Errorf("runc CLI: %w", err)
	}
	res = &BenchResult{Rootfs: o.Rootfs, RuncPath: runc}
	tmp, err := os.MkdirTemp(benchTempBase(), "shoal-runtime-bench-")
	if err != nil {
		return nil, err
	}
	parent := fmt.Sprintf("/shoal-runtime-bench-%d", os.Getpid())
	runcRoot := filepath.Join(tmp, "runc-state")
	rt, err := runtime.NewLibcontainer(filepath.Join(tmp, "state"), nil, runtime.WithCgroupParent(parent), runtime.WithSpareShim(!o.NoSpare))
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	defer func() {
		rt.Close()
		if err := benchCleanup(rt, runc, runcRoot, parent, tmp); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("clean-up: %w", err))
		}
	}()

	rootfs := o.Rootfs
	if rootfs == "" {
		rootfs = filepath.Join(tmp, "rootfs")
		if err := busyboxRootfs(rootfs, o.Busybox); err != nil {
			return nil, err
		}
	} else if err := checkBenchRootfs(rootfs); err != nil {
		return nil, err
	}
	bundle := filepath.Join(tmp, "bundle")
	if err := writeRuncBundle(bundle, rootfs, parent); err != nil {
		return nil, err
	}
	logDir := filepath.Join(tmp, "logs")
	if err := os.Mkdir(logDir, 0o700); err != nil {
		return nil, err
	}

	var phase [3]time.Duration // of the last run of ours
	ours := func(i int) (time.Duration, error) {
		id := fmt.Sprintf("bench-%d", i)
		spec := runtime.Spec{ID: id, Rootfs: rootfs, Args: []string{"/bin/true"}}
		t0 := time.Now()
		if err := rt.Start(ctx, spec, filepath.Join(logDir, id+".log")); err != nil {
			return 0, err
		}
		t1 := time.Now()
		st, err := rt.Wait(ctx, id)
		if err != nil {
			return 0, err
		}
		t2 := time.Now()
		if err := rt.Remove(ctx, id); err != nil {
			return 0, err
		}
		d := time.Since(t0)
		phase = [3]time.Duration{t1.Sub(t0), t2.Sub(t1), d - t2.Sub(t0)}
		if st.Status != runtime.StatusExited || st.Exit.Code != 0 {
			return 0, fmt.Errorf("task %q: /bin/true did not exit 0: %+v %+v", id, st, st.Exit)
		}
		return d, nil
	}
	theirs := func(i int) (time.Duration, error) {
		id := fmt.Sprintf("runc-%d", i)
		// stdio stays nil, i.e. /dev/null: with a pipe, runc's container
		// would inherit it and the run would wait on it.
		cmd := exec.CommandContext(ctx, runc, "--root", runcRoot, "run", "--bundle", bundle, id)
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		if err != nil {
			return 0, fmt.Errorf("runc run %s: %w", id, err)
		}
		return d, nil
	}
	// The spare shim is made ready, untimed, before each run of either
	// kind: ours then measures the steady state of an agent with a spare,
	// and the spare's start-up never competes with runc for the CPU.
	settle := func() error { return rt.Prepare(ctx) }
	// One warm-up of each (page cache, first cgroup creation), not counted.
	for i := -1; i < o.N; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := settle(); err != nil {
			return nil, err
		}
		a, err := ours(i + 1)
		if err != nil {
			return nil, err
		}
		if err := settle(); err != nil {
			return nil, err
		}
		b, err := theirs(i + 1)
		if err != nil {
			return nil, err
		}
		if i < 0 {
			continue
		}
		res.Ours, res.Runc = append(res.Ours, a), append(res.Runc, b)
		res.OursStart = append(res.OursStart, phase[0])
		res.OursWait = append(res.OursWait, phase[1])
		res.OursRemove = append(res.OursRemove, phase[2])
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "%3d  shoal %6.1f ms  runc %6.1f ms\n", i+1, ms(a), ms(b))
		}
	}
	return res, nil
}

// PairedRatio is the median over iterations of ours/runc's duration.
// Runs alternate, so each pair saw about the same machine load: this is
// steadier than the ratio of the medians on a noisy host.
func (r *BenchResult) PairedRatio() float64 {
	n := min(len(r.Ours), len(r.Runc))
	if n == 0 {
		return 0
	}
	rs := make([]float64, n)
	for i := range n {
		rs[i] = float64(r.Ours[i]) / float64(r.Runc[i])
	}
	slices.Sort(rs)
	if n%2 == 1 {
		return rs[n/2]
	}
	return (rs[n/2-1] + rs[n/2]) / 2
}

// benchTempBase picks where Bench keeps its state: the usual temp dir,
// unless that is inside the binary's directory (a shoal binary in /tmp),
// where libcontainer would copy the binary on every start (see
// runtime.InsideExeDir) and the figure would measure that layout, not the
// runtime.
func benchTempBase() string {
	for _, d := range []string{os.TempDir(), "/var/tmp", "/run", "/dev/shm"} {
		if _, inside := runtime.InsideExeDir(d); !inside {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() {
				return d
			}
		}
	}
	return os.TempDir()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func requireRoot(euid int) error {
	if euid != 0 {
		return errors.New("runtime benchmark: must run as root (it creates containers)")
	}
	return nil
}

// Percentile returns the p-th percentile (0 < p ≤ 100, nearest rank) of
// ds, 0 if ds is empty.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(p/100*float64(len(s))+0.999999) - 1 // ceil(p/100·n) - 1
	return s[max(0, min(rank, len(s)-1))]
}

// busyboxRootfs makes a rootfs holding a static busybox as /bin/busybox
// and /bin/true -> busybox (busybox runs the applet named by argv[0]).
func busyboxRootfs(root, busybox string) error {
	if busybox == "" {
		busybox = "/bin/busybox"
	}
	b, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("default rootfs needs a static busybox (Debian busybox-static): %w", err)
	}
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), b, 0o755); err != nil {
		return err
	}
	return os.Symlink("busybox", filepath.Join(root, "bin/true"))
}

func checkBenchRootfs(root string) error {
	if !filepath.IsAbs(root) {
		return fmt.Errorf("%w: rootfs %q must be absolute", runtime.ErrInvalidArgument, root)
	}
	if _, err := os.Lstat(filepath.Join(root, "bin/true")); err != nil {
		return fmt.Errorf("%w: rootfs %q has no /bin/true: %v", runtime.ErrInvalidArgument, root, err)
	}
	return nil
}

// writeRuncBundle writes bundle/config.json for runc: the spec Start would
// run for /bin/true, with its cgroup under parent.
func writeRuncBundle(bundle, rootfs, parent string) error {
	s, err := runtime.OCISpec(runtime.Spec{ID: "runc", Rootfs: rootfs, Args: []string{"/bin/true"}}, parent)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600)
}

// benchCleanup removes what Bench made, whatever state it stopped in.
func benchCleanup(rt *runtime.Libcontainer, runc, runcRoot, parent, tmp string) error {
	ctx := context.Background()
	var errs []error
	if sts, err := rt.List(ctx); err == nil {
		for _, st := range sts {
			errs = append(errs, rt.Remove(ctx, st.ID))
		}
	}
	if ents, err := os.ReadDir(runcRoot); err == nil {
		for _, e := range ents {
			if out, err := exec.Command(runc, "--root", runcRoot, "delete", "--force", e.Name()).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("runc delete %s: %v: %s", e.Name(), err, out))
			}
		}
	}
	errs = append(errs, runtime.RemoveCgroupParent(parent))
	if m, err := hostclean.MountsUnder(tmp); err != nil || len(m) > 0 {
		// Never RemoveAll through a mount.
		errs = append(errs, fmt.Errorf("mounts left under %s: %v %v", tmp, m, err))
	} else {
		errs = append(errs, os.RemoveAll(tmp))
	}
	return errors.Join(errs...)
}
