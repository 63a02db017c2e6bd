package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/seccomp"
	"golang.org/x/sys/unix"
)

var (
	probeBin string // static test program, built in TestMain
	initBin  string // cmd/shoal-init, built in TestMain
	shimBin  string // cmd/shoal-shim, built in TestMain (in PATH)
	// hostNS are this process' namespaces read in TestMain, before any
	// thread switched namespaces (utsHostname, libcontainer's mount
	// helpers) and possibly left the main thread elsewhere.
	hostNS  = map[string]string{}
	baseDir string
	seq     atomic.Int64
	// testCgroupParent is this run's own cgroup parent, removed at the
	// end (see checkLeftovers), so that tests never touch /shoal.
	testCgroupParent = fmt.Sprintf("/shoal-test-%d", os.Getpid())
)

func TestMain(m *testing.M) {
	MaybeInit() // libcontainer re-executes this test binary for Exec
	maybeHelper()
	maybeSuperviseHelper()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("runtime tests need root; skipping")
		return 0
	}
	for _, ns := range []string{"mnt", "pid", "uts", "ipc", "net", "cgroup"} {
		l, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		hostNS[ns] = l
	}
	var err error
	baseDir, err = os.MkdirTemp("", "shoal-runtime-test-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	// Every t.TempDir (state roots, rootfs, mounts) is then under baseDir,
	// where checkLeftovers looks for what a test failed to clean up.
	os.Setenv("TMPDIR", baseDir)
	probeBin = filepath.Join(baseDir, "probe")
	cmd := exec.Command("go", "build", "-o", probeBin, "./testdata/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Printf("building probe: %v\n%s", err, out)
		os.RemoveAll(baseDir) // nothing ran yet: no mounts under it
		return 1
	}
	initBin = filepath.Join(baseDir, "shoal-init")
	cmd = exec.Command("go", "build", "-o", initBin, "github.com/shoal-dev/shoal/cmd/shoal-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Printf("building shoal-init: %v\n%s", err, out)
		os.RemoveAll(baseDir)
		return 1
	}
	// The shim (and container init, and supervisor) is its own binary,
	// found in PATH by every runtime the tests make.
	shimBin = filepath.Join(baseDir, "bin", ShimBinaryName)
	cmd = exec.Command("go", append(append([]string{"build", "-o", shimBin}, ShimBuildArgs...), "github.com/shoal-dev/shoal/cmd/shoal-shim")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Printf("building shoal-shim: %v\n%s", err, out)
		os.RemoveAll(baseDir)
		return 1
	}
	os.Setenv("PATH", filepath.Dir(shimBin)+":"+os.Getenv("PATH"))
	code := m.Run()
	if err := checkLeftovers(); err != nil {
		fmt.Println("FAIL: left behind:", err)
		code = 1
	}
	return code
}

// newRootfs makes a minimal rootfs holding /bin/probe and passwd/group.
func newRootfs(t testing.TB) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	populateRootfs(t, root)
	return root
}

