package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/e2e/harness"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestInitAndHostname: through the whole path (CLI, API, agent, runtime),
// `service create --init` makes the container's PID 1 the tiny init with
// the command as its child, and the task still completes with the
// command's status; a container's environment has HOSTNAME, its hostname.
func TestInitAndHostname(t *testing.T) {
	c := newCluster(t, 1, 0)
	cl := c.hosts[0].Local()
	for _, s := range []struct {
		name  string
		flags []string
		args  []string
	}{
		{"withinit", []string{"--init", "--restart-condition", "none"}, []string{"cat", "/proc/1/cmdline"}},
		{"hostenv", []string{"--restart-condition", "none"}, []string{"env"}},
	} {
		ctx, cancel := attempt()
		err := createServiceFlags(ctx, cl, s.name, 1, s.flags, s.args...)
		cancel()
		if err != nil {
			t.Fatalf("service create %s: %v", s.name, err)
		}
	}
	done := map[string]*shoalv1.Task{}
	for _, name := range []string{"withinit", "hostenv"} {
		harness.WaitTasks(t, cl, name, settleTimeout, func(tasks []*shoalv1.Task) error {
			if len(tasks) != 1 {
				return fmt.Errorf("%d tasks, want 1", len(tasks))
			}
			st := tasks[0].GetStatus()
			switch st.GetState() {
			case shoalv1.TaskState_TASK_STATE_COMPLETE:
				done[name] = tasks[0]
				return nil
			case shoalv1.TaskState_TASK_STATE_FAILED, shoalv1.TaskState_TASK_STATE_REJECTED:
				return harness.Permanent(fmt.Errorf("%s task %s: %s", name, st.GetState(), st.GetErr()))
			}
			return fmt.Errorf("%s task is %s, want COMPLETE", name, st.GetState())
		})
	}
	logs := func(name, want string) {
		t.Helper()
		harness.Eventually(t, settleTimeout, poll, func() error {
			ctx, cancel := attempt()
			defer cancel()
			out, err := cl.Run(ctx, "service", "logs", name)
			if err != nil {
				return err
			}
			if !strings.Contains(out, want) {
				return fmt.Errorf("service logs %s does not show %q:\n%s", name, want, out)
			}
			return nil
		})
	}
	// /proc/1/cmdline is NUL-separated: "/dev/init\x00--\x00/shoal-demo\x00cat...".
	logs("withinit", "/dev/init\x00--\x00")
	logs("hostenv", "HOSTNAME="+done["hostenv"].GetMeta().GetId()[:12])
}
