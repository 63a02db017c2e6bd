package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestNodeDown: a worker loses power (kill -9 of its processes and its link
// down); the managers mark its node DOWN (the time from the power cut is
// logged) while the other nodes stay READY, and its tasks are replaced on
// the live nodes. Powered on again (`shoal daemon`), it is READY again.
func TestNodeDown(t *testing.T) {
	c := newCluster(t, 1, 2)
	h1, victim, bystander := c.hosts[0], c.workers[0], c.workers[1]
	cl := h1.Local()

	{
		ctx, cancel := attempt()
		err := createService(ctx, cl, "spread", 3)
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
	}
	victimID := c.id(victim)
	waitSpread := func(check func(lv []*shoalv1.Task) error) {
		t.Helper()
		harness.Eventually(t, settleTimeout, poll, func() error {
			ctx, cancel := attempt()
			defer cancel()
			tasks, err := serviceTasks(ctx, cl, "spread")
			if err != nil {
				return err
			}
			lv := live(tasks)
			if len(lv) != 3 {
				return fmt.Errorf("%d live tasks, want 3: %s", len(lv), describeTasks(tasks))
			}
			for _, tk := range lv {
				if tk.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
					return fmt.Errorf("task %s is %s: %s", tk.GetMeta().GetId(), tk.GetStatus().GetState(), describeTasks(lv))
				}
			}
			return check(lv)
		})
	}
	waitSpread(func(lv []*shoalv1.Task) error {
		if n := perNode(lv)[victimID]; n != 1 {
			return fmt.Errorf("%d tasks on %s, want 1 (one per node): %s", n, victim, describeTasks(lv))
		}
		return nil
	})

	cut := time.Now()
	if err := victim.PowerOff(); err != nil {
		t.Fatal(err)
	}
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		n := findNode(nodes, victimID)
		if n == nil {
			return fmt.Errorf("node %s of %s not listed", victimID, victim)
		}
		if st := n.GetStatus().GetState(); st != shoalv1.NodeState_NODE_STATE_DOWN {
			return fmt.Errorf("%s is %s, want DOWN", victim, st)
		}
		return nil
	})
	t.Logf("node down: %s marked DOWN %v after its power-off", victim, time.Since(cut).Round(time.Millisecond))
	down := time.Now()

	// The others are unaffected.
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		if err := c.nodeReady(nodes, h1, shoalv1.NodeRole_NODE_ROLE_MANAGER); err != nil {
			return err
		}
		return c.nodeReady(nodes, bystander, shoalv1.NodeRole_NODE_ROLE_WORKER)
	})
	// Its task is replaced on a live node.
	waitSpread(func(lv []*shoalv1.Task) error {
		if n := perNode(lv)[victimID]; n != 0 {
			return fmt.Errorf("%d live tasks still on the DOWN node %s: %s", n, victim, describeTasks(lv))
		}
		return nil
	})
	t.Logf("its task was replaced %v after the power-off", time.Since(cut).Round(time.Millisecond))
	// A lost node's tasks are replaced at once (no restart delay: they did
	// not crash); the guard leaves room for polling and a loaded machine.
	if d := time.Since(down); d > 3*time.Second {
		t.Errorf("task replaced %v after the node was marked DOWN; want within 3s", d.Round(time.Millisecond))
	}

	// Power back on: the node comes back READY.
	on := time.Now()
	p := victim.PowerOn(t)
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		if err := p.CheckRunning(); err != nil {
			return err
		}
		return c.nodeReady(nodes, victim, shoalv1.NodeRole_NODE_ROLE_WORKER)
	})
	t.Logf("%s READY again %v after power-on", victim, time.Since(on).Round(time.Millisecond))
}
