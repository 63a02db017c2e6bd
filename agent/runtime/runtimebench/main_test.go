package runtimebench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/shoal-dev/shoal/agent/runtime"
)

// probeBin is the runtime's static test program (agent/runtime/testdata),
// built in TestMain; run as /bin/true it exits 0.
var probeBin string

func TestMain(m *testing.M) {
	runtime.MaybeInit()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("runtime benchmark tests need root; skipping")
		return 0
	}
	dir, err := os.MkdirTemp("", "shoal-runtimebench-test-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(dir)
	probeBin = filepath.Join(dir, "probe")
	cmd := exec.Command("go", "build", "-o", probeBin, "../testdata/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Printf("building probe: %v\n%s", err, out)
		return 1
	}
	// The runtime finds its shim in PATH.
	shim := filepath.Join(dir, "bin", runtime.ShimBinaryName)
	cmd = exec.Command("go", append(append([]string{"build", "-o", shim}, runtime.ShimBuildArgs...), "github.com/shoal-dev/shoal/cmd/shoal-shim")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Printf("building shoal-shim: %v\n%s", err, out)
		return 1
	}
	os.Setenv("PATH", filepath.Dir(shim)+":"+os.Getenv("PATH"))
	return m.Run()
}

// newRootfs is a minimal rootfs holding the probe as /bin/probe.
func newRootfs(t testing.TB) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(probeBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/probe"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}
