package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/seccomp"
)

func newInitRuntime(t *testing.T) *Libcontainer {
	t.Helper()
	if !seccomp.Enabled {
		t.Skip("built without -tags seccomp: Start refuses to run containers")
	}
	rt, err := NewLibcontainer(filepath.Join(t.TempDir(), "state"), nil, WithCgroupParent(testCgroupParent), WithInitBinary(initBin))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// TestInitForwardsStopSignal: a program with the default action for
// SIGTERM (no handler, like a shell or a C program) ignores it as the
// container's PID 1 and is only SIGKILLed after the grace period; under
// the init it is PID 2, the forwarded SIGTERM ends it at once, and the
// container's status is the child's (128+15), not a kill.
func TestInitForwardsStopSignal(t *testing.T) {
	rt := newInitRuntime(t)

	// Without the init: the stop signal is lost.
	spec, logPath := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep", "dfl-term"}})
	waitLog(t, logPath, "sleeping")
	if err := rt.Stop(context.Background(), spec.ID, syscall.SIGTERM, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if st := waitExit(t, rt, spec.ID); st.Exit.Signal != int(syscall.SIGKILL) {
		t.Fatalf("without an init, PID 1 with SIGTERM's default action should need SIGKILL: %+v", st.Exit)
	}

	// With it: a grace period far longer than the test's own deadline, so
	// only the forwarded signal can end the container in time.
	spec, logPath = start(t, rt, Spec{Init: true, Args: []string{"/bin/probe", "sleep", "dfl-term"}})
	waitLog(t, logPath, "sleeping")
	st := running(t, rt, spec.ID)
	if comm := readTrim(t, fmt.Sprintf("/proc/%d/comm", st.Pid)); comm != "init" {
		t.Errorf("the container's PID 1 is %q, want the init", comm)
	}
	t.Logf("init (PID 1) memory: %s", initMemory(t, st.Pid))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := rt.Stop(ctx, spec.ID, syscall.SIGTERM, time.Hour); err != nil {
		t.Fatalf("stop under the init: %v", err)
	}
	st = waitExit(t, rt, spec.ID)
	if st.Exit.Signal != 0 || st.Exit.Code != 128+int(syscall.SIGTERM) {
		t.Errorf("under the init: exit %+v, want code 143 (the child's SIGTERM) and no kill", st.Exit)
	}
}

// TestInitReapsAndExitsWithChildStatus: an orphan re-parented to PID 1
// stays a zombie when PID 1 never waits; the init reaps it. The init
// exits with the child's code.
func TestInitReapsAndExitsWithChildStatus(t *testing.T) {
	rt := newInitRuntime(t)

	spec, logPath := start(t, rt, Spec{Args: []string{"/bin/probe", "orphans", "2s"}})
	if st := waitExit(t, rt, spec.ID); st.Exit.Code != 7 {
		t.Fatalf("without an init the orphan should stay a zombie: exit %+v, log %s", st.Exit, readTrim(t, logPath))
	}

	spec, logPath = start(t, rt, Spec{Init: true, Args: []string{"/bin/probe", "orphans", "60s"}})
	if st := waitExit(t, rt, spec.ID); st.Exit.Code != 0 {
		t.Fatalf("under the init: exit %+v, log %s", st.Exit, readTrim(t, logPath))
	}

	// Also as a user other than root, on a read-only rootfs: the init is
	// on the runtime's /dev, executable by anyone.
	spec, _ = start(t, rt, Spec{Init: true, User: "app", ReadOnlyRootfs: true, Args: []string{"/bin/probe", "exit", "7"}})
	if st := waitExit(t, rt, spec.ID); st.Exit.Code != 7 || st.Exit.Signal != 0 {
		t.Errorf("exit 7 under the init: %+v", st.Exit)
	}
	// A command the image does not have: the init says so and exits 127.
	spec, logPath = start(t, rt, Spec{Init: true, Args: []string{"nosuch"}})
	if st := waitExit(t, rt, spec.ID); st.Exit.Code != 127 {
		t.Errorf("unknown command under the init: %+v", st.Exit)
	}
	if b, _ := os.ReadFile(logPath); !strings.Contains(string(b), "nosuch") {
		t.Errorf("log does not name the missing command: %s", b)
	}
}

// TestInitBinaryMissing: asking for an init on a node without one is a
// clear error, before anything is created.
func TestInitBinaryMissing(t *testing.T) {
	if !seccomp.Enabled {
		t.Skip("built without -tags seccomp")
	}
	rt, err := NewLibcontainer(filepath.Join(t.TempDir(), "state"), nil, WithCgroupParent(testCgroupParent),
		WithInitBinary(filepath.Join(t.TempDir(), "none")))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if err := rt.CheckInit(); err == nil {
		t.Error("CheckInit: no error without the binary")
	}
	if err := newInitRuntime(t).CheckInit(); err != nil {
		t.Errorf("CheckInit with the binary: %v", err)
	}
	err = rt.Start(context.Background(), Spec{ID: newID(), Rootfs: "/nonexistent", Init: true, Args: []string{"/bin/probe"}},
		filepath.Join(t.TempDir(), "log"))
	if err == nil || !strings.Contains(err.Error(), "init binary") {
		t.Fatalf("got %v", err)
	}
}

// initMemory is the init's memory: RssAnon is its own, RssFile the
// binary's pages, shared through the page cache by every container's init.
func initMemory(t *testing.T, pid int) string {
	return fmt.Sprintf("VmRSS %s (RssAnon %s private, RssFile %s shared by all inits)",
		procStatus(t, pid, "VmRSS"), procStatus(t, pid, "RssAnon"), procStatus(t, pid, "RssFile"))
}
