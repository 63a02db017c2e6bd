package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/agent/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

type fakeDiscovery struct {
	mu     sync.Mutex
	starts []string // "task ns nets"
	stops  []string
}

func (f *fakeDiscovery) Start(_ context.Context, id, ns string, nets []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts = append(f.starts, fmt.Sprintf("%s %s %s", id, ns, strings.Join(nets, ",")))
	return nil
}

func (f *fakeDiscovery) Stop(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stops = append(f.stops, id)
	return nil
}

func (f *fakeDiscovery) get() ([]string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.starts...), append([]string(nil), f.stops...)
}

// pathNet is a fakeNet whose namespaces are files in dir, so that a
// re-adopted task's namespace can be found (netNSPather).
type pathNet struct {
	*fakeNet
	dir string
}

func (n pathNet) Setup(ctx context.Context, id string) (NetAttachment, error) {
	att, err := n.fakeNet.Setup(ctx, id)
	att.NetNSPath = n.NetNSPath(id)
	if err == nil {
		err = os.WriteFile(att.NetNSPath, nil, 0o644)
	}
	return att, err
}

func (n pathNet) NetNSPath(id string) string { return filepath.Join(n.dir, id) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestExecutorServiceDiscovery: a task on overlay networks gets its DNS
// server and VIPs (Discovery.Start with its namespace and network ids),
// a resolv.conf naming 127.0.0.11 in its task dir bind-mounted read-only
// on /etc/resolv.conf (unless the spec mounts its own), gets them again
// when re-adopted after an agent restart, and loses them when released.
// A task without networks gets none of it.
func TestExecutorServiceDiscovery(t *testing.T) {
	disc := &fakeDiscovery{}
	fn := &fakeNet{up: map[string]bool{}}
	nsDir := t.TempDir()
	env := &execEnv{t: t, dir: t.TempDir(), rt: runtime.NewFake(), images: newFakeImages(), net: fn,
		netw: pathNet{fn, nsDir}, ov: &fakeOverlay{attached: map[string]int{}}, disc: disc}
	env.start()
	t.Cleanup(env.stop)

	nets := []*shoalv1.NetworkAttachment{{NetworkId: "n1", Address: "10.77.0.2/24"}, {NetworkId: "n2", Address: "10.78.0.2/24"}}
	t1 := running("t1")
	t1.Networks = nets
	own := running("t3")
	own.Networks = nets
	own.Spec.Container.Mounts = []*shoalv1.Mount{{Type: "tmpfs", Target: "/etc/resolv.conf"}}
	env.ex.Assign(true, []*shoalv1.Task{t1, running("t2"), own}, nil)
	for _, id := range []string{"t1", "t2", "t3"} {
		env.waitStatus(id, shoalv1.TaskState_TASK_STATE_RUNNING)
	}
	starts, _ := disc.get()
	want := fmt.Sprintf("t1 %s n1,n2", filepath.Join(nsDir, "t1"))
	if len(starts) != 2 || (starts[0] != want && starts[1] != want) {
		t.Fatalf("starts %q, want %q and t3's", starts, want)
	}
	data, err := os.ReadFile(filepath.Join(env.ex.paths("t1").dir, "resolv.conf"))
	if err != nil || !strings.Contains(string(data), "nameserver 127.0.0.11\n") {
		t.Fatalf("resolv.conf %q, %v", data, err)
	}
	countMounts := func(id string) (n int, ro bool) {
		spec, ok := env.rt.Spec(id)
		if !ok {
			t.Fatalf("no spec for %s", id)
		}
		for _, m := range spec.Mounts {
			if m.Destination == "/etc/resolv.conf" && m.Source != "" {
				n++
				ro = m.ReadOnly && m.Source == filepath.Join(env.ex.paths(id).dir, "resolv.conf")
			}
		}
		return n, ro
	}
	if n, ro := countMounts("t1"); n != 1 || !ro {
		t.Fatalf("t1: %d resolv.conf mounts (read-only from the task dir: %v)", n, ro)
	}
	if n, _ := countMounts("t2"); n != 0 {
		t.Fatalf("t2 (no networks) got a resolv.conf mount")
	}
	if n, _ := countMounts("t3"); n != 0 {
		t.Fatalf("t3 (its own /etc/resolv.conf) got ours too")
	}

	// Agent restart: the re-adopted tasks get their DNS server again.
	env.stop()
	env.start()
	waitFor(t, "re-adopted t1's discovery", func() bool {
		s, _ := disc.get()
		n := 0
		for _, x := range s {
			if x == want {
				n++
			}
		}
		return n == 2
	})

	env.ex.Assign(true, []*shoalv1.Task{running("t2"), own}, nil)
	waitFor(t, "t1's discovery stopped", func() bool {
		_, stops := disc.get()
		for _, s := range stops {
			if s == "t1" {
				return true
			}
		}
		return false
	})
}

// TestTaskWithNetworksRejectedWithoutOverlay: a node that runs no overlay
// (a loopback advertise address) rejects a task on networks with the
// reason, instead of running it cut off from its peers.
func TestTaskWithNetworksRejectedWithoutOverlay(t *testing.T) {
	env := newExecEnv(t)
	t1 := running("t1")
	t1.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "n1", Address: "10.77.0.2/24"}}
	env.ex.Assign(true, []*shoalv1.Task{t1, running("t2")}, nil)
	st := env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_REJECTED)
	if !strings.Contains(st.GetErr(), "runs no overlay networks") {
		t.Fatalf("rejected with %q", st.GetErr())
	}
	env.waitStatus("t2", shoalv1.TaskState_TASK_STATE_RUNNING) // a task without networks runs
}