func populateRootfs(t testing.TB, root string) {
	t.Helper()
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "scratch"} {
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
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func newRuntime(t testing.TB) *Libcontainer {
	t.Helper()
	if !seccomp.Enabled {
		t.Skip("built without -tags seccomp: Start refuses to run containers")
	}
	rt, err := NewLibcontainer(filepath.Join(t.TempDir(), "state"), nil, WithCgroupParent(testCgroupParent))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func newID() string { return fmt.Sprintf("rt-test-%d-%d", os.Getpid(), seq.Add(1)) }

// start starts spec (ID and Rootfs filled in if empty) and registers its
// removal. It returns the spec and the log path.
func start(t testing.TB, rt *Libcontainer, spec Spec) (Spec, string) {
	t.Helper()
	if spec.ID == "" {
		spec.ID = newID()
	}
	if spec.Rootfs == "" {
		spec.Rootfs = newRootfs(t)
	}
	logPath := filepath.Join(t.TempDir(), "task.log")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Cleanup(func() {
		if err := rt.Remove(context.Background(), spec.ID); err != nil {
			t.Errorf("cleanup remove: %v", err)
		}
	})
	if err := rt.Start(ctx, spec, logPath); err != nil {
		t.Fatalf("start: %v", err)
	}
	return spec, logPath
}

func waitExit(t testing.TB, rt *Libcontainer, id string) State {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := rt.State(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if st.Status == StatusExited || st.Status == StatusFailed {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s did not exit: %+v", id, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func running(t testing.TB, rt *Libcontainer, id string) State {
	t.Helper()
	st, err := rt.State(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusRunning || st.Pid == 0 {
		t.Fatalf("want running with a pid, got %+v", st)
	}
	return st
}

func readTrim(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// procStatus returns the value of a /proc/<pid>/status field.
func procStatus(t testing.TB, pid int, field string) string {
	t.Helper()
	for _, line := range strings.Split(readTrim(t, fmt.Sprintf("/proc/%d/status", pid)), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == field {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

func TestExitCodes(t *testing.T) {
	rt := newRuntime(t)
	for _, code := range []int{0, 1, 7, 255} {
		spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "exit", strconv.Itoa(code)}})
		st := waitExit(t, rt, spec.ID)
		if st.Status != StatusExited || st.Exit.Code != code || st.Exit.Signal != 0 || st.Exit.OOMKilled {
			t.Errorf("exit %d: got %+v %+v", code, st, st.Exit)
		}
	}
}

func TestLogCapture(t *testing.T) {
	rt := newRuntime(t)
	spec, logPath := start(t, rt, Spec{Args: []string{"/bin/probe", "echo"}})
	waitExit(t, rt, spec.ID)
	recs, err := ReadLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range recs {
		if r.Time.IsZero() {
			t.Errorf("record without time: %+v", r)
		}
		got[r.Stream] += r.Log
	}
	if got["stdout"] != "hello stdout\n" || got["stderr"] != "hello stderr\n" {
		t.Errorf("log = %q", got)
	}
}

func TestResourcesInCgroup(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{
		Args: []string{"/bin/probe", "sleep"},
		Resources: Resources{
			MemoryBytes: 64 << 20, NanoCPUs: 500_000_000, CPUShares: 512, PidsLimit: 42,
		},
	})
	running(t, rt, spec.ID)
	cg := func(sub, file string) string {
		return readTrim(t, filepath.Join("/sys/fs/cgroup", sub, testCgroupParent, spec.ID, file))
	}
	checks := []struct{ sub, file, want string }{
		{"memory", "memory.limit_in_bytes", strconv.Itoa(64 << 20)},
		{"memory", "memory.memsw.limit_in_bytes", strconv.Itoa(64 << 20)},
		{"pids", "pids.max", "42"},
		{"cpu", "cpu.cfs_quota_us", "50000"},
		{"cpu", "cpu.cfs_period_us", "100000"},
		{"cpu", "cpu.shares", "512"},
	}
	for _, c := range checks {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", c.sub)); err != nil {
			continue // hierarchy not mounted here
		}
		if got := cg(c.sub, c.file); got != c.want {
			t.Errorf("%s/%s = %q, want %q", c.sub, c.file, got, c.want)
		}
	}
}

func TestOOMKilled(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{
		Args:      []string{"/bin/probe", "oom"},
		Resources: Resources{MemoryBytes: 32 << 20},
	})
	st := waitExit(t, rt, spec.ID)
	if st.Status != StatusExited || st.Exit.Code != 137 || !st.Exit.OOMKilled {
		t.Errorf("got %+v exit %+v, want 137 and OOMKilled", st, st.Exit)
	}
}

// utsHostname reads the hostname inside pid's UTS namespace from outside.
func utsHostname(t *testing.T, pid int) string {
	t.Helper()
	ch := make(chan string, 1)
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread is discarded
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/uts", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- "error: " + err.Error()
			return
		}
		defer unix.Close(fd)
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			ch <- "error: " + err.Error()
			return
		}
		if err := unix.Setns(fd, unix.CLONE_NEWUTS); err != nil {
			ch <- "error: " + err.Error()
			return
		}
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			ch <- "error: " + err.Error()
			return
		}
		ch <- unix.ByteSliceToString(u.Nodename[:])
	}()
	return <-ch
}

func TestIdentityAndIsolation(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{
		Args:     []string{"/bin/probe", "sleep"},
		User:     "app",
		Hostname: "probe-host",
	})
	st := running(t, rt, spec.ID)
	if got := utsHostname(t, st.Pid); got != "probe-host" {
		t.Errorf("hostname = %q", got)
	}
	if got := strings.Fields(procStatus(t, st.Pid, "Uid")); got[0] != "1000" || got[1] != "1000" {
		t.Errorf("uid = %v", got)
	}
	if got := strings.Fields(procStatus(t, st.Pid, "Gid")); got[0] != "1000" {
		t.Errorf("gid = %v", got)
	}
	if got := procStatus(t, st.Pid, "Groups"); got != "2000" {
		t.Errorf("groups = %q, want the supplementary group from /etc/group", got)
	}
	if got := procStatus(t, st.Pid, "NoNewPrivs"); got != "1" {
		t.Errorf("NoNewPrivs = %q", got)
	}
	if got := procStatus(t, st.Pid, "Seccomp"); got != "2" {
		t.Errorf("Seccomp = %q, want 2 (filter)", got)
	}
	for _, ns := range []string{"mnt", "pid", "uts", "ipc", "net", "cgroup"} {
		host := hostNS[ns]
		got, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", st.Pid, ns))
		if err != nil {
			t.Fatal(err)
		}
		if got == host {
			t.Errorf("namespace %s shared with the host: %s", ns, got)
		}
	}
}

