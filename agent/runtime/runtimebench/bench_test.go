package runtimebench

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/agent/runtime"
)

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	cases := []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {90, 9}, {100, 10}, {0, 1}, {10, 1}, {11, 2}}
	for _, c := range cases {
		if got := Percentile(ds, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if Percentile(nil, 50) != 0 {
		t.Error("empty")
	}
	if ds[0] != 5 {
		t.Error("Percentile sorted its argument")
	}
}

func TestPairedRatio(t *testing.T) {
	r := &BenchResult{Ours: []time.Duration{10, 30, 20, 8}, Runc: []time.Duration{20, 30, 10, 8}}
	// ratios 0.5, 1, 2, 1 → median of 1, 1 = 1
	if got := r.PairedRatio(); got != 1 {
		t.Errorf("got %v", got)
	}
	r.Ours = r.Ours[:3]
	r.Runc = r.Runc[:3] // 0.5, 1, 2
	if got := r.PairedRatio(); got != 1 {
		t.Errorf("odd: got %v", got)
	}
	if (&BenchResult{}).PairedRatio() != 0 {
		t.Error("empty")
	}
}

func TestBenchRefusals(t *testing.T) {
	if err := requireRoot(1000); err == nil {
		t.Error("non-root accepted")
	}
	ctx := context.Background()
	if _, err := Bench(ctx, BenchOptions{N: 0}); !errors.Is(err, runtime.ErrInvalidArgument) {
		t.Errorf("n=0: %v", err)
	}
	if _, err := Bench(ctx, BenchOptions{N: 1, Runc: "/nonexistent/runc"}); err == nil {
		t.Error("missing runc accepted")
	}
	runc := runcOrSkip(t)
	if _, err := Bench(ctx, BenchOptions{N: 1, Runc: runc, Busybox: "/nonexistent"}); err == nil || !strings.Contains(err.Error(), "busybox") {
		t.Errorf("missing busybox: %v", err)
	}
	empty := t.TempDir()
	if _, err := Bench(ctx, BenchOptions{N: 1, Runc: runc, Rootfs: empty}); !errors.Is(err, runtime.ErrInvalidArgument) {
		t.Errorf("rootfs without /bin/true: %v", err)
	}
	if _, err := Bench(ctx, BenchOptions{N: 1, Runc: runc, Rootfs: "relative"}); !errors.Is(err, runtime.ErrInvalidArgument) {
		t.Errorf("relative rootfs: %v", err)
	}
	// None of these left their temporary dirs.
	if left, _ := filepath.Glob(filepath.Join(benchTempBase(), "shoal-runtime-bench-*")); len(left) > 0 {
		t.Errorf("left: %v", left)
	}
}

func runcOrSkip(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("runc CLI not installed")
	}
	return p
}

// TestBenchSmall runs Bench for real (two iterations) with the probe as
// /bin/true, and checks that it cleans up after itself.
func TestBenchSmall(t *testing.T) {
	runc := runcOrSkip(t)
	rootfs := newRootfs(t)
	if err := os.Symlink("probe", filepath.Join(rootfs, "bin/true")); err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	res, err := Bench(context.Background(), BenchOptions{N: 2, Rootfs: rootfs, Runc: runc, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Ours) != 2 || len(res.Runc) != 2 || res.Ours[0] <= 0 || res.Runc[0] <= 0 {
		t.Errorf("result %+v", res)
	}
	if n := strings.Count(progress.String(), "\n"); n != 2 {
		t.Errorf("progress has %d lines:\n%s", n, progress.String())
	}
	if left, _ := filepath.Glob(filepath.Join(benchTempBase(), "shoal-runtime-bench-*")); len(left) > 0 {
		t.Errorf("left: %v", left)
	}
	if dirs, _ := filepath.Glob("/sys/fs/cgroup/*/shoal-runtime-bench-*"); len(dirs) > 0 {
		t.Errorf("cgroups left: %v", dirs)
	}
}

// TestBusyboxRootfs builds the default rootfs from the busybox given.
func TestBusyboxRootfs(t *testing.T) {
	root := filepath.Join(t.TempDir(), "r")
	// Any file does as the "busybox": it is copied, not run.
	if err := busyboxRootfs(root, probeBin); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(root, "bin/true")); err != nil || l != "busybox" {
		t.Errorf("bin/true -> %q, %v", l, err)
	}
	if err := checkBenchRootfs(root); err != nil {
		t.Error(err)
	}
}

// TestTempBaseOutsideExeDir: Bench keeps its state outside the binary's
// directory, where libcontainer would copy the binary on every start.
func TestTempBaseOutsideExeDir(t *testing.T) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(exe)
	if _, inside := runtime.InsideExeDir(benchTempBase()); inside && dir != "/" {
		t.Errorf("bench temp base %s is inside %s", benchTempBase(), dir)
	}
}
