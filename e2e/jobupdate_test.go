package e2e

import (
	"context"
	"strings"
	"testing"
)

// TestJobUpdateAndRollback: a job has no rollout. `service update` of a
// one-off job that changes its task (an env var) runs it again with the
// new spec and waits for that run; `service rollback` goes back to the
// previous spec as a third run. Neither leaves an update status behind:
// `service ls` shows no rollout for the job ("-" in UPDATE, not
// "updating" for ever as when the API marked a job's update as a
// rollout no one would finish).
func TestJobUpdateAndRollback(t *testing.T) {
	c := newCluster(t, 1, 0)
	cl := c.hosts[0].Local()
	run := func(want string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		defer cancel()
		out, err := cl.Run(ctx, args...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if !strings.Contains(out, want) {
			t.Fatalf("%s: output lacks %q:\n%s", strings.Join(args, " "), want, out)
		}
	}
	run("once: completed (1/1)", "service", "create", "--name", "once", "--mode", "replicated-job", "--no-resolve-image", testImage, "true")
	run("once: completed (1/1)", "service", "update", "--env-add", "RUN=2", "once")
	checkNoRollout := func(when string) {
		t.Helper()
		ctx, cancel := attempt()
		defer cancel()
		svc, err := serviceNamed(ctx, cl, "once")
		if err != nil {
			t.Fatal(err)
		}
		if st := svc.GetUpdateStatus(); st != nil {
			t.Fatalf("%s: the job has update status %v, want none", when, st)
		}
		ls, err := cl.Run(ctx, "service", "ls")
		if err != nil || strings.Contains(ls, "updating") || strings.Contains(ls, "rolling back") {
			t.Fatalf("%s: service ls: %v\n%s", when, err, ls)
		}
	}
	checkNoRollout("after the update")
	run("once: completed (1/1)", "service", "rollback", "once")
	checkNoRollout("after the rollback")
	ctx, cancel := attempt()
	defer cancel()
	svc, err := serviceNamed(ctx, cl, "once")
	if err != nil {
		t.Fatal(err)
	}
	if it := svc.GetJobStatus().GetIteration(); it != 3 {
		t.Fatalf("job iteration %d after create, update and rollback, want 3", it)
	}
	for _, e := range svc.GetSpec().GetTask().GetContainer().GetEnv() {
		if strings.HasPrefix(e, "RUN=") {
			t.Fatalf("after the rollback the spec still has %q", e)
		}
	}
}