func TestCapabilities(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{
		Args:    []string{"/bin/probe", "sleep"},
		CapDrop: []string{"NET_RAW"},
		CapAdd:  []string{"CAP_SYS_NICE"},
	})
	st := running(t, rt, spec.ID)
	eff, err := strconv.ParseUint(procStatus(t, st.Pid, "CapEff"), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	bnd, _ := strconv.ParseUint(procStatus(t, st.Pid, "CapBnd"), 16, 64)
	has := func(set uint64, c int) bool { return set&(1<<c) != 0 }
	if has(eff, unix.CAP_NET_RAW) || has(bnd, unix.CAP_NET_RAW) {
		t.Errorf("CAP_NET_RAW not dropped: eff %x bnd %x", eff, bnd)
	}
	if !has(eff, unix.CAP_CHOWN) || !has(eff, unix.CAP_SYS_NICE) {
		t.Errorf("CapEff %x lacks CAP_CHOWN or the added CAP_SYS_NICE", eff)
	}
	if has(eff, unix.CAP_SYS_ADMIN) || has(bnd, unix.CAP_SYS_ADMIN) {
		t.Errorf("CAP_SYS_ADMIN present: eff %x", eff)
	}
}

func TestReadOnlyRootfsAndMounts(t *testing.T) {
	rt := newRuntime(t)
	shared := t.TempDir()
	cases := []struct {
		path string
		want int
	}{
		{"/x", 3},                   // read-only rootfs
		{"/scratch/x", 0},           // tmpfs
		{"/data-ro/x", 3},           // read-only bind
		{"/data-rw/from-inside", 0}, // read-write bind
	}
	for _, c := range cases {
		spec, _ := start(t, rt, Spec{
			Args:           []string{"/bin/probe", "write", c.path},
			ReadOnlyRootfs: true,
			Mounts: []Mount{
				{Destination: "/scratch", Tmpfs: true, TmpfsSize: 1 << 20},
				{Source: shared, Destination: "/data-ro", ReadOnly: true},
				{Source: shared, Destination: "/data-rw"},
			},
		})
		if st := waitExit(t, rt, spec.ID); st.Exit.Code != c.want {
			t.Errorf("write %s: exit %d, want %d", c.path, st.Exit.Code, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(shared, "from-inside")); err != nil {
		t.Errorf("rw bind write not visible on the host: %v", err)
	}
}

func TestSeccompDeniesUnshare(t *testing.T) {
	rt := newRuntime(t)
	spec, logPath := start(t, rt, Spec{Args: []string{"/bin/probe", "unshare"}})
	if st := waitExit(t, rt, spec.ID); st.Exit.Code != 0 {
		recs, _ := ReadLog(logPath)
		t.Errorf("unshare not refused with EPERM: exit %d, log %+v", st.Exit.Code, recs)
	}
}

func TestDevicesAndProcPaths(t *testing.T) {
	rt := newRuntime(t)
	spec, logPath := start(t, rt, Spec{Args: []string{"/bin/probe", "sandbox"}})
	if st := waitExit(t, rt, spec.ID); st.Exit.Code != 0 {
		b, _ := os.ReadFile(logPath)
		t.Errorf("sandbox checks failed (exit %d):\n%s", st.Exit.Code, b)
	}
}

func TestEnvDefaults(t *testing.T) {
	rt := newRuntime(t)
	spec, logPath := start(t, rt, Spec{Args: []string{"/bin/probe", "env"}, Env: []string{"FOO=bar"}, User: "app"})
	waitExit(t, rt, spec.ID)
	b, _ := os.ReadFile(logPath)
	for _, want := range []string{"FOO=bar", "PATH=/usr/local/sbin", "HOME=/home/app"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("env lacks %q:\n%s", want, b)
		}
	}
}

func TestStopGraceThenKill(t *testing.T) {
	rt := newRuntime(t)
	// A process that handles SIGTERM exits by itself.
	spec, logPath := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep", "exit-on-term"}})
	waitLog(t, logPath, "sleeping")
	if err := rt.Stop(context.Background(), spec.ID, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if st := waitExit(t, rt, spec.ID); st.Exit.Code != 42 {
		t.Errorf("exit-on-term: %+v", st.Exit)
	}
	// One that ignores it is killed after the grace period.
	spec, logPath = start(t, rt, Spec{Args: []string{"/bin/probe", "sleep", "ignore-term"}})
	waitLog(t, logPath, "sleeping")
	const grace = 300 * time.Millisecond
	t0 := time.Now()
	if err := rt.Stop(context.Background(), spec.ID, syscall.SIGTERM, grace); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < grace {
		t.Errorf("stopped after %v, before the grace period", d)
	}
	st := waitExit(t, rt, spec.ID)
	if st.Exit.Signal != int(syscall.SIGKILL) || st.Exit.Code != 137 || st.Exit.OOMKilled {
		t.Errorf("ignore-term: %+v", st.Exit)
	}
}

// waitLog waits until the task printed want (so its handlers are set up).
func waitLog(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%q never appeared in %s", want, path)
}

func cgroupDirsLeft(id string) []string {
	left, err := taskCgroupDirs(testCgroupParent, id)
	if err != nil {
		return []string{err.Error()}
	}
	return left
}

func TestShimKilled(t *testing.T) {
	rt := newRuntime(t)
	spec, logPath := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	st := running(t, rt, spec.ID)
	// The shim leads its own session, so the agent's death or its
	// terminal's signals do not reach it.
	if sid, err := unix.Getsid(st.ShimPid); err != nil || sid != st.ShimPid {
		t.Errorf("shim sid = %d, %v; want its own session %d", sid, err, st.ShimPid)
	}
	// Once the shim is gone a write to stdout fails with EPIPE, which ends
	// the probe (pid 1 of its namespace exits 2 rather than die of
	// SIGPIPE): kill the shim only after the last line was written.
	waitLog(t, logPath, "sleeping")
	if err := unix.Kill(st.ShimPid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ = rt.State(context.Background(), spec.ID)
		if st.Status == StatusFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shim death not detected: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !st.ContainerAlive || st.Error == "" {
		t.Errorf("want failed with the container still alive, got %+v", st)
	}
	if err := rt.Remove(context.Background(), spec.ID); err != nil {
		t.Fatal(err)
	}
	if alive(st.Pid, 0) {
		t.Errorf("container pid %d survived Remove", st.Pid)
	}
	if left := cgroupDirsLeft(spec.ID); len(left) > 0 {
		t.Errorf("cgroup dirs left: %v", left)
	}
}

func TestRemoveOverlayCleansUp(t *testing.T) {
	rt := newRuntime(t)
	dir := t.TempDir()
	lower := filepath.Join(dir, "lower")
	populateRootfs(t, lower)
	upper, work, target := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	if err := MountOverlay([]string{lower}, upper, work, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Unmount(target) })
	spec, _ := start(t, rt, Spec{Rootfs: target, Args: []string{"/bin/probe", "write", "/tmp/y"}})
	if st := waitExit(t, rt, spec.ID); st.Exit.Code != 0 {
		t.Fatalf("write in overlay: %+v", st.Exit)
	}
	if _, err := os.Stat(filepath.Join(upper, "tmp/y")); err != nil {
		t.Errorf("write did not land in the upper dir: %v", err)
	}
	if err := rt.Remove(context.Background(), spec.ID); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(target); err != nil {
		t.Fatal(err)
	}
	if left := cgroupDirsLeft(spec.ID); len(left) > 0 {
		t.Errorf("cgroup dirs left: %v", left)
	}
	if _, err := os.Stat(rt.dir(spec.ID)); !os.IsNotExist(err) {
		t.Errorf("state dir left: %v", err)
	}
	mi := readTrim(t, "/proc/self/mountinfo")
	if strings.Contains(mi, dir) || strings.Contains(mi, rt.dir(spec.ID)) {
		t.Errorf("mounts left:\n%s", mi)
	}
	if _, err := rt.State(context.Background(), spec.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("state after remove: %v", err)
	}
}

func TestListReadopts(t *testing.T) {
	rt := newRuntime(t)
	a, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	b, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "exit", "3"}})
	waitExit(t, rt, b.ID)
	// A new runtime on the same root stands for a restarted agent.
	rt2, err := NewLibcontainer(rt.root, nil, WithCgroupParent(testCgroupParent))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt2.Close() })
	list, err := rt2.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]State{}
	for _, s := range list {
		got[s.ID] = s
	}
	if got[a.ID].Status != StatusRunning || got[b.ID].Status != StatusExited || got[b.ID].Exit.Code != 3 {
		t.Errorf("list = %+v", list)
	}
	if err := rt2.Stop(context.Background(), a.ID, syscall.SIGTERM, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
}

