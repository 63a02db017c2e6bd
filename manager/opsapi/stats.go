package opsapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/errdefs"
	"github.com/shoal-dev/shoal/manager/logbroker"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// statsSelection is what a StatsRequest names: tasks grouped by node, and
// warnings about those that have no stats to give.
type statsSelection struct {
	nodes    []string // sorted
	byNode   map[string][]string
	warnings []string
}

// selectStats resolves a StatsRequest against the store: a service's
// running tasks, given tasks, or a node's running tasks (at least one of
// the three; given together, a task must match all).
func selectStats(r raftstore.Reader, req *shoalv1.StatsRequest) (*statsSelection, error) {
	if req.GetService() == "" && len(req.GetTaskIds()) == 0 && req.GetNode() == "" {
		return nil, errdefs.InvalidArgumentf("service, task_ids or node: one is required")
	}
	var tasks []*shoalv1.Task
	explicit := len(req.GetTaskIds()) > 0
	out := &statsSelection{byNode: map[string][]string{}}
	if explicit {
		seen := map[string]bool{}
		for i, ref := range req.GetTaskIds() {
			t, err := raftstore.ResolveTask(r, ref)
			if err != nil {
				return nil, fmt.Errorf("task_ids[%d]: %w", i, err)
			}
			if !seen[t.GetMeta().GetId()] {
				seen[t.GetMeta().GetId()] = true
				tasks = append(tasks, t)
			}
		}
	}
	var serviceID, nodeID string
	if req.GetService() != "" {
		svc, err := raftstore.ResolveRef[*shoalv1.Service](r, req.GetService())
		if err != nil {
			return nil, fmt.Errorf("service: %w", err)
		}
		serviceID = svc.GetMeta().GetId()
		if !explicit {
			tasks = raftstore.Find[*shoalv1.Task](r, raftstore.IndexServiceID, serviceID)
		}
	}
	if req.GetNode() != "" {
		n, err := raftstore.ResolveRef[*shoalv1.Node](r, req.GetNode())
		if err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		nodeID = n.GetMeta().GetId()
		if !explicit && serviceID == "" {
			tasks = raftstore.Find[*shoalv1.Task](r, raftstore.IndexNodeID, nodeID)
		}
	}
	for _, t := range tasks {
		id := t.GetMeta().GetId()
		if (serviceID != "" && t.GetServiceId() != serviceID) || (nodeID != "" && t.GetNodeId() != nodeID) {
			if explicit {
				out.warnings = append(out.warnings, fmt.Sprintf("task %s is not of the service and node asked for", id))
			}
			continue
		}
		if t.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING || t.GetNodeId() == "" {
			if explicit {
				out.warnings = append(out.warnings, fmt.Sprintf("task %s is not running (%s): no stats", id, stateName(t)))
			}
			continue
		}
		if _, ok := out.byNode[t.GetNodeId()]; !ok {
			out.nodes = append(out.nodes, t.GetNodeId())
		}
		out.byNode[t.GetNodeId()] = append(out.byNode[t.GetNodeId()], id)
	}
	sort.Strings(out.nodes)
	return out, nil
}

func stateName(t *shoalv1.Task) string {
	return shoalv1.TaskState_name[int32(t.GetStatus().GetState())]
}

// statsTarget finds the node to ask for n tasks' stats, or says at once
// why there is none.
func statsTarget(r raftstore.Reader, nodeID string, n int) (*shoalv1.Node, string) {
	return logbroker.AgentTarget(r, nodeID, "stats of "+logbroker.CountTasks(n)+" unavailable")
}

// nodeReply is one node's latest sample, or why it stopped.
type nodeReply struct {
	node string
	resp *shoalv1.StatsResponse
	warn string // set once the node's stream ended with a problem
	done bool
}

