package runtime

import (
	"os"
	"path/filepath"
	"testing"
)

func TestInsideExeDir(t *testing.T) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(exe)
	for p, want := range map[string]bool{
		dir: true, filepath.Join(dir, "state"): true, dir + "-sibling": false, "/nonexistent/x": dir == "/",
	} {
		if _, got := InsideExeDir(p); got != want {
			t.Errorf("InsideExeDir(%q) = %v, want %v", p, got, want)
		}
	}
}
