package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/agent/runtime"
)

// BinaryEnv names an environment variable that, when set, points at a
// prebuilt shoal binary to use instead of building one.
const BinaryEnv = "SHOAL_E2E_BINARY"

// TagsEnv names an environment variable with build tags for the shoal
// binary the harness builds (like the Makefile's GOTAGS).
const TagsEnv = "SHOAL_E2E_GOTAGS"

// buildTimeout bounds `go build`: a cold build is about a minute on 2 cores.
const buildTimeout = 10 * time.Minute

var build struct {
	once sync.Once
	dir  string // temp dir holding the built binary; removed by Main
	path string
	err  error
}

// Binary returns the path of the shoal binary, building ./cmd/shoal of the
// module under test once per test binary run (CGO allowed) — or the file
// named by $SHOAL_E2E_BINARY. It fails the test if the build fails.
func Binary(t testing.TB) string {
	t.Helper()
	p, err := binaryPath()
	if err != nil {
		t.Fatalf("shoal binary: %v", err)
	}
	return p
}

func binaryPath() (string, error) {
	build.once.Do(func() {
		if p := os.Getenv(BinaryEnv); p != "" {
			build.path, build.err = filepath.Abs(p)
			return
		}
		build.path, build.err = buildShoal()
	})
	return build.path, build.err
}

// ModuleRoot returns the directory of the go.mod of the module under test.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module (go env GOMOD is empty)")
	}
	return filepath.Dir(gomod), nil
}

func buildShoal() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "shoal-e2e-bin-")
	if err != nil {
		return "", err
	}
	build.dir = dir
	out := filepath.Join(dir, "shoal")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	args := []string{"build", "-o", out}
	if tags := os.Getenv(TagsEnv); tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, "./cmd/shoal")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), root, err, b)
	}
	// Each task's shim (and container init), where the runtime looks for
	// it: beside the shoal binary.
	shim := append(append([]string{"build", "-o", filepath.Join(dir, "shoal-shim")}, runtime.ShimBuildArgs...), "./cmd/shoal-shim")
	cmd = exec.CommandContext(ctx, "go", shim...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(shim, " "), root, err, b)
	}
	// The static init of tasks with --init, where the runtime looks for
	// it: beside the shoal binary.
	cmd = exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "shoal-init"), "./cmd/shoal-init")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/shoal-init (in %s): %w\n%s", root, err, b)
	}
	fmt.Fprintf(os.Stderr, "harness: built %s in %v\n", out, time.Since(start).Round(time.Millisecond))
	return out, nil
}

func removeBuild() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	if tools.dir != "" {
		os.RemoveAll(tools.dir)
	}
}
