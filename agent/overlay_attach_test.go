package agent

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/agent/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

type fakeOverlay struct {
	mu       sync.Mutex
	attached map[string]int // netns path -> attachments
	detached []string
	fail     error
}

func (f *fakeOverlay) Attach(_ context.Context, ns string, atts []*shoalv1.NetworkAttachment) (OverlayAttachment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return OverlayAttachment{}, f.fail
	}
	f.attached[ns] = len(atts)
	return OverlayAttachment{}, nil
}

func (f *fakeOverlay) Detach(_ context.Context, ns string, _ []*shoalv1.NetworkAttachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.detached = append(f.detached, ns)
	return nil
}

func (f *fakeOverlay) state() (map[string]int, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := map[string]int{}
	for k, v := range f.attached {
		m[k] = v
	}
	return m, append([]string(nil), f.detached...)
}

func newExecEnvOverlay(t *testing.T, ov Overlay) *execEnv {
	env := &execEnv{t: t, dir: t.TempDir(), rt: runtime.NewFake(), images: newFakeImages(), net: &fakeNet{up: map[string]bool{}}, ov: ov}
	env.start()
	t.Cleanup(env.stop)
	return env
}

// TestExecutorAttachesOverlayNetworks: a task's overlay attachments are
// attached in the namespace the node network made, before the start, and
// detached when it is released; a task without networks is not attached;
// a failed attach fails the task.
func TestExecutorAttachesOverlayNetworks(t *testing.T) {
	ov := &fakeOverlay{attached: map[string]int{}}
	env := newExecEnvOverlay(t, ov)
	withNets := running("t1")
	withNets.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "n1", Address: "10.77.0.2/24", Mac: "02:42:0a:4d:00:02"},
		{NetworkId: "n2", Address: "10.78.0.2/24", Mac: "02:42:0a:4e:00:02"}}
	env.ex.Assign(true, []*shoalv1.Task{withNets, running("t2")}, nil)
	env.waitStatus("t1", shoalv1.TaskState_TASK_STATE_RUNNING)
	env.waitStatus("t2", shoalv1.TaskState_TASK_STATE_RUNNING)
	if att, _ := ov.state(); len(att) != 1 || att["/run/netns/t1"] != 2 {
		t.Fatalf("attached %v", att)
	}
	// A task on overlay networks has its node-local port isolated (tasks
	// of different networks must not meet on the node bridge); one
	// without networks keeps today's node-local behaviour.
	if !env.net.isolated("t1") || env.net.isolated("t2") {
		t.Fatalf("isolated: t1 %v, t2 %v; want true, false", env.net.isolated("t1"), env.net.isolated("t2"))
	}
	env.ex.Assign(true, []*shoalv1.Task{running("t2")}, nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, det := ov.state(); len(det) == 1 && det[0] == "/run/netns/t1" {
			break
		}
		if time.Now().After(deadline) {
			_, det := ov.state()
			t.Fatalf("detached %v", det)
		}
		time.Sleep(2 * time.Millisecond)
	}
	ov.mu.Lock()
	ov.fail = errors.New("no such network")
	ov.mu.Unlock()
	bad := running("t3")
	bad.Networks = withNets.Networks
	env.ex.Assign(false, []*shoalv1.Task{bad}, nil)
	st := env.waitStatus("t3", shoalv1.TaskState_TASK_STATE_FAILED)
	if st.GetErr() == "" {
		t.Fatalf("failed status without error: %v", st)
	}
}

// TestExecutorHostNetwork: a task on a host network (its one attachment
// has no address) runs in the node's network namespace: no namespace is
// set up, no overlay needed or attached, the runtime is told to share the
// node's, and the node's resolv.conf is mounted read-only.
func TestExecutorHostNetwork(t *testing.T) {
	env := newExecEnv(t) // no overlay on this node: a host network needs none
	task := running("h1")
	task.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "hostnet"}}
	env.ex.Assign(true, []*shoalv1.Task{task}, nil)
	env.waitStatus("h1", shoalv1.TaskState_TASK_STATE_RUNNING)
	spec, ok := env.rt.Spec("h1")
	if !ok || !spec.HostNetwork || spec.NetNSPath != "" {
		t.Fatalf("runtime spec: host network %v, netns %q; want true, \"\"", spec.HostNetwork, spec.NetNSPath)
	}
	env.net.mu.Lock()
	up := env.net.up["h1"]
	env.net.mu.Unlock()
	if up {
		t.Fatal("a network namespace was set up for a host-network task")
	}
	if _, err := os.Stat("/etc/resolv.conf"); err == nil {
		found := false
		for _, m := range spec.Mounts {
			if m.Destination == "/etc/resolv.conf" && m.Source == "/etc/resolv.conf" && m.ReadOnly {
				found = true
			}
		}
		if !found {
			t.Fatalf("the node's resolv.conf is not mounted read-only: %+v", spec.Mounts)
		}
	}
	if hostNetwork(&shoalv1.Task{Networks: []*shoalv1.NetworkAttachment{{NetworkId: "n", Address: "10.0.0.2/24"}}}) {
		t.Fatal("an attachment with an address taken for a host network")
	}
}

// driverOverlay is a fakeOverlay that knows its networks' drivers.
type driverOverlay struct {
	*fakeOverlay
	drivers map[string]string
}

func (d driverOverlay) NetworkDriver(_ context.Context, id string) (string, error) {
	if dr, ok := d.drivers[id]; ok {
		return dr, nil
	}
	return "", errors.New("not delivered")
}

// TestExecutorConfirmsHostNetwork: where the node holds network states, an
// attachment without an address runs in the node's namespace only if its
// network's driver is host; otherwise the task is rejected (a fault never
// becomes host networking).
func TestExecutorConfirmsHostNetwork(t *testing.T) {
	ov := driverOverlay{&fakeOverlay{attached: map[string]int{}}, map[string]string{"hostnet": "host", "ov": "overlay"}}
	env := newExecEnvOverlay(t, ov)
	good, bad := running("h1"), running("h2")
	good.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "hostnet"}}
	bad.Networks = []*shoalv1.NetworkAttachment{{NetworkId: "ov"}}
	env.ex.Assign(true, []*shoalv1.Task{good, bad}, nil)
	env.waitStatus("h1", shoalv1.TaskState_TASK_STATE_RUNNING)
	st := env.waitStatus("h2", shoalv1.TaskState_TASK_STATE_REJECTED)
	if !strings.Contains(st.GetErr(), "driver is overlay, not host") {
		t.Fatalf("rejected with %q", st.GetErr())
	}
	if spec, _ := env.rt.Spec("h1"); !spec.HostNetwork {
		t.Fatal("h1 not on the host network")
	}
	if _, ok := env.rt.Spec("h2"); ok {
		t.Fatal("h2 was started")
	}
}
