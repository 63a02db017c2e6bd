package runtime

import (
	"context"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/seccomp"
)

// pidfds returns the descriptors of this process that are pidfds.
func pidfds(t *testing.T) map[string]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && l == "anon_inode:[pidfd]" {
			out[e.Name()] = true
		}
	}
	return out
}

// Stop leaves no pidfd behind in the agent. It used libcontainer's
// Container.Signal, whose os.FindProcess opens a pidfd that only a
// finalizer closes: an idle `shoal dev` held one fd per stopped task
// (133 fds instead of 33 after a 100-task round) until the next GC. With
// the GC off, such an fd would stay for good.
func TestStopLeavesNoPidfd(t *testing.T) {
	if !seccomp.Enabled {
		t.Skip("built without -tags seccomp: Start refuses to run containers")
	}
	// No spare shim: no shim is spawned (with its pidfd) behind our back.
	rt, err := NewLibcontainer(filepath.Join(t.TempDir(), "state"), nil, WithCgroupParent(testCgroupParent), WithSpareShim(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	defer debug.SetGCPercent(debug.SetGCPercent(-1))

	spec, logPath := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep", "exit-on-term"}})
	waitLog(t, logPath, "sleeping")
	before := pidfds(t) // the shim's (our child, through exec), if any
	if err := rt.Stop(context.Background(), spec.ID, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for fd := range pidfds(t) {
		if !before[fd] {
			t.Errorf("Stop left pidfd %s open (pidfds before Stop: %v)", fd, before)
		}
	}
	if st := waitExit(t, rt, spec.ID); st.Exit.Code != 42 {
		t.Fatalf("exit-on-term: %+v", st.Exit)
	}
}
