package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

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
