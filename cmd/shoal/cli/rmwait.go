package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/client"
	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// rmWatchKinds: a removal's wait follows the tasks, and the nodes, whose
// readiness decides which tasks it waits for.
var rmWatchKinds = []string{"task", "service", "node"}

func (a *app) serviceRm() *cobra.Command {
	var wf waitFlags
	cmd := &cobra.Command{Use: "rm SERVICE...", Aliases: []string{"remove"}, Short: "Remove services", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer cl.Close()
			// Watch before the removals, so that no task's end is missed.
			ws, err := a.startWatch(cmd.Context(), cl, wf, rmWatchKinds)
			if err != nil {
				return err
			}
			defer ws.stop()
			var removed []*shoalv1.Service
			tasks := map[string]*shoalv1.Task{}
			for _, ref := range args {
				svc, err := a.removeService(cmd.Context(), cl.Control, ref, tasks, wf.detach)
				if err != nil {
					return err
				}
				fmt.Fprintln(a.out, ref)
				removed = append(removed, svc)
			}
			if wf.detach {
				return nil
			}
			return ws.waitRemoved(cmd.Context(), removed, tasks)
		}}
	cmd.Flags().BoolVarP(&wf.detach, "detach", "d", false, "return once the services are deleted, without waiting for their tasks to stop")
	cmd.Flags().DurationVar(&wf.wait, "wait-timeout", 2*time.Minute, "how long to wait for the tasks to stop")
	return cmd
}

