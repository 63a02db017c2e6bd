package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/agent/simagent"
	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// -agents N keeps N simulated agents connected to the shoal cluster of
// the throughput cells: each a real node identity joined by the worker
// token through the managers' NodeCA, running the real agent session code
// over mTLS (agent/simagent), one session each on the leader's dispatcher,
// heartbeating through every cell. They run in the benchmark process, so
// their CPU is in the cells' client CPU; startAgents measures it alone
// before the cells, and the leader's in the same window. -agents-network
// also creates an overlay network and a service of one task per agent on
// it, RUNNING before the cells, so that every session holds network state.

const (
	agentsJoinParallel = 16
	agentsWave         = 50
	// agentsIdleWindow is how long the agents' own CPU is read, with their
	// sessions open and no write.
	agentsIdleWindow = 3 * time.Second
	benchNetworkName = "bench-net"
	benchAgentsSvc   = "bench-agents"
)

// checkAgents refuses -agents and -agents-network combinations that would
// measure nothing with agents.
func checkAgents(o *options) error {
	if o.agents < 0 {
		return fmt.Errorf("-agents: want a number of simulated agents >= 0, got %d", o.agents)
	}
	if o.agentsNetwork && o.agents == 0 {
		return errors.New("-agents-network: needs -agents N > 0 (one task per agent)")
	}
	if o.agents > 0 && o.only != "shoal" && o.only != "all" {
		return fmt.Errorf("-agents: the agents join the shoal clusters of the throughput cells; want -only shoal or all, got %q", o.only)
	}
	return nil
}

// agentsSetup is what startAgents measured, for the report.
type agentsSetup struct {
	join, sessions, running time.Duration
	// idleCPU is the benchmark process's CPU per second of wall time with
	// the agents connected and no write: the agents' own cost;
	// leaderIdleCPU the leader's in the same window (their sessions').
	idleCPU, leaderIdleCPU time.Duration
}

// startAgents joins and connects e.o.agents simulated agents to c and,
// with -agents-network, runs a service of one task per agent on an
// overlay network; the returned stop ends every session.
func startAgents(ctx context.Context, e *env, c *shoalCluster, leader *shoalNode, cl *client.Client, label string) (stop func(), set agentsSetup, err error) {
	n := e.o.agents
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("sim-%04d", i+1)
	}
	e.logf("%s: joining %d simulated agents (%d at a time)", label, n, agentsJoinParallel)
	start := time.Now()
	ids, err := simagent.Join(ctx, c.nodes[0].addr, c.tokens.GetWorker(), names, agentsJoinParallel)
	if err != nil {
		return nil, set, err
	}
	set.join = time.Since(start)
	e.logf("%s: opening %d sessions (%d at a time)", label, n, agentsWave)
	start = time.Now()
	fleet, err := simagent.Start(ctx, ids, c.managerAddrs(), &simagent.Counters{Target: int64(n)}, agentsWave, 2*time.Minute, nil)
	if err != nil {
		return nil, set, err
	}
	stopFleet := func() {
		e.logf("%s: closing %d sessions", label, fleet.Size())
		fleet.Stop()
	}
	defer onError(&err, stopFleet)
	set.sessions = time.Since(start)
	if err := waitAgentsReady(ctx, c, cl, n); err != nil {
		return nil, set, err
	}
	if e.o.agentsNetwork {
		start = time.Now()
		if err := runAgentsService(ctx, e, c, cl, label, n); err != nil {
			return nil, set, err
		}
		set.running = time.Since(start)
	}
	if c := fleet.Connected(); c != n {
		return nil, set, fmt.Errorf("%d of %d simulated agents have a session", c, n)
	}
	// The agents' own CPU: the benchmark process does nothing else now.
	before, leaderBefore := selfCPU(), procsCPU(leader.proc)
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return nil, set, ctx.Err()
	case <-time.After(agentsIdleWindow): // a measurement window, not a wait for anything
	}
	secs := time.Since(t0).Seconds()
	set.idleCPU = time.Duration(float64(selfCPU()-before) / secs)
	set.leaderIdleCPU = time.Duration(float64(procsCPU(leader.proc)-leaderBefore) / secs)
	running := ""
	if e.o.agentsNetwork {
		running = fmt.Sprintf(", their service on the network RUNNING in %.1fs", set.running.Seconds())
	}
	e.logf("%s: %d agents connected (join %.1fs, sessions %.1fs%s); with no write their CPU is %s per s, the leader's %s per s", label, n, set.join.Seconds(), set.sessions.Seconds(), running, ms(set.idleCPU), ms(set.leaderIdleCPU))
	return stopFleet, set, nil
}

