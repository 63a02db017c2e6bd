package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// rebalanceTimeout covers the settle period a returning node must stay
// ready before auto rebalance counts it (30 s), the moves, and a loaded
// machine.
const rebalanceTimeout = 30*time.Second + 2*settleTimeout

// TestPlacementUnschedulable: a service constrained to a label no node has
// stays PENDING, and `service ps` says why, counting the nodes ("no
// suitable node: 3 do not satisfy the constraints"); once a node gets the
// label, the task is placed there at once (a node change is enough).
func TestPlacementUnschedulable(t *testing.T) {
	c := newCluster(t, 1, 2)
	h1, w := c.hosts[0], c.workers[1]
	cl := h1.Local()
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "nowhere", 1, []string{"--constraint", "node.labels.zone==nowhere"})
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
	}
	const reason = "no suitable node: 3 do not satisfy the constraints"
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		out, err := cl.Run(ctx, "service", "ps", "nowhere")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "Pending") || !strings.Contains(out, reason) {
			return fmt.Errorf("service ps does not show the task pending with %q:\n%s", reason, out)
		}
		return nil
	})
	// A contradiction is refused at update, naming both constraints.
	{
		ctx, cancel := attempt()
		_, err := cl.Run(ctx, "service", "update", "--detach", "--constraint-add", "node.role==manager", "--constraint-add", "node.role==worker", "nowhere")
		cancel()
		if err == nil || !strings.Contains(err.Error(), `"node.role==worker" contradicts constraints[1] "node.role==manager"`) {
			t.Fatalf("contradictory constraints: got %v", err)
		}
	}

	wID := c.id(w)
	{
		ctx, cancel := attempt()
		_, err := cl.Run(ctx, "node", "update", "--label-add", "zone=nowhere", wID)
		cancel()
		if err != nil {
			t.Fatalf("node update: %v", err)
		}
	}
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		tasks, err := serviceTasks(ctx, cl, "nowhere")
		if err != nil {
			return err
		}
		lv := live(tasks)
		if len(lv) != 1 || lv[0].GetNodeId() != wID || lv[0].GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
			return fmt.Errorf("want the task running on %s (%s): %s", w, wID, describeTasks(tasks))
		}
		return nil
	})

	// `service rebalance` on a service that is even already: the request
	// is recorded and cleared by the orchestrator.
	{
		ctx, cancel := attempt()
		out, err := cl.Run(ctx, "service", "rebalance", "nowhere")
		cancel()
		if err != nil || strings.TrimSpace(out) != "nowhere" {
			t.Fatalf("service rebalance: %q, %v", out, err)
		}
	}
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		svcs, err := services(ctx, cl)
		if err != nil {
			return err
		}
		for _, s := range svcs {
			if s.GetSpec().GetName() == "nowhere" && s.GetRebalanceRequested() {
				return fmt.Errorf("rebalance_requested still set")
			}
		}
		return nil
	})
}

// TestPlacementAutoRebalance: a service with --auto-rebalance spread over
// two workers; one loses power, its tasks move to the other; powered on
// again and READY, it gets its share back once it has stayed ready for the
// settle period — three and three — without a slot ever losing its
// running task to the move (start-first: the tasks that moved are new
// ones, and the others never stopped).
func TestPlacementAutoRebalance(t *testing.T) {
	c := newCluster(t, 1, 2)
	h1, victim, other := c.hosts[0], c.workers[0], c.workers[1]
	cl := h1.Local()
	const replicas = 6
	{
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, "even", replicas, []string{"--constraint", "node.role==worker", "--auto-rebalance"})
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
	}
	vID, oID := c.id(victim), c.id(other)
	waitSpread := func(timeout time.Duration, want map[string]int) []*shoalv1.Task {
		t.Helper()
		var lv []*shoalv1.Task
		harness.Eventually(t, timeout, poll, func() error {
			ctx, cancel := attempt()
			defer cancel()
			tasks, err := serviceTasks(ctx, cl, "even")
			if err != nil {
				return err
			}
			lv = live(tasks)
			if len(lv) != replicas {
				return fmt.Errorf("%d live tasks, want %d: %s", len(lv), replicas, describeTasks(tasks))
			}
			for _, tk := range lv {
				if tk.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
					return fmt.Errorf("task %s is %s: %s", tk.GetMeta().GetId(), tk.GetStatus().GetState(), describeTasks(lv))
				}
			}
			if got := perNode(lv); got[vID] != want[vID] || got[oID] != want[oID] {
				return fmt.Errorf("per node %v, want %v: %s", got, want, describeTasks(lv))
			}
			return nil
		})
		return lv
	}
	waitSpread(runTimeout, map[string]int{vID: 3, oID: 3})

	if err := victim.PowerOff(); err != nil {
		t.Fatal(err)
	}
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		if st := findNode(nodes, vID).GetStatus().GetState(); st != shoalv1.NodeState_NODE_STATE_DOWN {
			return fmt.Errorf("%s is %s, want DOWN", victim, st)
		}
		return nil
	})
	before := waitSpread(settleTimeout, map[string]int{vID: 0, oID: 6})

	back := time.Now()
	p := victim.PowerOn(t)
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		if err := p.CheckRunning(); err != nil {
			return err
		}
		return c.nodeReady(nodes, victim, shoalv1.NodeRole_NODE_ROLE_WORKER)
	})
	after := waitSpread(rebalanceTimeout, map[string]int{vID: 3, oID: 3})
	t.Logf("rebalanced %v after power-on (settle period 30 s)", time.Since(back).Round(time.Millisecond))

	// The three that stayed on the other node are tasks that never stopped.
	kept := map[string]bool{}
	for _, tk := range before {
		kept[tk.GetMeta().GetId()] = true
	}
	stayed := 0
	for _, tk := range after {
		if tk.GetNodeId() == oID && kept[tk.GetMeta().GetId()] {
			stayed++
		}
	}
	if stayed != 3 {
		t.Fatalf("%d of the other node's tasks are the ones from before the return, want 3: %s", stayed, describeTasks(after))
	}
}
