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

// TestCLIWaitSurvivesLeaderKill: an operator's `service update` that
// waits for its rollout, talking to the leader's address only, sees the
// leader killed (kill -9 of its host) mid-way: the CLI follows the rollout
// through another manager (it learnt the raft members before the write,
// and watches again from the last event) and exits 0 with the update
// completed, instead of "lost the task stream". A CLI call to the dead
// leader's address then fails at once saying nothing listens there, well
// within its --timeout, instead of retrying for all of it.
func TestCLIWaitSurvivesLeaderKill(t *testing.T) {
	const replicas = 3
	c := newCluster(t, 3, 1)
	leader := c.leader(c.hosts[0], nil)
	var via *harness.Host // a surviving manager
	for _, m := range c.managers {
		if m != leader {
			via = m
			break
		}
	}
	cl := c.admin(via)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err := createServiceFlags(ctx, cl, "web", replicas, onWorker)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	harness.WaitRunning(t, cl, "web", replicas, 3*settleTimeout)

	// The operator's CLI runs on the worker and knows the leader only.
	op := c.workers[0].Remote(c.adminDir, leader.Addr())
	op.Timeout = 5 * time.Minute
	type result struct {
		out, errOut string
		err         error
	}
	done := make(chan result, 1)
	go func() {
		out, errOut, err := op.RunOutput(context.Background(), "--timeout", "4m", "service", "update", "web", "--env-add", "V=2",
			"--update-parallelism", "1", "--update-delay", "2s", "--monitor", "1s", "--wait-timeout", "4m")
		done <- result{out, errOut, err}
	}()
	// Mid-way: one slot updated, others left.
	harness.Eventually(t, 3*settleTimeout, poll, func() error {
		ctx, cancel := attempt()
		defer cancel()
		var svc shoalv1.Service
		if err := cl.JSON(ctx, &svc, "service", "inspect", "web"); err != nil {
			return err
		}
		if st := svc.GetUpdateStatus(); st.GetState() != shoalv1.UpdateState_UPDATE_STATE_UPDATING || st.GetUpdated() < 1 {
			return fmt.Errorf("update status %v, want updating with a slot updated", st)
		}
		return nil
	})
	if err := leader.Crash(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || !strings.Contains(r.out, "web: update completed (3/3 updated)") {
		t.Fatalf("the waiting CLI, its leader killed mid-rollout: %v\nstdout:\n%s\nstderr:\n%s", r.err, r.out, r.errOut)
	}

	// Nothing listens at the dead leader's address: the CLI says so rather
	// than retrying for its whole --timeout (4 minutes, within the 5 the
	// harness allows: a call that returns at all did not wait it out).
	_, errOut, err := op.RunOutput(context.Background(), "--timeout", "4m", "node", "ls")
	if err == nil || !strings.Contains(errOut, "no manager listens at "+leader.Addr()+" (connection refused)") {
		t.Fatalf("node ls against the dead leader: %v\nstderr:\n%s", err, errOut)
	}
}