func TestJoinNetNS(t *testing.T) {
	// Make a network namespace bind-mounted on a file, as `ip netns` does.
	nsFile := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(nsFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread is discarded
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), nsFile, "", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(nsFile, unix.MNT_DETACH) })
	var want unix.Stat_t
	if err := unix.Stat(nsFile, &want); err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}, NetNSPath: nsFile})
	st := running(t, rt, spec.ID)
	var got unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", st.Pid), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino {
		t.Errorf("container netns inode %d, want %d", got.Ino, want.Ino)
	}
}

// TestHostNetwork: a host-network container is in the caller's network
// namespace (no net namespace of its own), and a spec asking for both a
// host network and a namespace path is refused.
func TestHostNetwork(t *testing.T) {
	// This thread's namespace (the main thread's may be the one
	// TestJoinNetNS left it in).
	var want unix.Stat_t
	goruntime.LockOSThread()
	err := unix.Stat("/proc/thread-self/ns/net", &want)
	goruntime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}, HostNetwork: true})
	st := running(t, rt, spec.ID)
	var got unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", st.Pid), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino {
		t.Errorf("container netns inode %d, want the node's %d", got.Ino, want.Ino)
	}
	bad := Spec{ID: "hostnet-bad", Rootfs: "/", Args: []string{"a"}, HostNetwork: true, NetNSPath: "/var/run/netns/x"}
	if err := bad.Validate(); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("host network with a netns path: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	if err := rt.Start(ctx, Spec{ID: "../x", Rootfs: "/", Args: []string{"a"}}, "/tmp/l"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("bad id: %v", err)
	}
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	if err := rt.Start(ctx, spec, filepath.Join(t.TempDir(), "l")); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("duplicate: %v", err)
	}
	// A missing binary fails Start and leaves nothing behind.
	bad := Spec{ID: newID(), Rootfs: newRootfs(t), Args: []string{"/bin/nope"}}
	if err := rt.Start(ctx, bad, filepath.Join(t.TempDir(), "l")); err == nil {
		t.Errorf("missing binary started")
	}
	if _, err := os.Stat(rt.dir(bad.ID)); !os.IsNotExist(err) {
		t.Errorf("state dir left after failed start: %v", err)
	}
	if left := cgroupDirsLeft(bad.ID); len(left) > 0 {
		t.Errorf("cgroup dirs left after failed start: %v", left)
	}
}

