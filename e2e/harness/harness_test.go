package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/agent/runtime/hostclean"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// TestFabric checks the harness itself, without shoal: two hosts reach each
// other, LinkDown partitions one and LinkUp heals it, processes run inside
// the host's namespace and die with it, and cleanup leaves nothing behind.
func TestFabric(t *testing.T) {
	RequireRoot(t)
	if _, err := os.Stat("/usr/bin/ping"); err != nil {
		if _, err2 := os.Stat("/bin/ping"); err2 != nil {
			t.Fatal("this test needs iputils-ping (scripts/setup.sh installs it)")
		}
	}
	var (
		id            string
		namespace     []string
		pids          []int
		cgroupParents []string
		mountDirs     []string
		containerDone <-chan struct{}
	)
	t.Run("fabric", func(t *testing.T) {
		f := NewFabric(t)
		id = f.ID
		h1, h2 := f.AddHost("h1"), f.AddHost("h2")
		h3 := f.AddHost("h3")
		if h1.IP != "192.168.250.11" || h2.IP != "192.168.250.12" || h3.IP != "192.168.250.13" {
			t.Fatalf("addresses: %s %s %s", h1.IP, h2.IP, h3.IP)
		}
		namespace = []string{f.SwitchNS, h1.NS, h2.NS, h3.NS}
		for _, ns := range namespace {
			if len(ns) > 15 {
				t.Errorf("name %q is longer than 15 characters", ns)
			}
		}
		ctx := context.Background()

		// The first packets may wait for the ports and ARP: poll.
		Eventually(t, 10*time.Second, 100*time.Millisecond, func() error { return h1.Ping(ctx, h2.IP) })
		Eventually(t, 10*time.Second, 100*time.Millisecond, func() error { return h2.Ping(ctx, h3.IP) })
		if err := h1.Ping(ctx, "127.0.0.1"); err != nil {
			t.Errorf("loopback in %s: %v", h1.NS, err)
		}

		// Partition h2: it reaches no one and no one reaches it; h1-h3 is fine.
		if err := h2.LinkDown(); err != nil {
			t.Fatal(err)
		}
		if err := h1.Ping(ctx, h2.IP); err == nil {
			t.Error("h1 reached h2 after h2's LinkDown")
		}
		if err := h2.Ping(ctx, h3.IP); err == nil {
			t.Error("h2 reached h3 after h2's LinkDown")
		}
		if err := h1.Ping(ctx, h3.IP); err != nil {
			t.Errorf("h1 to h3 during h2's partition: %v", err)
		}
		if err := h2.LinkUp(); err != nil {
			t.Fatal(err)
		}
		Eventually(t, 10*time.Second, 100*time.Millisecond, func() error { return h1.Ping(ctx, h2.IP) })

		// Processes run inside the host's namespace.
		sleeper := h1.StartProgram(t, "sleep", "600")
		pids = append(pids, sleeper.Pid())
		// Until nsenter has switched namespaces and exec'd, the pid is still nsenter's
		// in the root namespace: poll.
		want := netnsIno(t, "/run/netns/"+h1.NS)
		Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
			if got := netnsIno(t, "/proc/"+strconv.Itoa(sleeper.Pid())+"/ns/net"); got != want {
				return fmt.Errorf("process netns inode %d, want h1's %d", got, want)
			}
			return nil
		})
		if err := sleeper.Kill(); err != nil {
			t.Fatal(err)
		}
		if !sleeper.Exited() || sleeper.ExitCode() != -1 {
			t.Errorf("after Kill: exited %v code %d", sleeper.Exited(), sleeper.ExitCode())
		}

		// Stop escalates to SIGKILL when SIGTERM is ignored.
		stubborn := h2.StartProgram(t, "sh", "-c", "trap '' TERM; echo r''eady; sleep 600")
		pids = append(pids, stubborn.Pid())
		Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
			if !strings.Contains(stubborn.Output(), "ready") {
				return errors.New("not ready yet")
			}
			return stubborn.CheckRunning()
		})
		if err := stubborn.StopWithin(300 * time.Millisecond); err == nil {
			t.Error("StopWithin of a process ignoring SIGTERM reported a clean stop")
		}
		if !stubborn.Exited() {
			t.Error("still running after StopWithin")
		}
		polite := h2.StartProgram(t, "sleep", "600")
		if err := polite.Stop(); err != nil {
			t.Errorf("Stop of sleep: %v", err)
		}

		// Exit codes and output.
		quick := h3.StartProgram(t, "sh", "-c", "echo hello from $0; exit 3")
		code, err := quick.WaitExit(5 * time.Second)
		if err != nil || code != 3 {
			t.Errorf("exit code %d, %v; want 3", code, err)
		}
		if !strings.Contains(quick.Output(), "hello from") {
			t.Errorf("output %q", quick.Output())
		}

		// Dialling from a host's namespace in the test process: the
		// connection is refused by h2 (from the root namespace the fabric's
		// addresses are unreachable), and the threads that dialled live on,
		// so the processes they may have started keep running (Pdeathsig
		// fires when the parent thread ends).
		keeper := h1.StartProgram(t, "sleep", "600")
		pids = append(pids, keeper.Pid())
		for range 20 {
			_, err := h1.DialContext(ctx, "tcp", h2.IP+":9")
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("dial from h1 to a closed port of h2: %v, want connection refused", err)
			}
		}
		if err := keeper.CheckRunning(); err != nil {
			t.Errorf("a process of the harness died while the test dialled: %v", err)
		}

		// Crash kills the harness's processes only: a "container" (a
		// process in the host's cgroups, in a session of its own) lives on,
		// as do mounts. PowerOff kills it, unmounts and removes the cgroups.
		c1, c1done := fakeContainer(t, h1)
		pids = append(pids, c1)
		mountTmpfs(t, filepath.Join(h1.Dir, "m"))
		if err := h1.Crash(); err != nil {
			t.Fatal(err)
		}
		if !keeper.Exited() {
			t.Error("Crash left a harness process running")
		}
		if got, err := h1.CgroupPids(); err != nil || !slices.Contains(got, c1) {
			t.Errorf("after Crash, h1's cgroup pids are %v (%v); want the container %d alive", got, err, c1)
		}
		if m, _ := h1.Mounts(); len(m) != 2 {
			t.Errorf("after Crash, mounts under h1: %v, want 2", m)
		}
		c3, c3done := fakeContainer(t, h3)
		mountTmpfs(t, filepath.Join(h3.Dir, "m"))
		victim := h3.StartProgram(t, "sleep", "600")
		if err := h3.PowerOff(); err != nil {
			t.Fatal(err)
		}
		if !victim.Exited() {
			t.Error("process survived PowerOff")
		}
		select {
		case <-c3done:
		case <-time.After(10 * time.Second):
			t.Errorf("container %d survived PowerOff", c3)
		}
		if m, err := h3.Mounts(); err != nil || len(m) > 0 {
			t.Errorf("mounts under h3 after PowerOff: %v (%v)", m, err)
		}
		if d, err := h3.CgroupDirs(); err != nil || len(d) > 0 {
			t.Errorf("cgroups of h3 after PowerOff: %v (%v)", d, err)
		}
		if err := h1.Ping(ctx, h3.IP); err == nil {
			t.Error("h1 reached h3 after PowerOff")
		}
		// Left for the cleanup: a process, h1's container and mounts.
		left := h1.StartProgram(t, "sleep", "600")
		pids = append(pids, left.Pid())
		cgroupParents = []string{h1.CgroupParent(), h3.CgroupParent()}
		mountDirs = []string{hostclean.RealDir(h1.Dir), hostclean.RealDir(h3.Dir)}
		containerDone = c1done
	})
	select {
	case <-containerDone:
	case <-time.After(10 * time.Second):
		t.Error("the cleanup left a container running")
	}
	for _, cg := range cgroupParents {
		if d, err := hostclean.CgroupDirs(cg); err != nil || len(d) > 0 {
			t.Errorf("cgroups left after cleanup: %v (%v)", d, err)
		}
	}
	for _, dir := range mountDirs {
		if m, err := hostclean.MountsUnder(dir); err != nil || len(m) > 0 {
			t.Errorf("mounts left after cleanup: %v (%v)", m, err)
		}
	}

	// The subtest's cleanup has run: no namespace, process or lock is left.
	all, err := listNetns(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range all {
		if strings.Contains(ns, id) {
			t.Errorf("namespace %s left after cleanup", ns)
		}
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after cleanup (%v)", pid, err)
		}
	}
	if _, err := os.Stat(lockPath(id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock file %s left after cleanup (%v)", lockPath(id), err)
	}
	if len(namespace) != 4 {
		t.Fatalf("subtest did not get far enough: %v", namespace)
	}
}

