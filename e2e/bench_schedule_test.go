package e2e

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/e2e/harness"
)

// TestBenchScheduleTiny runs `shoal bench schedule` at a tiny scale (1
// manager as a child process on 127.0.0.1, 20 simulated nodes joined by
// token, 200 tasks in 2 services) and checks that every task was seen
// ASSIGNED and RUNNING, that the store agrees (the command counts RUNNING
// tasks with ListTasks and fails otherwise), and that the output ends with
// the "N tasks/s" line. Its temp dir (manager data, logs) is the test's.
func TestBenchScheduleTiny(t *testing.T) {
	bin := harness.Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "schedule", "--nodes", "20", "--tasks", "200", "--services", "2", "--managers", "1")
	cmd.Env = append(cmd.Environ(), "TMPDIR="+t.TempDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("shoal bench schedule: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	text := strings.TrimRight(string(out), "\n")
	for _, want := range []string{
		"to ASSIGNED (committed): 200 tasks in ",
		"to RUNNING (committed): 200 tasks in ",
		"verified: 200 of 200 tasks RUNNING (ListTasks); nodes marked down during the run: ",
		"simulated nodes 20 (20 joined in ",
		"services 2, tasks 200",
		"simulated agents (this process) CPU meanwhile: ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	lines := strings.Split(text, "\n")
	if last := lines[len(lines)-1]; !regexp.MustCompile(`^[0-9]+ tasks/s$`).MatchString(last) {
		t.Errorf("last line %q is not \"N tasks/s\":\n%s", last, text)
	}
	if regexp.MustCompile(`leader RSS: 0 MiB`).MatchString(text) {
		t.Errorf("no leader RSS measured:\n%s", text)
	}
}

// TestBenchScheduleRefusesBadFlags: out-of-range flags are refused before
// anything is started, naming the flag.
func TestBenchScheduleRefusesBadFlags(t *testing.T) {
	bin := harness.Binary(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--managers", "2"}, "--managers: 2: 1 or 3"},
		{[]string{"--nodes", "0"}, "--nodes: 0"},
		{[]string{"--tasks", "10", "--services", "11"}, "--services: 11"},
		{[]string{"--create-parallel", "0"}, "--create-parallel"},
	} {
		out, err := exec.Command(bin, append([]string{"bench", "schedule"}, c.args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%v: err %v, output %q, want an error naming %q", c.args, err, out, c.want)
		}
	}
}
