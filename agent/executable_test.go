package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// executableIn resolves every symlink inside the rootfs, never on the
// host: an image's /bin, /usr/bin or /bin/x pointing at an absolute host
// path must not find the host's programs.
func TestExecutableInStaysInRootfs(t *testing.T) {
	host := t.TempDir() // stands for the host's filesystem
	hostDir := filepath.Join(host, "hostbin")
	mustMkdir(t, hostDir)
	mustWrite(t, filepath.Join(hostDir, "x"), 0o755)

	rootfs := filepath.Join(t.TempDir(), "rootfs")
	mustMkdir(t, filepath.Join(rootfs, "usr", "bin"))
	mustWrite(t, filepath.Join(rootfs, "usr", "bin", "inside"), 0o755)
	mustWrite(t, filepath.Join(rootfs, "usr", "bin", "noexec"), 0o644)
	// /bin is a directory symlink to an absolute host path.
	mustSymlink(t, hostDir, filepath.Join(rootfs, "bin"))
	// /sbin holds symlinks to absolute host paths and climbing ones.
	mustMkdir(t, filepath.Join(rootfs, "sbin"))
	mustSymlink(t, filepath.Join(hostDir, "x"), filepath.Join(rootfs, "sbin", "x"))
	mustSymlink(t, "../../../../../../.."+filepath.Join(hostDir, "x"), filepath.Join(rootfs, "sbin", "climb"))
	// Links that resolve inside the rootfs work as in the container.
	mustSymlink(t, "/usr/bin/inside", filepath.Join(rootfs, "sbin", "abs"))
	mustSymlink(t, "../usr/bin/inside", filepath.Join(rootfs, "sbin", "rel"))
	mustSymlink(t, "usr/bin", filepath.Join(rootfs, "ubin"))
	mustSymlink(t, "loop", filepath.Join(rootfs, "sbin", "loop"))

	for p, want := range map[string]bool{
		"/bin/x":                false, // the host's /…/hostbin/x through a directory link
		"/sbin/x":               false, // the host's file through an absolute link
		"/sbin/climb":           false,
		"/usr/bin/inside":       true,
		"/sbin/abs":             true,
		"/sbin/rel":             true,
		"/ubin/inside":          true,
		"/../../usr/bin/inside": true, // ".." stops at the root, as in the container
		"/usr/bin/noexec":       false,
		"/usr/bin":              false, // a directory
		"/sbin/loop":            false,
		"/nonexistent":          false,
	} {
		if got := executableIn(rootfs, p); got != want {
			t.Errorf("executableIn(%s) = %v, want %v", p, got, want)
		}
	}
	if err := checkExecutable(rootfs, "x", []string{"PATH=/bin:/sbin"}); err == nil {
		t.Error("checkExecutable found x through links to the host")
	}
}

func mustMkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, []byte("#!/bin/true\n"), mode); err != nil {
		t.Fatal(err)
	}
}

func mustSymlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}
