package runtime

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// TestWarnsAboutStateInsideExeDir: the slow layout is reported.
func TestWarnsAboutStateInsideExeDir(t *testing.T) {
	exe, _ := os.Readlink("/proc/self/exe")
	root := filepath.Join(filepath.Dir(exe), "state-inside-"+strconv.Itoa(os.Getpid()))
	t.Cleanup(func() { os.RemoveAll(root) })
	var buf strings.Builder
	rt, err := NewLibcontainer(root, slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	rt.Close()
	if !strings.Contains(buf.String(), "inside the binary's directory") {
		t.Errorf("no warning: %q", buf.String())
	}
	buf.Reset()
	rt, _ = NewLibcontainer(filepath.Join(t.TempDir(), "state"), slog.New(slog.NewTextHandler(&buf, nil)))
	rt.Close()
	if buf.Len() != 0 {
		t.Errorf("warning for a root elsewhere: %q", buf.String())
	}
}
