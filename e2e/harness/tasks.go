package harness

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// ServiceTasks lists a service's tasks: `service ps SERVICE --format json`.
func ServiceTasks(ctx context.Context, c *Client, service string) ([]*shoalv1.Task, error) {
	return List[shoalv1.Task](ctx, c, "service", "ps", service)
}

// LiveTasks keeps the tasks that are live (docs/task-states.md): desired
// state at most RUNNING and observed state before COMPLETE.
func LiveTasks(tasks []*shoalv1.Task) []*shoalv1.Task {
	var out []*shoalv1.Task
	for _, tk := range tasks {
		if tk.GetDesiredState() <= shoalv1.TaskState_TASK_STATE_RUNNING && tk.GetStatus().GetState() < shoalv1.TaskState_TASK_STATE_COMPLETE {
			out = append(out, tk)
		}
	}
	return out
}

// DescribeTasks is a one-line summary of tasks for failure messages.
func DescribeTasks(tasks []*shoalv1.Task) string {
	var parts []string
	for _, tk := range tasks {
		st := tk.GetStatus()
		s := fmt.Sprintf("[%s.%d %s node=%s desired=%s state=%s", tk.GetServiceName(), tk.GetSlot(), shortTaskID(tk.GetMeta().GetId()), tk.GetNodeId(),
			strings.TrimPrefix(tk.GetDesiredState().String(), "TASK_STATE_"),
			strings.TrimPrefix(st.GetState().String(), "TASK_STATE_"))
		if st.GetMessage() != "" {
			s += fmt.Sprintf(" msg=%q", st.GetMessage())
		}
		if st.GetErr() != "" {
			s += fmt.Sprintf(" err=%q", st.GetErr())
		}
		parts = append(parts, s+"]")
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

func shortTaskID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// WaitRunning polls `service ps SERVICE` through c until the service has
// exactly replicas live tasks, all RUNNING, and returns them; it fails the
// test with the last listing after timeout. Only call it from the test's
// own goroutine.
func WaitRunning(t testing.TB, c *Client, service string, replicas int, timeout time.Duration) []*shoalv1.Task {
	t.Helper()
	return WaitTasks(t, c, service, timeout, func(tasks []*shoalv1.Task) error {
		lv := LiveTasks(tasks)
		if len(lv) != replicas {
			return fmt.Errorf("%d live tasks, want %d RUNNING", len(lv), replicas)
		}
		for _, tk := range lv {
			if tk.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
				return fmt.Errorf("task %s is %s, want RUNNING", tk.GetMeta().GetId(), tk.GetStatus().GetState())
			}
		}
		return nil
	})
}

// WaitTasks polls `service ps SERVICE` through c until check accepts the
// whole listing (every task, live or not), and returns the live tasks of
// the listing check accepted.
func WaitTasks(t testing.TB, c *Client, service string, timeout time.Duration, check func(all []*shoalv1.Task) error) []*shoalv1.Task {
	t.Helper()
	var got []*shoalv1.Task
	Eventually(t, timeout, 200*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tasks, err := ServiceTasks(ctx, c, service)
		if err != nil {
			return err
		}
		if err := check(tasks); err != nil {
			return fmt.Errorf("service %s: %w\ntasks: %s", service, err, DescribeTasks(tasks))
		}
		got = LiveTasks(tasks)
		return nil
	})
	return got
}

// TaskIP is the first address of a task's status (without a /prefix
// length), "" if it has none.
func TaskIP(tk *shoalv1.Task) string {
	for _, a := range tk.GetStatus().GetAddresses() {
		ip, _, _ := strings.Cut(a, "/")
		if ip != "" {
			return ip
		}
	}
	return ""
}
