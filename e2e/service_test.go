package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestServiceRunning: on 3 managers + 2 workers, 10 replicas of the demo
// image are all RUNNING as real containers, spread 2 per node (the
// scheduler spreads a service's tasks): each task's pid is alive in its
// host's cgroups, its address answers HTTP from that host. Scaling to 3
// stops the other 7 containers. Removing the service leaves no task and,
// on every node, nothing of any container: no process in the node's
// cgroups, no task cgroup, no mount, no log file, rootfs, runtime state or
// network namespace.
func TestServiceRunning(t *testing.T) {
	c := newCluster(t, 3, 2)
	h1 := c.hosts[0]
	cl := h1.Local()

	// Without --detach: the CLI waits until the tasks run and says so.
	{
		ctx, cancel := context.WithTimeout(context.Background(), 2*runTimeout)
		out, err := cl.Run(ctx, "service", "create", "--name", "web", "--replicas", "10", "--no-resolve-image", testImage)
		cancel()
		if err != nil {
			t.Fatalf("service create: %v", err)
		}
		if !strings.Contains(out, "10/10 tasks running") {
			t.Errorf("service create printed no \"10/10 tasks running\":\n%s", out)
		}
	}
	var svcID string
	{
		ctx, cancel := attempt()
		var svc shoalv1.Service
		err := cl.JSON(ctx, &svc, "service", "inspect", "web")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if svc.GetSpec().GetName() != "web" || svc.GetSpec().GetReplicas() != 10 || svc.GetMeta().GetId() == "" {
			t.Fatalf("service inspect web: %v", &svc)
		}
		svcID = svc.GetMeta().GetId()
	}

	// All ten running, two on each of the five nodes.
	nodeIDs := map[string]bool{}
	for _, h := range c.hosts {
		nodeIDs[c.id(h)] = true
	}
	running := harness.WaitTasks(t, cl, "web", runTimeout, func(all []*shoalv1.Task) error {
		lv := live(all)
		if len(lv) != 10 {
			return fmt.Errorf("%d live tasks, want 10", len(lv))
		}
		for _, tk := range lv {
			if tk.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
				return fmt.Errorf("task %s is %s, want RUNNING", tk.GetMeta().GetId(), tk.GetStatus().GetState())
			}
			if tk.GetServiceId() != svcID {
				return fmt.Errorf("task %s has service_id %q, want %q", tk.GetMeta().GetId(), tk.GetServiceId(), svcID)
			}
		}
		counts := perNode(lv)
		for id := range nodeIDs {
			if counts[id] != 2 {
				return fmt.Errorf("node %s has %d tasks, want 2 on each node: %v", id, counts[id], counts)
			}
		}
		return c.checkContainers(lv)
	})
	for _, tk := range running {
		ctx, cancel := attempt()
		_, err := getWhoami(ctx, c.hostOf(tk.GetNodeId()), harness.TaskIP(tk))
		cancel()
		if err != nil {
			t.Errorf("task %s: %v", tk.GetMeta().GetId(), err)
		}
	}
	t.Log("10 tasks RUNNING, 2 per node, each answering HTTP on its address")

	// Scale down to 3: three running tasks; the other seven containers stop.
	{
		ctx, cancel := attempt()
		_, err := runDetached(ctx, cl, "service", "scale", "web=3")
		cancel()
		if err != nil {
			t.Fatalf("service scale: %v", err)
		}
	}
	kept := harness.WaitRunning(t, cl, "web", 3, settleTimeout)
	keptIDs := map[string]bool{}
	for _, tk := range kept {
		keptIDs[tk.GetMeta().GetId()] = true
	}
	harness.Eventually(t, settleTimeout, poll, func() error {
		for _, tk := range running {
			if !keptIDs[tk.GetMeta().GetId()] && pidAlive(int(tk.GetStatus().GetPid())) {
				return fmt.Errorf("task %s was scaled away but its pid %d is alive", tk.GetMeta().GetId(), tk.GetStatus().GetPid())
			}
		}
		return nil
	})
	t.Log("scaled to 3 running tasks; the other 7 containers are gone")

	// Remove: the service and, once converged, every task of it are gone,
	// and so is everything its containers had on the nodes.
	{
		ctx, cancel := attempt()
		_, err := cl.Run(ctx, "service", "rm", "web")
		cancel()
		if err != nil {
			t.Fatalf("service rm: %v", err)
		}
	}
	removed := time.Now()
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
	ids := taskIDs(running)
	harness.Eventually(t, settleTimeout, poll, func() error {
		var all []string
		for _, h := range c.hosts {
			left, err := hostLeftovers(h)
			if err != nil {
				return err
			}
			more, err := taskLeftovers(h, ids)
			if err != nil {
				return err
			}
			for _, l := range append(left, more...) {
				all = append(all, h.Name+": "+l)
			}
		}
		if len(all) > 0 {
			return fmt.Errorf("left after service rm: %s", strings.Join(all, "; "))
		}
		return nil
	})
	t.Logf("service removed: no task left, and no process, cgroup, mount, log, rootfs or netns on any node %v after the rm",
		time.Since(removed).Round(time.Millisecond))
}
