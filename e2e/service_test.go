package e2e

import (
	"fmt"
	"testing"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestServiceAssigned: on 3 managers + 2 workers, 10 replicas are all
// ASSIGNED, spread 2 per node (the scheduler spreads a service's tasks);
// scaling to 3 leaves 3 live tasks; removing the service leaves none.
func TestServiceAssigned(t *testing.T) {
	c := newCluster(t, 3, 2)
	h1 := c.hosts[0]
	cl := h1.Local()

	{
		ctx, cancel := attempt()
		err := createService(ctx, cl, "web", 10)
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
	}
	var svcID string
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		var svc shoalv1.Service
		if err := cl.JSON(ctx, &svc, "service", "inspect", "web"); err != nil {
			return err
		}
		if svc.GetSpec().GetName() != "web" || svc.GetSpec().GetReplicas() != 10 || svc.GetMeta().GetId() == "" {
			return fmt.Errorf("service inspect web: %v", &svc)
		}
		svcID = svc.GetMeta().GetId()
		return nil
	})

	// All ten assigned, two on each of the five nodes.
	nodeIDs := map[string]bool{}
	for _, h := range c.hosts {
		nodeIDs[c.id(h)] = true
	}
	waitTasks := func(want int, check func([]*shoalv1.Task) error) {
		t.Helper()
		harness.Eventually(t, settleTimeout, poll, func() error {
			ctx, cancel := attempt()
			defer cancel()
			tasks, err := serviceTasks(ctx, cl, "web")
			if err != nil {
				return err
			}
			lv := live(tasks)
			if len(lv) != want {
				return fmt.Errorf("%d live tasks, want %d: %s", len(lv), want, describeTasks(tasks))
			}
			for _, tk := range lv {
				if tk.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_ASSIGNED {
					return fmt.Errorf("task %s is %s, want ASSIGNED: %s", tk.GetMeta().GetId(), tk.GetStatus().GetState(), describeTasks(lv))
				}
				if !nodeIDs[tk.GetNodeId()] {
					return fmt.Errorf("task %s on unknown node %q", tk.GetMeta().GetId(), tk.GetNodeId())
				}
				if tk.GetServiceId() != svcID {
					return fmt.Errorf("task %s has service_id %q, want %q", tk.GetMeta().GetId(), tk.GetServiceId(), svcID)
				}
			}
			if check != nil {
				return check(lv)
			}
			return nil
		})
	}
	waitTasks(10, func(lv []*shoalv1.Task) error {
		counts := perNode(lv)
		for id := range nodeIDs {
			if counts[id] != 2 {
				return fmt.Errorf("node %s has %d tasks, want 2 on each node: %v", id, counts[id], counts)
			}
		}
		return nil
	})
	t.Log("10 tasks ASSIGNED, 2 per node")

	// Scale down to 3: three live tasks, still ASSIGNED.
	{
		ctx, cancel := attempt()
		_, err := runDetached(ctx, cl, "service", "scale", "web=3")
		cancel()
		if err != nil {
			t.Fatalf("service scale: %v", err)
		}
	}
	waitTasks(3, nil)
	t.Log("scaled to 3 live tasks")

	// Remove: the service and, once converged, every task of it are gone.
	{
		ctx, cancel := attempt()
		_, err := cl.Run(ctx, "service", "rm", "web")
		cancel()
		if err != nil {
			t.Fatalf("service rm: %v", err)
		}
	}
	harness.Eventually(t, settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		svcs, err := services(ctx, cl)
		if err != nil {
			return err
		}
		if serviceNames(svcs)["web"] {
			return fmt.Errorf("service web still listed")
		}
		tasks, err := allTasks(ctx, cl)
		if err != nil {
			return err
		}
		var left []*shoalv1.Task
		for _, tk := range tasks {
			if tk.GetServiceId() == svcID || tk.GetServiceName() == "web" {
				left = append(left, tk)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("%d tasks of the removed service left: %s", len(left), describeTasks(left))
		}
		return nil
	})
	t.Log("service removed, no task left")
}
