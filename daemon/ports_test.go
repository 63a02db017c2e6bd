package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/overlay"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// A restarted agent with nothing to publish clears the published-port
// rules its previous run left (they DNAT to tasks that may be gone).
func TestPortsClearsStaleTableAfterRestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	name := fmt.Sprintf("daemonports-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns := "/run/netns/" + name
	// The previous run published 8080 to a task.
	if err := overlay.ProgramPorts(ns, overlay.PortsConfig{Ports: []overlay.PublishedPort{{Port: 8080, TargetPort: 80,
		Backends: []overlay.PortBackend{{Addr: net.ParseIP("10.66.0.2")}}}}}); err != nil {
		t.Fatal(err)
	}
	p := &portProgrammer{nodeID: "n1", subnet: netip.MustParsePrefix("10.66.0.0/24"), netns: ns,
		tasks: func() []*shoalv1.Task { return nil }, log: slog.Default()}
	if err := p.program(nil); err != nil {
		t.Fatal(err)
	}
	if n, err := overlay.PortRuleCount(ns); err != nil || n != 0 {
		t.Fatalf("stale port rules after the first program: %d %v", n, err)
	}
}

// The repair tick rewrites the published-port table someone deleted
// (no new network state needed).
func TestPortsRepairedOnTick(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	name := fmt.Sprintf("daemonportsr-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns := "/run/netns/" + name
	task := &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}, Status: &shoalv1.TaskStatus{Addresses: []string{"10.66.0.2/24"}}}
	p := &portProgrammer{nodeID: "n1", subnet: netip.MustParsePrefix("10.66.0.0/24"), netns: ns,
		tasks: func() []*shoalv1.Task { return []*shoalv1.Task{task} }, log: slog.Default()}
	states := []*shoalv1.NetworkState{{
		Vips: []*shoalv1.ServiceVIPState{{ServiceId: "web", Ports: []*shoalv1.PortConfig{{PublishedPort: 8080, TargetPort: 80}}}},
		Endpoints: []*shoalv1.Endpoint{{TaskId: "t1", ServiceId: "web", NodeId: "n1", NodeAddr: "192.168.250.1",
			State: shoalv1.TaskState_TASK_STATE_RUNNING}},
	}}
	if err := p.program(states); err != nil {
		t.Fatal(err)
	}
	if n, err := overlay.PortRuleCount(ns); err != nil || n != 1 {
		t.Fatalf("after program: %d rules, %v; want 1", n, err)
	}
	if err := overlay.ClearPorts(ns); err != nil { // someone deletes table shoal-ports
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.run(ctx, 20*time.Millisecond); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := overlay.PortRuleCount(ns)
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the deleted table was not repaired by the tick")
		}
		time.Sleep(10 * time.Millisecond) // poll
	}
}

// A node that learns of another node on its underlay subnet whose MAC it
// does not know asks the kernel to resolve it, and its run loop picks
// the MAC up a second later (not a whole repair period): the peer gets
// its fwmark rule, so connections that peer forwards without SNAT have
// their replies routed back through it.
func TestPortsResolvePeerSoon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	node := fmt.Sprintf("daemonportsn-%d", os.Getpid())
	peer := fmt.Sprintf("daemonportsp-%d", os.Getpid())
	for _, n := range []string{node, peer} {
		if out, err := exec.Command("ip", "netns", "add", n).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v %s", err, out)
		}
		n := n
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n).Run() })
	}
	for _, args := range [][]string{
		{"-n", node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", peer},
		{"-n", node, "addr", "add", "192.168.251.1/24", "dev", "eth0"},
		{"-n", peer, "addr", "add", "192.168.251.2/24", "dev", "eth0"},
		{"-n", node, "link", "set", "eth0", "up"},
		{"-n", peer, "link", "set", "eth0", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	ns := "/run/netns/" + node
	task := &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}, Status: &shoalv1.TaskStatus{Addresses: []string{"10.66.0.2/24"}}}
	p := &portProgrammer{nodeID: "n1", subnet: netip.MustParsePrefix("10.66.0.0/24"), netns: ns,
		vtep: netip.MustParseAddr("192.168.251.1"), log: slog.Default(),
		tasks: func() []*shoalv1.Task { return []*shoalv1.Task{task} },
		nodes: func() []net.IP { return []net.IP{net.ParseIP("192.168.251.2")} }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.run(ctx, time.Hour); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// run has made its channel once it holds the lock; program after it.
	for {
		p.mu.Lock()
		ready := p.soon != nil
		p.mu.Unlock()
		if ready {
			break
		}
		time.Sleep(time.Millisecond) // poll: run's first lines
	}
	states := []*shoalv1.NetworkState{{
		Vips: []*shoalv1.ServiceVIPState{{ServiceId: "web", Ports: []*shoalv1.PortConfig{{PublishedPort: 8080, TargetPort: 80}}}},
		Endpoints: []*shoalv1.Endpoint{{TaskId: "t1", ServiceId: "web", NodeId: "n1", NodeAddr: "192.168.251.1",
			State: shoalv1.TaskState_TASK_STATE_RUNNING}},
	}}
	if err := p.program(states); err != nil {
		t.Fatal(err)
	}
	if n, err := overlay.PeerRuleCount(ns); err != nil || n != 0 {
		t.Fatalf("before the peer's MAC is known: %d peer rules, %v", n, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, err := overlay.PeerRuleCount(ns)
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the peer's MAC was not picked up by the run loop")
		}
		time.Sleep(20 * time.Millisecond) // poll
	}
}
