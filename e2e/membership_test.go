package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

var mentionsRemoved = regexp.MustCompile(`(?i)removed`)

// TestPromoteDemoteRemove: two workers are promoted and become raft voters
// that serve the API themselves (proved by killing the original manager
// and writing through a promoted one); one is demoted back to a worker;
// removing a READY node without --force is refused with a reason, and
// after `node rm --force` the removed node's certificate is refused on
// every call while the rest of the cluster carries on.
func TestPromoteDemoteRemove(t *testing.T) {
	c := newCluster(t, 1, 2)
	h1, h2, h3 := c.hosts[0], c.workers[0], c.workers[1]
	run := func(via *harness.Host, args ...string) string {
		t.Helper()
		ctx, cancel := attempt()
		defer cancel()
		out, err := c.admin(via).Run(ctx, args...)
		if err != nil {
			t.Fatalf("%v via %s: %v", args, via, err)
		}
		return out
	}

	// Promote both workers: three managers, one leader, all reachable.
	run(h1, "node", "promote", c.id(h2), c.id(h3))
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		for _, h := range []*harness.Host{h1, h2, h3} {
			if err := c.nodeReady(nodes, h, shoalv1.NodeRole_NODE_ROLE_MANAGER); err != nil {
				return err
			}
			if r := findNode(nodes, c.id(h)).GetManagerStatus().GetReachability(); r != "reachable" {
				return fmt.Errorf("%s reachability %q", h, r)
			}
		}
		_, err := leaderOf(nodes)
		return err
	})
	// A promoted node serves the API with its new manager certificate.
	run(h2, "service", "create", "--name", "promoted", "--replicas", "0", "--detach", "--no-resolve-image", testImage)

	// They are voters: with the first manager killed, h2 and h3 still
	// have a quorum and take writes.
	if err := h1.Crash(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		err := createService(ctx, c.admin(h2), "quorum-of-promoted", 0)
		var ee *harness.ExecError
		if errors.As(err, &ee) && alreadyExists.MatchString(ee.Stderr+ee.Stdout) {
			return nil
		}
		return err
	})
	h1.Daemon(t)
	c.waitNodes(h2, func(nodes []*shoalv1.Node) error {
		return c.nodeReady(nodes, h1, shoalv1.NodeRole_NODE_ROLE_MANAGER)
	})

	// Demote h3: a worker again, two managers left.
	run(h2, "node", "demote", c.id(h3))
	c.waitNodes(h2, func(nodes []*shoalv1.Node) error {
		if err := c.nodeReady(nodes, h3, shoalv1.NodeRole_NODE_ROLE_WORKER); err != nil {
			return err
		}
		managers := 0
		for _, n := range nodes {
			if n.GetRole() == shoalv1.NodeRole_NODE_ROLE_MANAGER {
				managers++
			}
		}
		if managers != 2 {
			return fmt.Errorf("%d managers, want 2", managers)
		}
		if findNode(nodes, c.id(h3)).GetManagerStatus() != nil {
			return errors.New("demoted node still has a manager status")
		}
		return nil
	})

	// h3's own certificate, used as client credentials: refused as a worker
	// now, and as a removed node after `node rm`.
	stolen := filepath.Join(h3.Dir, "stolen-certs")
	harness.Eventually(t, settleTimeout, poll, func() error {
		// The demotion renews h3's certificate; copy it once it says worker.
		if err := os.MkdirAll(stolen, 0o700); err != nil {
			return err
		}
		for src, dst := range map[string]string{"ca.crt": "ca.crt", "node.crt": "admin.crt", "node.key": "admin.key"} {
			b, err := os.ReadFile(filepath.Join(h3.NodeCertDir(), src))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(stolen, dst), b, 0o600); err != nil {
				return err
			}
		}
		ctx, cancel := attempt()
		defer cancel()
		_, err := h3.Remote(stolen, h2.Addr()).Run(ctx, "node", "ls")
		if err == nil || !namesWorkerRole.MatchString(err.Error()) {
			return fmt.Errorf("h3's certificate on the control API: %v (want refused as a worker)", err)
		}
		return nil
	})

	// node rm of a READY node needs --force.
	{
		ctx, cancel := attempt()
		_, err := c.admin(h2).Run(ctx, "node", "rm", c.id(h3))
		cancel()
		if err == nil {
			t.Fatal("node rm of a READY node without --force succeeded")
		}
		if !regexp.MustCompile(`(?i)force`).MatchString(err.Error()) {
			t.Errorf("node rm without --force: the message does not mention --force: %v", err)
		}
	}
	h3procs := h3.Running()
	if len(h3procs) != 1 {
		t.Fatalf("%s runs %d processes, want its one shoal node", h3, len(h3procs))
	}
	// A global service puts a container on h3 too; removing h3 must stop it
	// (nobody else ever will, and a replacement is not needed anywhere).
	run(h2, "service", "create", "--name", "everywhere", "--mode", "global", "--monitor", "0", "--no-resolve-image", "demo:latest")
	if pids, err := h3.CgroupPids(); err != nil || len(pids) == 0 {
		t.Fatalf("%s runs no container of the global service (pids %v, err %v):\n%s", h3, pids, err, run(h2, "service", "ps", "everywhere"))
	}
	run(h2, "node", "rm", "--force", c.id(h3))
	// The removed node stops by itself, saying why.
	code, err := h3procs[0].WaitExit(settleTimeout)
	if err != nil {
		t.Fatalf("removed node %s did not stop: %v", h3, err)
	}
	if code == 0 || !mentionsRemoved.MatchString(h3procs[0].Tail(5)) {
		t.Errorf("removed node exited %d; want non-zero with a message saying it was removed:\n%s", code, h3procs[0].Tail(5))
	}
	if pids, err := h3.CgroupPids(); err != nil || len(pids) != 0 {
		t.Errorf("removed node left containers running: pids %v (err %v)", pids, err)
	}
	c.waitNodes(h2, func(nodes []*shoalv1.Node) error {
		if n := findNode(nodes, c.id(h3)); n != nil {
			return fmt.Errorf("removed node still listed: %s", describeNodes([]*shoalv1.Node{n}))
		}
		if len(nodes) != 2 {
			return fmt.Errorf("%d nodes, want 2", len(nodes))
		}
		return nil
	})
	for _, via := range []*harness.Host{h1, h2} {
		ctx, cancel := attempt()
		_, err := h3.Remote(stolen, via.Addr()).Run(ctx, "service", "ls")
		cancel()
		if err == nil || !mentionsRemoved.MatchString(err.Error()) {
			t.Errorf("removed node's certificate via %s: %v, want refused as removed", via, err)
		}
	}
	// The cluster carries on.
	run(h1, "service", "create", "--name", "after-rm", "--replicas", "0", "--detach", "--no-resolve-image", testImage)
}
