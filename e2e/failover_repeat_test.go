package e2e

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// failoverRuns is how many kill -9 rounds TestLeaderFailoverRepeated does:
// SHOAL_E2E_FAILOVER_RUNS, default 3.
func failoverRuns(t *testing.T) int {
	v := os.Getenv("SHOAL_E2E_FAILOVER_RUNS")
	if v == "" {
		return 3
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("SHOAL_E2E_FAILOVER_RUNS=%q: want a positive number", v)
	}
	return n
}

// TestLeaderFailoverRepeated: on 3 managers, N times, kill -9 the leader;
// a client that knows all three managers (running on a surviving host)
// gets a write acknowledged (the time it took is logged, with p50 and max
// at the end: the figure itself is the benchmark's, `cd bench && go run .
// -failover 10`); the killed manager is restarted and must be a reachable
// follower again before the next round. Then the cluster is left idle for
// a while and must hold no election: the raft term (not merely the
// leader, which an election may return to the same node) stays the same.
func TestLeaderFailoverRepeated(t *testing.T) {
	runs := failoverRuns(t)
	c := newCluster(t, 3, 0)
	addrs := make([]string, len(c.managers))
	for i, m := range c.managers {
		addrs[i] = m.Addr()
	}

	var samples []time.Duration
	for i := 1; i <= runs; i++ {
		old := c.leader(c.managers[0], nil)
		var from *harness.Host
		for _, m := range c.managers {
			if m != old {
				from = m
				break
			}
		}
		cl := from.Remote(c.adminDir, addrs...)

		killed := time.Now()
		if err := old.Crash(); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("fo-%d", i)
		var took time.Duration
		harness.Eventually(t, settleTimeout, 10*time.Millisecond, func() error {
			ctx, cancel := attempt()
			defer cancel()
			err := createService(ctx, cl, name, 0)
			var ee *harness.ExecError
			if err == nil || errors.As(err, &ee) && alreadyExists.MatchString(ee.Stderr+ee.Stdout) {
				took = time.Since(killed)
				return nil
			}
			return err
		})
		samples = append(samples, took)
		t.Logf("round %d/%d: kill -9 of leader %s → first acknowledged write via %v: %v",
			i, runs, old, addrs, took.Round(time.Millisecond))

		// Bring the old leader back and wait until it is a reachable
		// follower that has caught up (it serves this round's write).
		p := old.Daemon(t)
		c.waitNodes(from, func(nodes []*shoalv1.Node) error {
			if err := p.CheckRunning(); err != nil {
				return err
			}
			if err := c.nodeReady(nodes, old, shoalv1.NodeRole_NODE_ROLE_MANAGER); err != nil {
				return err
			}
			if r := findNode(nodes, c.id(old)).GetManagerStatus().GetReachability(); r != "reachable" {
				return fmt.Errorf("%s reachability %q", old, r)
			}
			return nil
		})
		harness.Eventually(t, settleTimeout, poll, func() error {
			ctx, cancel := attempt()
			defer cancel()
			svcs, err := services(ctx, c.admin(old))
			if err != nil {
				return err
			}
			if !serviceNames(svcs)[name] {
				return fmt.Errorf("%s does not serve %s yet", old, name)
			}
			return nil
		})
	}

	// An idle cluster holds no election: the same term for 3 s (7
	// heartbeat timeouts).
	term := func() uint64 {
		t.Helper()
		var term uint64
		harness.Eventually(t, settleTimeout, poll, func() error {
			ctx, cancel := attempt()
			defer cancel()
			var err error
			term, err = c.managers[0].RaftTerm(ctx, c.adminDir, addrs...)
			return err
		})
		return term
	}
	before := term()
	time.Sleep(3 * time.Second) // the behaviour under test is "nothing happens for a while"
	if after := term(); after != before {
		t.Errorf("idle cluster held an election: raft term %d, then %d", before, after)
	} else {
		t.Logf("idle for 3 s at raft term %d: no election", before)
	}

	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	t.Logf("FAILOVER runs=%d p50=%v max=%v samples=%v", runs, sorted[(len(sorted)-1)/2].Round(time.Millisecond),
		sorted[len(sorted)-1].Round(time.Millisecond), samples)
}
