package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/e2e/harness"
)

// TestNodeRemovedClearsNetworks: `node rm --force` of a running worker
// with tasks on an overlay and a bridge network: once its shoal process
// has stopped (it stops for good, its tasks removed), the node keeps none
// of the cluster's network state — no overlay bridge or VXLAN device
// (whose FDB entries point at the cluster's hosts), no bridge network's
// bridge, no task veth.
func TestNodeRemovedClearsNetworks(t *testing.T) {
	c := newCluster(t, 1, 1)
	h1, h2 := c.hosts[0], c.hosts[1]
	cl := h1.Local()
	id2 := c.id(h2)
	run(t, cl, "network", "create", "--driver", "bridge", "--bridge-name", "shtestrm", "--subnet", "10.230.17.0/24", "rmbr")
	run(t, cl, "network", "create", "--subnet", "10.230.18.0/24", "rmov")
	ctx, cancel := attempt()
	err := createServiceFlags(ctx, cl, "rmb", 1, []string{"--network", "rmbr", "--constraint", "node.id==" + id2})
	if err == nil {
		err = createServiceFlags(ctx, cl, "rmo", 1, []string{"--network", "rmov", "--constraint", "node.id==" + id2})
	}
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	runningTasks(t, cl, "rmb", 1)
	runningTasks(t, cl, "rmo", 1)
	links := func() (string, error) {
		ctx, cancel := attempt()
		defer cancel()
		return h2.Exec(ctx, "ip", "-br", "link")
	}
	if l, err := links(); err != nil || !strings.Contains(l, "shx-") || !strings.Contains(l, "shtestrm") {
		t.Fatalf("h2 before the removal: no overlay or bridge devices (%v):\n%s", err, l)
	}
	run(t, cl, "node", "rm", "--force", id2)
	harness.Eventually(t, settleTimeout, poll, func() error {
		if n := len(h2.Running()); n != 0 {
			return fmt.Errorf("h2 still runs %d shoal process(es)", n)
		}
		return nil
	})
	l, err := links()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(l) {
		for _, pre := range []string{"shb-", "shx-", "shv", "shtestrm"} {
			if strings.HasPrefix(f, pre) {
				t.Errorf("removed node h2 kept %s:\n%s", f, l)
			}
		}
	}
}
