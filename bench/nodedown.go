package main

import (
	"context"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

const nodeDownTimeout = 60 * time.Second

// benchNodeDown kills a worker n times and times how long the manager
// takes to list it as DOWN.
func benchNodeDown(ctx context.Context, e *env, n int) (*sampleSet, error) {
	res := &sampleSet{Name: "nodedown", What: "kill -9 of a worker (1 manager + 1 worker) → ListNodes shows it NODE_STATE_DOWN (polled every 10 ms)"}
	c, err := startShoal(ctx, e, "nodedown", 1, e.o.shoalIPs, e.o.workerIP)
	if err != nil {
		return res, err
	}
	defer c.stop()
	worker := c.nodes[len(c.nodes)-1]
	cl, err := c.dial(ctx, c.managerAddrs()...)
	if err != nil {
		return res, err
	}
	defer cl.Close()
	if s := clusterSettings(ctx, c); s != "" {
		res.Notes = append(res.Notes, s)
	}

	for i := 1; i <= n; i++ {
		e.logf("nodedown %d/%d: kill -9 of the worker %s", i, n, worker.addr)
		killed := time.Now()
		if err := c.killNode(worker); err != nil {
			return res, err
		}
		var last shoalv1.NodeState
		var lastErr error
		for {
			if err := c.checkAlive(); err != nil {
				return res, err
			}
			lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			lr, err := client.ListNodes(lctx, cl.Control, &shoalv1.ListNodesRequest{})
			cancel()
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			if err != nil {
				lastErr = err
			} else if nd := findNode(lr.GetNodes(), worker.ip); nd == nil {
				lastErr = fmt.Errorf("worker %s not listed", worker.addr)
			} else if last = nd.GetStatus().GetState(); last == shoalv1.NodeState_NODE_STATE_DOWN {
				break
			}
			if time.Since(killed) > nodeDownTimeout {
				return res, fmt.Errorf("worker %s not DOWN %v after kill -9 (state %s, last error %v)", worker.addr, nodeDownTimeout, last, lastErr)
			}
			time.Sleep(10 * time.Millisecond)
		}
		d := time.Since(killed)
		res.Samples = append(res.Samples, d)
		e.logf("nodedown %d/%d: DOWN after %v", i, n, d.Round(time.Millisecond))

		restarted := time.Now()
		if err := c.restart(worker); err != nil {
			return res, err
		}
		err := c.poll(ctx, rejoinTimeout, 100*time.Millisecond, c.nodesReady)
		if err != nil {
			return res, fmt.Errorf("waiting for the restarted worker to be READY: %w", err)
		}
		e.logf("nodedown %d/%d: worker READY again %v after its restart", i, n, time.Since(restarted).Round(time.Millisecond))
	}
	return res, nil
}

// clusterSettings describes the heartbeat settings that bound detection.
func clusterSettings(ctx context.Context, c *shoalCluster) string {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.getCluster(cctx, c.nodes[0].addr)
	if err != nil {
		return ""
	}
	s := resp.GetCluster().GetSettings()
	if s.GetHeartbeatPeriodMs() == 0 {
		return ""
	}
	return fmt.Sprintf("cluster settings: heartbeat period %d ms, node down after %d missed heartbeats (≈%d ms)",
		s.GetHeartbeatPeriodMs(), s.GetNodeDownAfterMissed(), s.GetHeartbeatPeriodMs()*s.GetNodeDownAfterMissed())
}
