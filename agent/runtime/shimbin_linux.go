package runtime

import (
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/exeseal"
)

// ShimBinaryName is the shim program (cmd/shoal-shim) beside the shoal
// binary or in PATH. It is also the container's init: libcontainer
// re-executes the binary that calls it, and this one is much smaller (and
// quicker to start) than shoal.
const ShimBinaryName = "shoal-shim"

// ShimBuildArgs are the `go build` flags of shoal-shim (after "build",
// before the package), here so that the Makefile, the tests, the e2e
// harness and the bench build the same binary (a test compares them with
// the Makefile's). Static, with Go's own resolver and user lookup: each
// task executes it three times (shim, container init, supervisor), and a
// static binary has no dynamic loader and libraries to map and relocate
// each time — about a fifth fewer CPU samples per container lifecycle
// (perf, runtime-bench --n 40, two runs each way).
var ShimBuildArgs = []string{"-tags", "seccomp,netgo,osusergo", "-ldflags", "-s -w -linkmode external -extldflags -static"}

// WithShimBinary sets the host path of the shim program. Without it the
// runtime looks for ShimBinaryName beside its own executable, then in
// PATH, when it first spawns a shim.
func WithShimBinary(path string) Option {
	return func(r *Libcontainer) error {
		if !filepath.IsAbs(path) {
			return fmt.Errorf("%w: shim binary %q must be an absolute path", ErrInvalidArgument, path)
		}
		r.shimBinary = path
		return nil
	}
}

// shimPackage is the main package every shim must be a build of.
const shimPackage = "github.com/shoal-dev/shoal/cmd/shoal-shim"

// findShimBinary returns the shim's host path (see locateShimBinary),
// once its build is known to match ours (shimBuildMismatch).
func (r *Libcontainer) findShimBinary() (string, error) {
	bin, err := r.locateShimBinary()
	if err != nil {
		return "", err
	}
	shim, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "", fmt.Errorf("%s is not a build of %s (%v): rebuild it with make build", bin, shimPackage, err)
	}
	self, _ := debug.ReadBuildInfo()
	if err := shimBuildMismatch(self, shim); err != nil {
		return "", fmt.Errorf("%s: %w", bin, err)
	}
	return bin, nil
}

// shimBuildMismatch says why a shim built as shim cannot serve a runtime
// built as self, or returns nil. The shim and the runtime speak through
// a config file and the supervisor's argv, which change between
// versions with nothing to tell an old reader: a shim left behind by an
// upgrade of shoal alone would misread them. So both must be builds of
// the same source: the same module version and VCS revision (and both
// clean or both modified) where both binaries record them; binaries
// built without VCS stamping (go test, -buildvcs=false) are only checked
// for being a shim.
func shimBuildMismatch(self, shim *debug.BuildInfo) error {
	if shim == nil || shim.Path != shimPackage {
		got := "unknown"
		if shim != nil {
			got = shim.Path
		}
		return fmt.Errorf("is a build of %s, not of %s: rebuild it with make build", got, shimPackage)
	}
	if self == nil {
		return nil
	}
	if v, w := self.Main.Version, shim.Main.Version; v != w && v != "" && w != "" && v != "(devel)" && w != "(devel)" {
		return fmt.Errorf("is shoal-shim %s but shoal is %s: install the shoal-shim of the same release beside shoal", w, v)
	}
	setting := func(bi *debug.BuildInfo, key string) string {
		for _, s := range bi.Settings {
			if s.Key == key {
				return s.Value
			}
		}
		return ""
	}
	rev, shimRev := setting(self, "vcs.revision"), setting(shim, "vcs.revision")
	if rev == "" || shimRev == "" {
		return nil
	}
	mod, shimMod := setting(self, "vcs.modified"), setting(shim, "vcs.modified")
	if rev != shimRev || mod != shimMod {
		return fmt.Errorf("was built from revision %s (modified: %s) but shoal from %s (modified: %s): "+
			"a shim older or newer than shoal misreads its config; rebuild both with make build",
			shimRev, shimMod, rev, mod)
	}
	return nil
}

// locateShimBinary returns the shim's host path: the WithShimBinary path,
// else ShimBinaryName beside our executable, else in PATH.
func (r *Libcontainer) locateShimBinary() (string, error) {
	if r.shimBinary != "" {
		if isExecutable(r.shimBinary) {
			return r.shimBinary, nil
		}
		return "", fmt.Errorf("the shim binary %s is missing or not executable", r.shimBinary)
	}
	if exe, err := os.Executable(); err == nil {
		if exe, err := filepath.EvalSymlinks(exe); err == nil {
			if p := filepath.Join(filepath.Dir(exe), ShimBinaryName); isExecutable(p) {
				return p, nil
			}
		}
	}
	if p, err := exec.LookPath(ShimBinaryName); err == nil {
		if p, err := filepath.Abs(p); err == nil && isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is neither beside the shoal binary nor in PATH "+
		"(make build builds it into bin/)", ShimBinaryName)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// errNotShim: ShimMain was run by hand.
var errNotShim = errors.New(ShimBinaryName + " is started by the shoal runtime, not by hand")

// ShimMain is the whole of cmd/shoal-shim: libcontainer's container init
// (argv[1] "init" with _LIBCONTAINER_INITPIPE set; never returns), a
// task's shim (argv[1] ShimVerb) or an exec helper (argv[1] ExecVerb,
// exechelper_linux.go). It returns the exit code. The C
// supervisor the shim turns into (supervise_linux.c) takes over before Go
// starts and never gets here.
func ShimMain(args []string) int {
	if len(args) > 1 && args[1] == "init" && os.Getenv("_LIBCONTAINER_INITPIPE") != "" {
		libcontainer.Init() // does not return
	}
	if len(args) == 3 && args[1] == ShimVerb {
		return runShim(args[2])
	}
	if len(args) == 2 && args[1] == ExecVerb {
		return runExecHelper()
	}
	fmt.Fprintln(os.Stderr, errNotShim)
	return 2
}

// sealedShim returns a sealed in-memory copy of the shim binary (a memfd
// that can never be written again), made once per runtime; shims are
// executed from it. libcontainer protects the host's binary from the
// container (CVE-2019-5736) by running the container's init from a sealed
// copy of /proc/self/exe; it makes one per container (a read-only
// overlayfs mount, or a copy of the whole binary) unless /proc/self/exe
// already is a sealed memfd, which it then uses as is. So one copy here
// (a few MB, shared by every shim's mapping) saves a mount per container.
func (r *Libcontainer) sealedShim() (*os.File, error) {
	r.exeMu.Lock()
	defer r.exeMu.Unlock()
	if r.shimExe != nil {
		return r.shimExe, nil
	}
	bin, err := r.findShimBinary()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(bin)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	m, err := exeseal.CloneBinary(f, fi.Size(), bin, r.root)
	if err != nil {
		return nil, fmt.Errorf("sealed copy of %s: %w", bin, err)
	}
	r.shimExe = m
	return m, nil
}

// shimExeFd is where a shim finds the sealed copy it was executed from
// (cmd.ExtraFiles[1]); it closes it at once.
const shimExeFd = 4
