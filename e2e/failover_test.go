package e2e

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestLeaderFailover: kill -9 the leader of 3 managers; a write through
// another manager succeeds once a new leader is elected (the time from the
// kill to the first acknowledged write is logged); the old leader, restarted
// with `shoal daemon`, rejoins as a follower and serves every object.
func TestLeaderFailover(t *testing.T) {
	c := newCluster(t, 3, 0)
	h1 := c.hosts[0]

	{
		ctx, cancel := attempt()
		err := createService(ctx, c.admin(h1), "before", 2)
		cancel()
		if err != nil {
			t.Fatalf("service create before: %v", err)
		}
	}
	old := c.leader(h1, nil)
	var other *harness.Host
	for _, m := range c.managers {
		if m != old {
			other = m
			break
		}
	}
	t.Logf("leader is %s; writing through %s after killing it", old, other)

	// kill -9 the leader (every process of its host).
	killed := time.Now()
	if err := old.Crash(); err != nil {
		t.Fatal(err)
	}

	// The first write through a surviving manager that is acknowledged. A
	// call that timed out may still have committed: "already exists" then
	// counts as success.
	cl := c.admin(other)
	attempts := 0
	harness.Eventually(t, settleTimeout, 100*time.Millisecond, func() error {
		attempts++
		ctx, cancel := attempt()
		defer cancel()
		err := createService(ctx, cl, "after", 2)
		var ee *harness.ExecError
		if errors.As(err, &ee) && alreadyExists.MatchString(ee.Stderr+ee.Stdout) {
			return nil
		}
		return err
	})
	t.Logf("failover: first acknowledged write %v after kill -9 of the leader (%d attempts)",
		time.Since(killed).Round(time.Millisecond), attempts)

	newLeader := c.leader(other, old)
	t.Logf("new leader: %s (%v after the kill)", newLeader, time.Since(killed).Round(time.Millisecond))

	// Restart the old leader from its data dir.
	restarted := time.Now()
	p := old.Daemon(t)
	c.waitNodes(other, func(nodes []*shoalv1.Node) error {
		if err := p.CheckRunning(); err != nil {
			return err
		}
		if err := c.nodeReady(nodes, old, shoalv1.NodeRole_NODE_ROLE_MANAGER); err != nil {
			return err
		}
		if ms := findNode(nodes, c.id(old)).GetManagerStatus(); ms.GetReachability() != "" && ms.GetReachability() != "reachable" {
			return fmt.Errorf("old leader's manager reachability is %q", ms.GetReachability())
		}
		_, err := leaderOf(nodes)
		return err
	})
	// Its own API (the CLI runs on its host, --host to itself) serves every
	// object, old and new.
	harness.Eventually(t, settleTimeout, poll, func() error {
		if err := p.CheckRunning(); err != nil {
			return err
		}
		ctx, cancel := attempt()
		defer cancel()
		svcs, err := services(ctx, c.admin(old))
		if err != nil {
			return err
		}
		names := serviceNames(svcs)
		if !names["before"] || !names["after"] {
			return fmt.Errorf("services via the restarted manager: %v, want before and after", names)
		}
		nodes, err := c.nodes(ctx, old)
		if err != nil {
			return err
		}
		if len(nodes) != 3 {
			return fmt.Errorf("%d nodes via the restarted manager, want 3", len(nodes))
		}
		return nil
	})
	t.Logf("old leader %s rejoined and serves all objects %v after its restart", old, time.Since(restarted).Round(time.Millisecond))

	// And it takes writes again (forwarded to the leader).
	{
		ctx, cancel := attempt()
		err := createService(ctx, c.admin(old), "rejoined", 1)
		cancel()
		if err != nil {
			t.Fatalf("write through the restarted manager: %v", err)
		}
	}
}