// waitAgentsReady polls ListNodes until n workers are READY.
func waitAgentsReady(ctx context.Context, c *shoalCluster, cl *client.Client, n int) error {
	err := c.poll(ctx, time.Minute, 100*time.Millisecond, func(ctx context.Context) error {
		lr, err := client.ListNodes(ctx, cl.Control, &shoalv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		ready := 0
		for _, nd := range lr.GetNodes() {
			if nd.GetRole() == shoalv1.NodeRole_NODE_ROLE_WORKER && nd.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_READY {
				ready++
			}
		}
		if ready != n {
			return fmt.Errorf("%d of %d simulated agents READY", ready, n)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the simulated agents: %w", err)
	}
	return nil
}

// agentsServiceSpec is -agents-network's service: n replicas, one per
// worker (the simulated agents), on the network.
func agentsServiceSpec(n int, network string) *shoalv1.ServiceSpec {
	spec := benchServiceSpec(benchAgentsSvc, "agents")
	spec.Replicas = int64(n)
	spec.Task.Placement = &shoalv1.Placement{Constraints: []string{"node.role==worker"}, MaxReplicasPerNode: 1}
	spec.Task.Networks = []*shoalv1.NetworkAttachmentConfig{{Target: network}}
	return spec
}

// runAgentsService creates the overlay network and the service of one
// task per agent, and waits until all n tasks are RUNNING.
func runAgentsService(ctx context.Context, e *env, c *shoalCluster, cl *client.Client, label string, n int) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	spec := &shoalv1.NetworkSpec{Name: benchNetworkName, Driver: "overlay"}
	if n > 250 {
		// The pool's default /24 holds 253 tasks.
		spec.Subnet = "10.221.0.0/20"
	}
	nw, err := cl.Control.CreateNetwork(cctx, &shoalv1.CreateNetworkRequest{Spec: spec})
	cancel()
	if err != nil {
		return fmt.Errorf("creating the overlay network %s: %w", benchNetworkName, err)
	}
	e.logf("%s: network %s: subnet %s, VNI %d", label, benchNetworkName, nw.GetNetwork().GetSubnet(), nw.GetNetwork().GetVni())
	cctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	_, err = cl.Control.CreateService(cctx, &shoalv1.CreateServiceRequest{Spec: agentsServiceSpec(n, benchNetworkName)})
	cancel()
	if err != nil {
		return fmt.Errorf("creating the service %s: %w", benchAgentsSvc, err)
	}
	e.logf("%s: service %s: waiting for %d tasks RUNNING", label, benchAgentsSvc, n)
	err = c.poll(ctx, 2*time.Minute, 200*time.Millisecond, func(ctx context.Context) error {
		lt, err := client.ListTasks(ctx, cl.Control, &shoalv1.ListTasksRequest{Filters: map[string]string{"service": benchAgentsSvc}})
		if err != nil {
			return err
		}
		running, attached := 0, 0
		var others []string // the first few tasks not RUNNING, for the error
		for _, t := range lt.GetTasks() {
			if t.GetStatus().GetState() == shoalv1.TaskState_TASK_STATE_RUNNING {
				running++
				if len(t.GetNetworks()) > 0 {
					attached++
				}
			} else if len(others) < 3 {
				others = append(others, fmt.Sprintf("%s %s on %q desired %s (%s)", t.GetMeta().GetId(), t.GetStatus().GetState(),
					t.GetNodeId(), t.GetDesiredState(), t.GetStatus().GetMessage()))
			}
		}
		if running != n || attached != n {
			return fmt.Errorf("%d of %d tasks RUNNING, %d with a network attachment; not RUNNING: %v", running, n, attached, others)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("service %s: %w", benchAgentsSvc, err)
	}
	return nil
}

// onError runs undo if *err is set when the deferring function returns
// (`defer onError(&err, undo)`). startAgents's own deferred closure called
// its stop result, which its failing return had already set to nil: a
// service that did not come up (1,000 agents on a /24) panicked instead
// of reporting why (TestStartAgentsStopsItsFleetOnError).
func onError(err *error, undo func()) {
	if *err != nil {
		undo()
	}
}
