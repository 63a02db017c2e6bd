package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSupervisorLogDiskFull: when the log's file system fills up in the
// middle of a record, the supervisor cuts the partial record off, so that
// the file stays whole JSON lines (a torn record would join the next one
// into a line ReadLog cannot decode, and everything after it would be
// lost), and the container still runs to its end.
func TestSupervisorLogDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (mounts a small tmpfs)")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=8k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Error(err)
		}
	})
	log := filepath.Join(mnt, "task.log")
	line := strings.Repeat("x", 1000)
	dir, stderr := runSupervised(t, `i=0; while [ $i -lt 20 ]; do echo `+line+`; i=$((i+1)); done; exit 3`,
		superviseArgs{LogPath: log, LogMaxBytes: 1 << 20, LogMaxFiles: 1})
	if ex := mustExit(t, dir); ex.Code != 3 {
		t.Errorf("exit code %d, want 3", ex.Code)
	}
	if !strings.Contains(stderr, "log write") || !strings.Contains(strings.ToLower(stderr), syscall.ENOSPC.Error()) {
		t.Errorf("the full disk is not reported: %q", stderr)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		t.Fatalf("log of %d bytes does not end with a whole record: ...%q", len(b), b[max(0, len(b)-40):])
	}
	recs, err := ReadLog(log)
	if err != nil {
		t.Fatalf("log does not decode after a full disk: %v", err)
	}
	if len(recs) == 0 || len(recs) >= 20 || len(recs) != bytes.Count(b, []byte("\n")) {
		t.Fatalf("%d records in %d lines", len(recs), bytes.Count(b, []byte("\n")))
	}
	for i, r := range recs {
		if r.Log != line+"\n" {
			t.Fatalf("record %d is %d bytes, not the line", i, len(r.Log))
		}
	}
}

// TestShimBuildMismatch: a shim that is not a build of cmd/shoal-shim,
// or of another release or revision than the runtime's, is refused with
// the reason; builds without VCS stamps are only checked for being a
// shim.
func TestShimBuildMismatch(t *testing.T) {
	bi := func(path, version, rev, modified string) *debug.BuildInfo {
		b := &debug.BuildInfo{Path: path, Main: debug.Module{Path: "github.com/shoal-dev/shoal", Version: version}}
		if rev != "" {
			b.Settings = []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
		}
		return b
	}
	const shoal = "github.com/shoal-dev/shoal/cmd/shoal"
	for _, c := range []struct {
		name      string
		self, sh  *debug.BuildInfo
		wantError string
	}{
		{"same revision", bi(shoal, "(devel)", "abc", "false"), bi(shimPackage, "(devel)", "abc", "false"), ""},
		{"same revision, both modified", bi(shoal, "(devel)", "abc", "true"), bi(shimPackage, "(devel)", "abc", "true"), ""},
		{"no vcs stamps", bi(shoal, "(devel)", "", ""), bi(shimPackage, "(devel)", "", ""), ""},
		{"runtime without build info", nil, bi(shimPackage, "(devel)", "abc", "false"), ""},
		{"older shim", bi(shoal, "(devel)", "def", "false"), bi(shimPackage, "(devel)", "abc", "false"), "built from revision abc"},
		{"modified shim", bi(shoal, "(devel)", "abc", "false"), bi(shimPackage, "(devel)", "abc", "true"), "(modified: true)"},
		{"other release", bi(shoal, "v1.2.0", "", ""), bi(shimPackage, "v1.1.0", "", ""), "is shoal-shim v1.1.0 but shoal is v1.2.0"},
		{"not a shim", bi(shoal, "(devel)", "abc", "false"), bi(shoal, "(devel)", "abc", "false"), "is a build of " + shoal},
		{"no build info", bi(shoal, "(devel)", "abc", "false"), nil, "is a build of unknown"},
	} {
		err := shimBuildMismatch(c.self, c.sh)
		if c.wantError == "" && err != nil || c.wantError != "" && (err == nil || !strings.Contains(err.Error(), c.wantError)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.wantError)
		}
	}
}

// TestShimNotAShim: WithShimBinary naming a binary that is not
// shoal-shim (a C program, a Go program of another package) fails the
// first start with the reason and leaves nothing behind.
func TestShimNotAShim(t *testing.T) {
	for _, bin := range []string{"/bin/sh", os.Args[0]} {
		root := filepath.Join(t.TempDir(), "state")
		rt, err := NewLibcontainer(root, nil, WithCgroupParent(testCgroupParent), WithShimBinary(bin))
		if err != nil {
			t.Fatal(err)
		}
		err = rt.Start(context.Background(), Spec{ID: "notashim", Rootfs: t.TempDir(), Args: []string{"/bin/true"}}, filepath.Join(t.TempDir(), "log"))
		rt.Close()
		if err == nil || !strings.Contains(err.Error(), bin) || !strings.Contains(err.Error(), shimPackage) {
			t.Errorf("Start with shim %s: %v", bin, err)
		}
		if _, err := os.Stat(filepath.Join(root, "notashim")); !os.IsNotExist(err) {
			t.Errorf("state dir left: %v", err)
		}
	}
}