// TaskStats asks the agents of the nodes holding the tasks for their
// stats, all in parallel, and merges their replies: once (after every node
// answered or was given up on), or every second while the caller listens.
// Nodes that are down, unknown or do not answer within ReachTimeout are
// named in warnings; they never hold up the others.
func (s *Server) TaskStats(req *shoalv1.StatsRequest, stream grpc.ServerStreamingServer[shoalv1.StatsResponse]) error {
	sel, err := selectStats(s.cfg.Store.View(), req)
	if err != nil {
		return err
	}
	if req.GetStream() {
		// Headers at once, now the call is accepted (a refusal above
		// keeps its status through the gateway): the first reply waits
		// for the agents, up to a second.
		if err := stream.SendHeader(metadata.MD{}); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	view := s.cfg.Store.View()
	warnings := slices.Clone(sel.warnings)
	replies := make(chan nodeReply, 2*len(sel.nodes)+1)
	var wg sync.WaitGroup
	pending := map[string]bool{}
	for _, id := range sel.nodes {
		node, why := statsTarget(view, id, len(sel.byNode[id]))
		if node == nil {
			warnings = append(warnings, why)
			continue
		}
		pending[id] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.nodeStats(ctx, node, sel.byNode[id], req.GetStream(), replies)
		}()
	}
	defer wg.Wait()
	defer cancel()
	latest := map[string]*shoalv1.StatsResponse{}
	merged := func() *shoalv1.StatsResponse {
		out := &shoalv1.StatsResponse{Warnings: slices.Clone(warnings)}
		for _, id := range sel.nodes {
			if r := latest[id]; r != nil {
				out.Stats = append(out.Stats, r.GetStats()...)
				out.Warnings = append(out.Warnings, r.GetWarnings()...)
			}
		}
		sort.SliceStable(out.Stats, func(i, j int) bool {
			a, b := out.Stats[i], out.Stats[j]
			if a.GetServiceName() != b.GetServiceName() {
				return a.GetServiceName() < b.GetServiceName()
			}
			if a.GetSlot() != b.GetSlot() {
				return a.GetSlot() < b.GetSlot()
			}
			return a.GetTaskId() < b.GetTaskId()
		})
		return out
	}
	handle := func(r nodeReply) {
		if r.resp != nil {
			latest[r.node] = r.resp
		}
		if r.warn != "" {
			warnings = append(warnings, r.warn)
			delete(latest, r.node)
		}
		if r.done || !req.GetStream() {
			delete(pending, r.node)
		}
	}
	if !req.GetStream() {
		for len(pending) > 0 {
			select {
			case <-ctx.Done():
				return nil
			case r := <-replies:
				handle(r)
			}
		}
		return stream.Send(merged())
	}
	// Streaming: one merged reply per interval, from what each node sent
	// last; the first as soon as every node answered once (or gave up).
	t := time.NewTicker(time.Second)
	defer t.Stop()
	asked := len(pending)
	first := map[string]bool{}
	sentFirst := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-replies:
			handle(r)
			first[r.node] = true
			if sentFirst || len(first) < asked {
				continue
			}
		case <-t.C:
		}
		sentFirst = true
		if err := stream.Send(merged()); err != nil {
			return err
		}
	}
}

// nodeStats relays one node's AgentAPI.Stats into out until it ends.
func (s *Server) nodeStats(ctx context.Context, node *shoalv1.Node, ids []string, streaming bool, out chan<- nodeReply) {
	nodeID := node.GetMeta().GetId()
	label := logbroker.NodeLabel(node, nodeID)
	addr := node.GetStatus().GetAgentAddr()
	lost := "stats of " + logbroker.CountTasks(len(ids)) + " unavailable"
	send := func(r nodeReply) {
		r.node = nodeID
		select {
		case out <- r:
		case <-ctx.Done():
		}
	}
	conn, err := s.dial(ctx, addr, nodeID)
	if err != nil {
		send(nodeReply{warn: fmt.Sprintf("%s cannot be dialled at %s (%v): %s", label, addr, err, lost), done: true})
		return
	}
	defer conn.Close()
	nctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timedOut atomic.Bool
	timer := time.AfterFunc(s.cfg.ReachTimeout, func() {
		timedOut.Store(true)
		cancel()
	})
	st, err := shoalv1.NewAgentAPIClient(conn).Stats(nctx, &shoalv1.AgentStatsRequest{TaskIds: ids, Stream: streaming})
	if err == nil {
		_, err = st.Header()
	}
	timer.Stop()
	switch {
	case ctx.Err() != nil:
		return
	case timedOut.Load():
		send(nodeReply{warn: fmt.Sprintf("%s did not answer within %s: %s", label, s.cfg.ReachTimeout, lost), done: true})
		return
	case err != nil:
		send(nodeReply{warn: fmt.Sprintf("%s, agent API at %s: %s: %s", label, addr, status.Convert(err).Message(), lost), done: true})
		return
	}
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			send(nodeReply{done: true})
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				send(nodeReply{warn: fmt.Sprintf("%s, agent API at %s: %s: %s", label, addr, status.Convert(err).Message(), lost), done: true})
			}
			return
		}
		send(nodeReply{resp: resp})
		if !streaming {
			return
		}
	}
}
