package e2e

import (
	"errors"
	"fmt"
	"regexp"
	"syscall"
	"testing"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestRemovedNodeGossipIgnored: `node rm --force` rotates the gossip key
// in the removal's raft entry and the leader drops the removed node's key
// after the grace period. The removed node is frozen (SIGSTOP) before its
// removal, so that it does not learn of it and stop: it keeps the keys it
// had, as a hostile node would. Resumed after the drop, its gossip packets
// reach the other nodes and are refused (they log packets from its
// address that no installed key decrypts), and the cluster gossips on with
// the new key: the remaining nodes stay READY and alive to gossip, and a
// node that joins afterwards — which only ever held the new key — is seen
// alive by gossip too.
func TestRemovedNodeGossipIgnored(t *testing.T) {
	c := newCluster(t, 1, 2)
	h1, w1, w2 := c.hosts[0], c.workers[0], c.workers[1]
	gossipAlive := func(hosts ...*harness.Host) func([]*shoalv1.Node) error {
		return func(nodes []*shoalv1.Node) error {
			for _, h := range hosts {
				role := shoalv1.NodeRole_NODE_ROLE_WORKER
				if h == h1 {
					role = shoalv1.NodeRole_NODE_ROLE_MANAGER
				}
				if err := c.nodeReady(nodes, h, role); err != nil {
					return err
				}
				st := findNode(nodes, c.id(h)).GetStatus()
				if st.GetGossipState() != "alive" || st.GetUnreachable() {
					return fmt.Errorf("%s: gossip %q, unreachable %v; want alive, reachable", h, st.GetGossipState(), st.GetUnreachable())
				}
			}
			return nil
		}
	}
	c.waitNodes(h1, gossipAlive(h1, w1, w2))

	one := func(h *harness.Host) *harness.Proc {
		t.Helper()
		ps := h.Running()
		if len(ps) != 1 {
			t.Fatalf("%s runs %d processes, want its one shoal node", h, len(ps))
		}
		return ps[0]
	}
	mgr, rest, victim := one(h1), one(w1), one(w2)
	if err := victim.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { victim.Signal(syscall.SIGCONT) })
	{
		ctx, cancel := attempt()
		_, err := c.admin(h1).Run(ctx, "node", "rm", "--force", c.id(w2))
		cancel()
		if err != nil {
			t.Fatalf("node rm --force: %v", err)
		}
	}
	// The leader drops the removed node's key once the grace period is
	// over (10 s with the default heartbeat settings).
	harness.Eventually(t, settleTimeout, poll, func() error {
		_, err := mgr.Match(regexp.MustCompile(`superseded gossip keys dropped`))
		return err
	})
	refused := regexp.MustCompile(`(?i)decrypt[^\n]*` + regexp.QuoteMeta(w2.IP+":"))
	before := map[*harness.Proc]int{}
	for _, p := range []*harness.Proc{mgr, rest} {
		before[p] = len(refused.FindAllStringIndex(p.Output(), -1))
	}
	if err := victim.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*harness.Proc{mgr, rest} {
		harness.Eventually(t, settleTimeout, poll, func() error {
			if n := len(refused.FindAllStringIndex(p.Output(), -1)); n <= before[p] {
				return fmt.Errorf("%s has refused no gossip from the removed node (%s) yet", p, w2.IP)
			}
			return nil
		})
	}
	// The cluster gossips on: the rest stays alive, and a node joining now
	// (holding only the new key) is seen alive by gossip.
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		if findNode(nodes, c.id(w2)) != nil {
			return errors.New("the removed node is still listed")
		}
		return gossipAlive(h1, w1)(nodes)
	})
	w3 := c.addHost()
	c.join(w3, c.workerToken, shoalv1.NodeRole_NODE_ROLE_WORKER)
	c.waitNodes(h1, gossipAlive(h1, w1, w3))
}