// TestSweep checks that Sweep removes namespaces whose fabric has no live
// owner and keeps those whose lock is held.
func TestSweep(t *testing.T) {
	RequireRoot(t)
	ctx := context.Background()
	stale := Prefix + randomID() + "-x"
	// A crashed run's lock file: present, but no live process holds it.
	deadID := randomID()
	dead := Prefix + "sw-" + deadID
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// It left a container (a process in its host's cgroups) and mounts in
	// the fabric dir its lock file names.
	deadDir := hostclean.RealDir(t.TempDir())
	if err := os.WriteFile(lockPath(deadID), []byte("1\n"+deadDir+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadHost := &Host{Name: "x", f: &Fabric{ID: deadID}}
	deadPid, deadDone := fakeContainer(t, deadHost)
	mountTmpfs(t, filepath.Join(deadDir, "m"))
	unparsable := Prefix + "junk"
	liveID := randomID()
	live := Prefix + liveID + "-x"
	lock, err := lockFabric(liveID, "")
	if err != nil {
		t.Fatal(err)
	}
	// A live fabric's host cgroup: left alone.
	liveHost := &Host{Name: "x", f: &Fabric{ID: liveID}}
	livePid, liveDone := fakeContainer(t, liveHost)
	t.Cleanup(func() {
		_ = deleteNetns(ctx, live)
		_ = deleteNetns(ctx, stale)
		_ = deleteNetns(ctx, unparsable)
		_ = deleteNetns(ctx, dead)
		_ = os.Remove(lockPath(deadID))
		_ = hostclean.KillCgroups(ctx, liveHost.CgroupParent())
		_ = hostclean.RemoveCgroups(ctx, liveHost.CgroupParent())
		_ = hostclean.KillCgroups(ctx, deadHost.CgroupParent())
		_ = hostclean.RemoveCgroups(ctx, deadHost.CgroupParent())
		_ = hostclean.UnmountUnder(deadDir)
		unlockFabric(lock, liveID)
	})
	for _, ns := range []string{stale, unparsable, live, dead} {
		if _, err := ip(ctx, "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
	}
	// A process of the crashed run, still inside its namespace.
	cmd := (&Host{NS: stale}).nsCommand(ctx, "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()

	removed, err := Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, ns := range removed {
		got[ns] = true
	}
	if !got[stale] || !got[unparsable] || !got[dead] || got[live] {
		t.Errorf("removed %v; want %s, %s and %s, not %s", removed, stale, unparsable, dead, live)
	}
	if _, err := os.Stat(lockPath(deadID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale lock file %s not removed (%v)", lockPath(deadID), err)
	}
	if _, err := os.Stat(lockPath(liveID)); err != nil {
		t.Errorf("live lock file: %v", err)
	}
	if !netnsExists(live) {
		t.Errorf("%s was removed although its lock is held", live)
	}
	select {
	case <-deadDone:
	case <-time.After(10 * time.Second):
		t.Errorf("the stale fabric's container %d survived the sweep", deadPid)
	}
	if d, err := hostclean.CgroupDirs(deadHost.CgroupParent()); err != nil || len(d) > 0 {
		t.Errorf("the stale fabric's cgroups survived the sweep: %v (%v)", d, err)
	}
	if m, err := hostclean.MountsUnder(deadDir); err != nil || len(m) > 0 {
		t.Errorf("the stale fabric's mounts survived the sweep: %v (%v)", m, err)
	}
	select {
	case <-liveDone:
		t.Errorf("the live fabric's container %d was killed by the sweep", livePid)
	default:
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("the stale namespace's process survived the sweep")
	}
}

func TestFabricIDOf(t *testing.T) {
	for _, c := range []struct {
		ns, id string
		ok     bool
	}{
		{"shl-sw-0a1b2c", "0a1b2c", true},
		{"shl-0a1b2c-h1", "0a1b2c", true},
		{"shl-junk", "", false},
		{"shl-sw-xyz", "", false},
		{"other-0a1b2c-h1", "", false},
	} {
		id, ok := fabricIDOf(c.ns)
		if ok != c.ok || (ok && id != c.id) {
			t.Errorf("fabricIDOf(%q) = %q, %v; want %q, %v", c.ns, id, ok, c.id, c.ok)
		}
	}
}

func TestPoll(t *testing.T) {
	n := 0
	err := Poll(context.Background(), time.Millisecond, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("Poll: %v after %d calls", err, n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err = Poll(ctx, 5*time.Millisecond, func() error { return errors.New("the last reason") })
	if err == nil || !strings.Contains(err.Error(), "the last reason") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Poll on timeout: %v", err)
	}

	calls := 0
	err = Poll(context.Background(), time.Millisecond, func() error {
		calls++
		return Permanent(errors.New("gave up"))
	})
	if !IsPermanent(err) || calls != 1 {
		t.Fatalf("Permanent: %v after %d calls", err, calls)
	}
}

func TestDecodeList(t *testing.T) {
	out := `[
	  {"meta": {"id": "n1"}, "status": {"state": "NODE_STATE_READY", "addr": "192.168.250.11:4242"},
	   "manager_status": {"leader": true}, "role": "NODE_ROLE_MANAGER", "some_future_field": 1},
	  {"meta": {"id": "n2"}, "status": {"state": "NODE_STATE_DOWN"}, "role": "NODE_ROLE_WORKER"}
	]`
	nodes, err := DecodeList[shoalv1.Node](out)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0].GetMeta().GetId() != "n1" || !nodes[0].GetManagerStatus().GetLeader() ||
		nodes[0].GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_READY ||
		nodes[1].GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_DOWN {
		t.Fatalf("decoded %v", nodes)
	}
	for _, empty := range []string{"", "null", "[]\n"} {
		if got, err := DecodeList[shoalv1.Task](empty); err != nil || len(got) != 0 {
			t.Errorf("DecodeList(%q) = %v, %v", empty, got, err)
		}
	}
	var task shoalv1.Task
	if err := DecodeOne(`[{"node_id": "n1", "status": {"state": "TASK_STATE_ASSIGNED"}}]`, &task); err != nil ||
		task.GetNodeId() != "n1" || task.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_ASSIGNED {
		t.Fatalf("DecodeOne: %v %v", &task, err)
	}
}

func TestTokens(t *testing.T) {
	const tok = "SHOAL-1-3f2a9c0e-7b1d4xyz"
	got, err := FindToken("To add a worker:\n    shoal join --token " + tok + " 192.168.250.11:4242\n")
	if err != nil || got != tok {
		t.Fatalf("FindToken: %q, %v", got, err)
	}
	pt, err := ParseToken(tok)
	if err != nil || pt.Digest != "3f2a9c0e" || pt.Secret != "7b1d4xyz" || pt.String() != tok {
		t.Fatalf("ParseToken: %+v, %v", pt, err)
	}
	m, err := Mutate(pt.Digest)
	if err != nil || m == pt.Digest || len(m) != len(pt.Digest) {
		t.Fatalf("Mutate: %q, %v", m, err)
	}
	if _, err := Mutate("aaaa"); !errors.Is(err, ErrNoChange) {
		t.Fatalf("Mutate(aaaa): %v", err)
	}
}

// fakeContainer starts `sleep 600` in a session of its own (not a harness
// process: as a shim's container is not) inside h's cgroup parent, in a
// child cgroup "fake" of every hierarchy, and returns its pid and a channel
// closed once it has been reaped.
func fakeContainer(t *testing.T, h *Host) (int, <-chan struct{}) {
	t.Helper()
	roots, err := hostclean.CgroupRoots()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	pid := cmd.Process.Pid
	joined := 0
	for _, r := range roots {
		dir := filepath.Join(r, h.CgroupParent(), "fake")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// Some hierarchies may refuse (cpuset without cpus/mems set, say).
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err == nil {
			joined++
		}
	}
	if joined == 0 {
		cmd.Process.Kill()
		t.Fatalf("could not put pid %d into any cgroup of %s", pid, h.CgroupParent())
	}
	return pid, done
}

// mountTmpfs mounts a tmpfs at dir and another one inside it.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{dir, filepath.Join(dir, "inner")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", d, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
	}
}

func netnsIno(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
