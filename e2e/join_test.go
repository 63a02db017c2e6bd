package e2e

import (
	"fmt"
	"testing"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestJoinByToken: h1 inits, h2 and h3 join with the manager token, h4 and
// h5 with the worker token; every manager lists the same five READY nodes,
// three of them managers with exactly one leader.
func TestJoinByToken(t *testing.T) {
	c := newCluster(t, 3, 2)

	check := func(nodes []*shoalv1.Node) error {
		if len(nodes) != 5 {
			return fmt.Errorf("%d nodes listed, want 5", len(nodes))
		}
		for _, h := range c.managers {
			if err := c.nodeReady(nodes, h, shoalv1.NodeRole_NODE_ROLE_MANAGER); err != nil {
				return err
			}
		}
		for _, h := range c.workers {
			if err := c.nodeReady(nodes, h, shoalv1.NodeRole_NODE_ROLE_WORKER); err != nil {
				return err
			}
			if n := findNode(nodes, c.id(h)); n.GetManagerStatus().GetLeader() {
				return fmt.Errorf("worker %s claims to be the leader", h)
			}
		}
		managers := 0
		for _, n := range nodes {
			if n.GetRole() == shoalv1.NodeRole_NODE_ROLE_MANAGER {
				managers++
			}
		}
		if managers != 3 {
			return fmt.Errorf("%d managers, want 3", managers)
		}
		_, err := leaderOf(nodes)
		return err
	}

	// Through each manager's API (admin credentials, --host) ...
	leaders := map[string]bool{}
	for _, m := range c.managers {
		nodes := c.waitNodes(m, check)
		l, _ := leaderOf(nodes)
		leaders[l.GetMeta().GetId()] = true
		t.Logf("node ls via %s: %s", m, describeNodes(nodes))
	}
	if len(leaders) != 1 {
		t.Errorf("managers disagree on the leader: %v", leaders)
	}
	// ... and the local way on h1 (--data-dir).
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		nodes, err := harness.List[shoalv1.Node](ctx, c.hosts[0].Local(), "node", "ls")
		if err != nil {
			return err
		}
		return check(nodes)
	})
}
