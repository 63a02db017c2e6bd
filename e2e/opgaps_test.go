package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
)

// TestFirstManagerListsAllManagers: the first manager's data dir names
// every manager in node.json once two more joined, without a restart (its
// agent's open session is sent the new manager list when raft's
// configuration changes), so a CLI run on that data dir fails over to the
// others when the first manager is gone. Before, node.json listed only
// the first manager until its agent's session opened again, and the CLI
// there failed with "no manager listens".
func TestFirstManagerListsAllManagers(t *testing.T) {
	c := newCluster(t, 3, 0)
	h1 := c.managers[0]
	var want []string
	for _, m := range c.managers {
		want = append(want, m.Addr())
	}
	harness.Eventually(t, settleTimeout, poll, func() error {
		st, err := h1.State()
		if err != nil {
			return err
		}
		for _, a := range want {
			if !slices.Contains(st.Managers, a) {
				return fmt.Errorf("%s's node.json lists managers %v, not %s", h1, st.Managers, a)
			}
		}
		return nil
	})
	if err := h1.Crash(); err != nil {
		t.Fatal(err)
	}
	// The CLI on h1's data dir: h1 refuses connections, the others elect a
	// leader and answer.
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	out, err := h1.Local().Run(ctx, "node", "ls")
	if err != nil {
		t.Fatalf("node ls on the first manager's data dir with it down: %v", err)
	}
	for _, m := range c.managers {
		if !strings.Contains(out, m.Name) {
			t.Fatalf("node ls through the other managers does not list %s:\n%s", m.Name, out)
		}
	}
}

// TestNodeLsRightAfterInit: `node ls` on a node's data dir run while the
// node starts shows it Ready in its first successful answer: the verb
// waits for its own node's agent to connect. Before, the node was listed
// Unknown for about a second after the manager answered, until its
// agent's session opened (listed Starting now): without the wait this
// test failed when its first answer came in that window (one run of two
// here); TestNodeLsWaitsForLocalNode (cmd/shoal/cli) is the deterministic
// check, this one the whole path (a real manager's Watch from the listed
// version).
func TestNodeLsRightAfterInit(t *testing.T) {
	f := harness.NewFabric(t)
	harness.Binary(t)
	h := f.AddHost("h1")
	p := h.Init(t, "--node-name", h.Name)
	var out string
	harness.Eventually(t, startTimeout, 50*time.Millisecond, func() error {
		if err := p.CheckRunning(); err != nil {
			return harness.Permanent(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), attemptLimit)
		defer cancel()
		var err error
		out, err = h.Local().Run(ctx, "node", "ls")
		t.Logf("node ls: %v\n%s", err, out) // shown when the test fails
		return err
	})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], h.Name) || !strings.Contains(lines[1], "Ready") {
		t.Fatalf("first answer of node ls while the node started:\n%s\nwant %s Ready", out, h.Name)
	}
}
