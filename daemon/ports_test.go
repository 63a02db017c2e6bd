package daemon

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"

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
