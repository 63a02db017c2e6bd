package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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
		id        string
		namespace []string
		pids      []int
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

		// PowerOff kills everything and cuts the link; left running
		// processes are for the cleanup to kill.
		victim := h3.StartProgram(t, "sleep", "600")
		if err := h3.PowerOff(); err != nil {
			t.Fatal(err)
		}
		if !victim.Exited() {
			t.Error("process survived PowerOff")
		}
		if err := h1.Ping(ctx, h3.IP); err == nil {
			t.Error("h1 reached h3 after PowerOff")
		}
		left := h1.StartProgram(t, "sleep", "600")
		pids = append(pids, left.Pid())
	})

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
	if err := os.WriteFile(lockPath(deadID), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unparsable := Prefix + "junk"
	liveID := randomID()
	live := Prefix + liveID + "-x"
	lock, err := lockFabric(liveID, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = deleteNetns(ctx, live)
		_ = deleteNetns(ctx, stale)
		_ = deleteNetns(ctx, unparsable)
		_ = deleteNetns(ctx, dead)
		_ = os.Remove(lockPath(deadID))
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

func netnsIno(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