// TestSupervisorExitDurable: exit.json is written as temp file, fsync,
// rename, fsync of the task dir — in that order (strace of the
// supervisor), so that a crash never leaves an empty exit.json nor loses
// the rename.
func TestSupervisorExitDurable(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatalf("strace (scripts/setup.sh installs it): %v", err)
	}
	dir := t.TempDir()
	trace := filepath.Join(t.TempDir(), "trace")
	a := superviseArgs{TaskDir: dir, ContainerState: filepath.Join(dir, "ctr"), LogPath: filepath.Join(dir, "task.log"),
		LogMaxBytes: defaultLogMaxBytes, LogMaxFiles: defaultLogMaxFiles, Ready: -1}
	b, err := json.Marshal(superviseJob{Shim: shimBin, Script: "exit 0", Args: a})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(strace, "-f", "-qq", "-o", trace, "-e", "trace=fsync,fdatasync,openat,rename,renameat,renameat2", os.Args[0])
	cmd.Env = append(os.Environ(), superviseHelperEnv+"="+string(b))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("supervisor under strace: %v\n%s", err, out)
	}
	mustExit(t, dir)
	tb, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	// From the temp file's creation on: fsync(tmp), rename, open(dir), fsync(dir).
	s := string(tb)
	i := strings.Index(s, ".exit.json.")
	if i < 0 {
		t.Fatalf("no temp file in the trace:\n%s", s)
	}
	var steps []string
	for _, l := range strings.Split(s[i:], "\n") {
		switch {
		case strings.Contains(l, "fsync(") || strings.Contains(l, "fdatasync("):
			steps = append(steps, "fsync")
		case strings.Contains(l, "rename") && strings.Contains(l, "exit.json"):
			steps = append(steps, "rename")
		case strings.Contains(l, "openat(") && strings.Contains(l, `"`+dir+`"`) && strings.Contains(l, "O_DIRECTORY"):
			steps = append(steps, "open dir")
		}
	}
	if want := "fsync,rename,open dir,fsync"; strings.Join(steps, ",") != want {
		t.Fatalf("exit.json written as %v, want %s; trace:\n%s", steps, want, s[i:])
	}
}

// TestContainerGetsOnlyStdio: the container's process holds fds 0, 1 and
// 2 only — nothing of the agent (its socket to the shim), the shim (its
// log, the sealed binary) or libcontainer leaks into it — and the
// supervisor holds its pipes, the task's shim.log and the agent's socket
// no longer.
func TestContainerGetsOnlyStdio(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	st := running(t, rt, spec.ID)
	fds := func(pid int) map[string]string {
		t.Helper()
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, e := range ents {
			target, _ := os.Readlink(filepath.Join(dir, e.Name()))
			out[e.Name()] = target
		}
		return out
	}
	// "running" is recorded as the container's init is released to exec
	// the program; until the exec its own descriptors (the init socket,
	// the root) are still open: poll until the program runs.
	for deadline := time.Now().Add(10 * time.Second); ; {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", st.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(comm)) == "probe" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s the container's init is still %q, not the probe", strings.TrimSpace(string(comm)))
		}
		time.Sleep(5 * time.Millisecond) // poll interval, not synchronisation
	}
	got := fds(st.Pid)
	for fd, target := range got {
		// The probe is a Go program: its runtime's epoll and eventfd
		// are its own.
		if fd != "0" && fd != "1" && fd != "2" && target != "anon_inode:[eventpoll]" && target != "anon_inode:[eventfd]" {
			t.Errorf("the container's init holds fd %s (%s): fds %v", fd, target, got)
		}
	}
	// Its parent is the supervisor.
	ppid, err := strconv.Atoi(procStatus(t, st.Pid, "PPid"))
	if err != nil {
		t.Fatal(err)
	}
	// The supervisor closes the agent's socket just after telling it the
	// task runs, which is when Start returns: poll.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var sockets []string
		for fd, target := range fds(ppid) {
			if strings.HasPrefix(target, "socket:") {
				sockets = append(sockets, fd)
			}
		}
		if len(sockets) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the supervisor still holds the agent's socket (fds %v): %v", sockets, fds(ppid))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSupervisorFileSizeLimit: a file size limit inherited from the agent
// (ulimit -f) does not kill the supervisor when the log reaches it
// (SIGXFSZ): the log keeps whole records, and the exit is recorded.
func TestSupervisorFileSizeLimit(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatalf("prlimit (util-linux): %v", err)
	}
	dir := t.TempDir()
	log := filepath.Join(dir, "task.log")
	a := superviseArgs{TaskDir: dir, ContainerState: filepath.Join(dir, "ctr"), LogPath: log,
		LogMaxBytes: 1 << 20, LogMaxFiles: 1, Ready: -1}
	line := strings.Repeat("y", 1000)
	b, err := json.Marshal(superviseJob{Shim: shimBin, Script: `i=0; while [ $i -lt 20 ]; do echo ` + line + `; i=$((i+1)); done; exit 4`, Args: a})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(prlimit, "--fsize=8192", os.Args[0])
	cmd.Env = append(os.Environ(), superviseHelperEnv+"="+string(b))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("supervisor with a file size limit: %v\n%s", err, out)
	}
	if ex := mustExit(t, dir); ex.Code != 4 {
		t.Errorf("exit code %d, want 4", ex.Code)
	}
	recs, err := ReadLog(log)
	if err != nil || len(recs) == 0 || len(recs) >= 20 {
		t.Fatalf("%d records (%v)", len(recs), err)
	}
}