// removeService deletes the service ref names. Unless detached, it reads
// the service and its tasks (into tasks) first, and deletes it by id, so
// the wait knows what to follow.
func (a *app) removeService(ctx context.Context, ctl shoalv1.ControlClient, ref string, tasks map[string]*shoalv1.Task, detach bool) (*shoalv1.Service, error) {
	cctx, cancel := a.call(ctx)
	defer cancel()
	if detach {
		_, err := ctl.RemoveService(cctx, &shoalv1.RemoveServiceRequest{Ref: ref})
		return nil, err
	}
	got, err := ctl.GetService(cctx, &shoalv1.GetServiceRequest{Ref: ref})
	if err != nil {
		return nil, err
	}
	svc := got.GetService()
	resp, err := client.ListTasks(cctx, ctl, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": svc.GetMeta().GetId()}})
	if err != nil {
		return nil, err
	}
	for _, t := range resp.GetTasks() {
		tasks[t.GetMeta().GetId()] = t
	}
	if _, err := ctl.RemoveService(cctx, &shoalv1.RemoveServiceRequest{Ref: svc.GetMeta().GetId()}); err != nil {
		return nil, err
	}
	return svc, nil
}

// rmLeft splits the tasks of removed services (removed: service ids) that
// have not ended into those a removal waits for and those it cannot.
// Ended (state COMPLETE or later) and deleted tasks are done. A task no
// agent holds (PENDING or before) is deleted by the orchestrator: waited
// for. A task on a READY node is stopped by its agent: waited for. A task
// on a node that is not READY (down, unknown, or no longer in the cluster:
// nodes lacks it) has no agent to report its end (the orchestrator orphans
// it once the node is down or removed): not waited for, only named.
func rmLeft(removed map[string]bool, tasks map[string]*shoalv1.Task, nodes map[string]*shoalv1.Node) (wait, unconfirmed []*shoalv1.Task) {
	for _, t := range sortedTasks(tasks) {
		st := t.GetStatus().GetState()
		switch {
		case !removed[t.GetServiceId()] || st >= shoalv1.TaskState_TASK_STATE_COMPLETE:
		case st <= shoalv1.TaskState_TASK_STATE_PENDING:
			wait = append(wait, t)
		case nodes[t.GetNodeId()].GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_READY:
			wait = append(wait, t)
		default:
			unconfirmed = append(unconfirmed, t)
		}
	}
	return wait, unconfirmed
}

// waitRemoved prints progress until every task of the removed services
// that can be confirmed stopped has ended or is deleted (rmLeft), then
// names, per service, the tasks on nodes that are not ready.
func (w *waiter) waitRemoved(ctx context.Context, removed []*shoalv1.Service, tasks map[string]*shoalv1.Task) error {
	ids := map[string]bool{}
	var names []string
	for _, s := range removed {
		ids[s.GetMeta().GetId()] = true
		names = append(names, s.GetSpec().GetName())
	}
	nodes := map[string]*shoalv1.Node{}
	lctx, cancel := w.a.call(ctx)
	resp, err := client.ListNodes(lctx, w.ctl, &shoalv1.ListNodesRequest{})
	cancel()
	if err != nil {
		return err
	}
	for _, n := range resp.GetNodes() {
		nodes[n.GetMeta().GetId()] = n
	}
	// A stream that broke before any event resumes from the newest version
	// read: no later than the reads, so nothing after them is missed
	// (events seen twice fold by version), and as recent as known, as the
	// watch replays only a ring of recent events.
	var floor uint64
	for _, s := range removed {
		floor = max(floor, s.GetMeta().GetVersion())
	}
	for _, t := range tasks {
		floor = max(floor, t.GetMeta().GetVersion())
	}
	for _, n := range nodes {
		floor = max(floor, n.GetMeta().GetVersion())
	}
	w.setFloor(floor)
	fold := func(ev *shoalv1.WatchEvent) {
		if n := ev.GetObject().GetNode(); n != nil {
			id := n.GetMeta().GetId()
			if ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE {
				delete(nodes, id)
			} else if cur, ok := nodes[id]; !ok || cur.GetMeta().GetVersion() <= n.GetMeta().GetVersion() {
				nodes[id] = n
			}
			return
		}
		if t := ev.GetObject().GetTask(); t != nil && ids[t.GetServiceId()] {
			applyEvent(tasks, t.GetServiceId(), ev)
		}
	}
	began := time.Now()
	last := map[string]int{}
	for {
		wait, unconfirmed := rmLeft(ids, tasks, nodes)
		count := map[string]int{}
		for _, t := range wait {
			count[t.GetServiceId()]++
		}
		for _, s := range removed {
			id := s.GetMeta().GetId()
			if n, ok := last[id]; (!ok || n != count[id]) && count[id] > 0 {
				fmt.Fprintf(w.a.out, "%s: %d task(s) still stopping\n", s.GetSpec().GetName(), count[id])
			}
			last[id] = count[id]
		}
		if len(wait) == 0 {
			for _, s := range removed {
				fmt.Fprintln(w.a.out, removedLine(s, unconfirmed, nodes))
			}
			return nil
		}
		select {
		case ev := <-w.events:
			w.foldQueued(ev, fold)
		case err := <-w.errc:
			list := strings.Join(names, ", ")
			if ctx.Err() != nil {
				return err
			}
			if errdefs.IsDeadlineExceeded(err) {
				return fmt.Errorf("%s removed, but %d task(s) did not stop within %s: %s; see `shoal task ls`",
					list, len(wait), w.wf.wait, taskList(wait, nodes))
			}
			return fmt.Errorf("%s removed, but lost the task stream after %s with %d task(s) still stopping (%s): %s; see `shoal task ls`",
				list, time.Since(began).Round(time.Millisecond), len(wait), status.Convert(err).Message(), taskList(wait, nodes))
		}
	}
}

// removedLine ends a removal: every task stopped, or which tasks sit on
// nodes that are not ready, by node.
func removedLine(s *shoalv1.Service, unconfirmed []*shoalv1.Task, nodes map[string]*shoalv1.Node) string {
	var order []string
	per := map[string]int{}
	for _, t := range unconfirmed {
		if t.GetServiceId() != s.GetMeta().GetId() {
			continue
		}
		if per[t.GetNodeId()] == 0 {
			order = append(order, t.GetNodeId())
		}
		per[t.GetNodeId()]++
	}
	name := s.GetSpec().GetName()
	if len(order) == 0 {
		return name + ": removed (every task stopped)"
	}
	parts := make([]string, 0, len(order))
	for _, id := range order {
		parts = append(parts, fmt.Sprintf("%d task(s) on node %s (%s)", per[id], rmNodeName(id, nodes), rmNodeState(id, nodes)))
	}
	return fmt.Sprintf("%s: removed; %s not confirmed stopped", name, strings.Join(parts, ", "))
}

func rmNodeName(id string, nodes map[string]*shoalv1.Node) string {
	if n := nodes[id]; n != nil && nodeName(n) != "" {
		return nodeName(n)
	}
	return shortID(id)
}

func rmNodeState(id string, nodes map[string]*shoalv1.Node) string {
	n, ok := nodes[id]
	if !ok {
		return "removed"
	}
	return strings.ToLower(enumShort(n.GetStatus().GetState().String(), "NODE_STATE_"))
}

// taskList names tasks with their node and state: "web.1 (node1, running)".
func taskList(tasks []*shoalv1.Task, nodes map[string]*shoalv1.Node) string {
	parts := make([]string, 0, len(tasks))
	for _, t := range tasks {
		where := "no node"
		if t.GetNodeId() != "" {
			where = rmNodeName(t.GetNodeId(), nodes)
		}
		parts = append(parts, fmt.Sprintf("%s (%s, %s)", taskName(t), where,
			strings.ToLower(enumShort(t.GetStatus().GetState().String(), "TASK_STATE_"))))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