// BenchmarkLifecycle: Start, Wait, Remove of a task running /bin/probe
// true. Before each iteration, untimed, the spare shim is made ready (as
// in an agent between starts). Besides ns/op it reports the median and
// the parts. For the figure through the real binary, and runc's beside
// it, see `shoal debug runtime-bench`.
func BenchmarkLifecycle(b *testing.B) {
	rt := newRuntime(b)
	rootfs := newRootfs(b)
	logPath := filepath.Join(b.TempDir(), "log")
	ctx := context.Background()
	var all, startD, exitD, removeD []time.Duration
	for b.Loop() {
		b.StopTimer()
		if err := rt.Prepare(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		id := newID()
		t0 := time.Now()
		if err := rt.Start(ctx, Spec{ID: id, Rootfs: rootfs, Args: []string{"/bin/probe", "true"}}, logPath); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		st, err := rt.Wait(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		if st.Exit == nil || st.Exit.Code != 0 {
			b.Fatalf("%+v", st)
		}
		t2 := time.Now()
		if err := rt.Remove(ctx, id); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		all = append(all, t3.Sub(t0))
		startD, exitD, removeD = append(startD, t1.Sub(t0)), append(exitD, t2.Sub(t1)), append(removeD, t3.Sub(t2))
	}
	b.ReportMetric(medianMS(all), "median-ms")
	b.ReportMetric(medianMS(startD), "start-ms")
	b.ReportMetric(medianMS(exitD), "wait-ms")
	b.ReportMetric(medianMS(removeD), "remove-ms")
}

// medianMS is the median of ds in milliseconds (nearest rank).
func medianMS(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[(len(s)+1)/2-1]) / float64(time.Millisecond)
}
