package agent

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/agent/image"
	"github.com/shoal-dev/shoal/agent/runtime"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// healthEnv is an executor whose reports are recorded and whose fake
// runtime answers exec probes with exec.
type healthEnv struct {
	*execEnv
	mu      sync.Mutex // guards reports
	reports []*shoalv1.TaskStatus
	probes  atomic.Int64
}

func newHealthEnv(t *testing.T, exec func(args []string) (int, string)) *healthEnv {
	h := &healthEnv{execEnv: &execEnv{t: t, dir: t.TempDir(), rt: runtime.NewFake(), images: newFakeImages(), net: &fakeNet{up: map[string]bool{}}}}
	h.rt.ExecFunc = func(_ context.Context, _ string, args []string) (int, []byte, error) {
		h.probes.Add(1)
		code, out := exec(args)
		return code, []byte(out), nil
	}
	h.onStatus = func(_ *shoalv1.Task, st *shoalv1.TaskStatus) {
		h.mu.Lock()
		h.reports = append(h.reports, st)
		h.mu.Unlock()
	}
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *healthEnv) nReports() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.reports)
}

// waitHealth polls (with a deadline) for the task's status to have health.
func (h *healthEnv) waitHealth(id string, want shoalv1.TaskHealth) *shoalv1.TaskStatus {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.ex.mu.Lock()
		st := h.ex.statuses[id]
		h.ex.mu.Unlock()
		if st.GetHealth() == want {
			return st
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("task %s: health %s, want %s (status %v)", id, st.GetHealth(), want, st)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func checkedTask(id string, hc *shoalv1.HealthCheck) *shoalv1.Task {
	t := running(id)
	t.Spec.Container.Healthcheck = hc
	return t
}

func TestExecutorHealthyTaskReportsOnlyChanges(t *testing.T) {
	h := newHealthEnv(t, func([]string) (int, string) { return 0, "fine" })
	h.ex.Assign(true, []*shoalv1.Task{checkedTask("t1", &shoalv1.HealthCheck{Type: "exec", Command: []string{"/bin/check"}, IntervalMs: 100})}, nil)
	st := h.waitHealth("t1", shoalv1.TaskHealth_TASK_HEALTH_HEALTHY)
	if st.GetState() != shoalv1.TaskState_TASK_STATE_RUNNING || st.GetHealthOutput() != "fine" || st.GetHealthCheckedAt() == nil || st.GetPid() == 0 {
		t.Fatalf("healthy status %v", st)
	}
	// The first RUNNING report already says STARTING: discovery never
	// sees a checked task without a health.
	h.mu.Lock()
	for _, r := range h.reports {
		if r.GetState() == shoalv1.TaskState_TASK_STATE_RUNNING {
			if r.GetHealth() != shoalv1.TaskHealth_TASK_HEALTH_STARTING {
				t.Errorf("first RUNNING report has health %s", r.GetHealth())
			}
			break
		}
	}
	h.mu.Unlock()
	// Many more probes, no more reports.
	n, p := h.nReports(), h.probes.Load()
	deadline := time.Now().Add(10 * time.Second)
	for h.probes.Load() < p+10 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	if h.probes.Load() < p+10 {
		t.Fatalf("probing stopped: %d probes", h.probes.Load())
	}
	if got := h.nReports(); got != n {
		t.Fatalf("%d status reports while steadily healthy, want none", got-n)
	}
}

func TestExecutorUnhealthyTaskFails(t *testing.T) {
	var fail atomic.Bool
	h := newHealthEnv(t, func(args []string) (int, string) {
		if !slices.Equal(args, []string{"/bin/sh", "-c", "curl -f localhost"}) {
			return 2, "wrong args: " + strings.Join(args, " ")
		}
		if fail.Load() {
			return 1, "connection refused\nmore lines"
		}
		return 0, "ok"
	})
	h.ex.Assign(true, []*shoalv1.Task{checkedTask("t1", &shoalv1.HealthCheck{Type: "exec", Command: []string{"curl -f localhost"}, IntervalMs: 100, Retries: 2})}, nil)
	h.waitHealth("t1", shoalv1.TaskHealth_TASK_HEALTH_HEALTHY)
	fail.Store(true)
	st := h.waitStatus("t1", shoalv1.TaskState_TASK_STATE_FAILED)
	if st.GetErr() != "unhealthy: connection refused" || st.GetHealth() != shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY ||
		st.GetHealthFailingStreak() != 2 || st.GetHealthOutput() != "connection refused\nmore lines" {
		t.Fatalf("failed status %v", st)
	}
	// It was stopped (the fake records a stop as SIGTERM's exit).
	if rs, err := h.rt.State(context.Background(), "t1"); err == nil && rs.Status == runtime.StatusRunning {
		t.Fatalf("the unhealthy container still runs: %+v", rs)
	}
	// The streak was reported as it grew.
	h.mu.Lock()
	defer h.mu.Unlock()
	var streaks []int64
	for _, r := range h.reports {
		if r.GetState() == shoalv1.TaskState_TASK_STATE_RUNNING && r.GetHealthFailingStreak() > 0 {
			streaks = append(streaks, r.GetHealthFailingStreak())
		}
	}
	if !slices.Equal(streaks, []int64{1, 2}) {
		t.Fatalf("failing streaks reported %v, want [1 2]", streaks)
	}
}

func TestExecutorImageHealthcheck(t *testing.T) {
	var seen atomic.Value
	h := newHealthEnv(t, func(args []string) (int, string) {
		seen.Store(strings.Join(args, " "))
		return 0, ""
	})
	h.images.mu.Lock()
	h.images.images["checked:1"] = image.Image{Digest: "sha256:ccc", Layers: []string{"/layers/c"}, Config: image.Config{
		Entrypoint: []string{"/bin/app"}, Healthcheck: &image.Healthcheck{Test: []string{"CMD", "/bin/app", "check"}, Interval: 5 * time.Millisecond}}}
	h.images.images["bad:1"] = image.Image{Digest: "sha256:ddd", Layers: []string{"/layers/d"}, Config: image.Config{
		Entrypoint: []string{"/bin/app"}, Healthcheck: &image.Healthcheck{Test: []string{"SOMETIMES", "x"}}}}
	h.images.mu.Unlock()
	imgTask := func(id, img string, hc *shoalv1.HealthCheck) *shoalv1.Task {
		t := task(id, img, shoalv1.TaskState_TASK_STATE_RUNNING)
		t.Spec.Container.Healthcheck = hc
		return t
	}
	h.ex.Assign(false, []*shoalv1.Task{
		imgTask("img", "checked:1", nil),
		imgTask("off", "checked:1", &shoalv1.HealthCheck{Type: "none"}),
		imgTask("bad", "bad:1", nil),
		imgTask("badoff", "bad:1", &shoalv1.HealthCheck{Type: "none"}),
	}, nil)
	h.waitHealth("img", shoalv1.TaskHealth_TASK_HEALTH_HEALTHY)
	if got, _ := seen.Load().(string); got != "/bin/app check" {
		t.Fatalf("probe args %q, want the image's CMD", got)
	}
	if st := h.waitStatus("off", shoalv1.TaskState_TASK_STATE_RUNNING); st.GetHealth() != shoalv1.TaskHealth_TASK_HEALTH_NONE {
		t.Fatalf("--no-healthcheck task has health %s", st.GetHealth())
	}
	if st := h.waitStatus("bad", shoalv1.TaskState_TASK_STATE_REJECTED); !strings.Contains(st.GetErr(), "unknown test") {
		t.Fatalf("bad image HEALTHCHECK: %v", st)
	}
	h.waitStatus("badoff", shoalv1.TaskState_TASK_STATE_RUNNING)
}

// A restarted agent re-adopts a healthy task as healthy (it does not leave
// discovery until its next probe) and goes on probing it.
func TestExecutorHealthAfterRestart(t *testing.T) {
	var fail atomic.Bool
	h := newHealthEnv(t, func([]string) (int, string) {
		if fail.Load() {
			return 1, "down"
		}
		return 0, "up"
	})
	h.ex.Assign(true, []*shoalv1.Task{checkedTask("t1", &shoalv1.HealthCheck{Type: "exec", Command: []string{"/bin/check"}, IntervalMs: 100, Retries: 1})}, nil)
	h.waitHealth("t1", shoalv1.TaskHealth_TASK_HEALTH_HEALTHY)
	h.stop()
	h.mu.Lock()
	h.reports = nil
	h.mu.Unlock()
	h.start()
	h.waitStatus("t1", shoalv1.TaskState_TASK_STATE_RUNNING)
	h.mu.Lock()
	for _, r := range h.reports {
		if r.GetState() == shoalv1.TaskState_TASK_STATE_RUNNING && r.GetHealth() != shoalv1.TaskHealth_TASK_HEALTH_HEALTHY {
			t.Errorf("re-adopted task reported %s", r.GetHealth())
		}
	}
	h.mu.Unlock()
	fail.Store(true)
	if st := h.waitStatus("t1", shoalv1.TaskState_TASK_STATE_FAILED); st.GetErr() != "unhealthy: down" {
		t.Fatalf("after the restart the check no longer runs: %v", st)
	}
}

// A task with a check re-adopted in STARTING (the agent crashed after the
// container started, before RUNNING was recorded) is reported RUNNING with
// health STARTING, never with no health: discovery and the rollouts would
// count it as running (and healthy) before its first probe.
func TestExecutorReadoptedStartingTaskIsNotReportedUnchecked(t *testing.T) {
	h := newHealthEnv(t, func([]string) (int, string) { return 0, "up" })
	h.ex.Assign(true, []*shoalv1.Task{checkedTask("t1", &shoalv1.HealthCheck{Type: "exec", Command: []string{"/bin/check"}, IntervalMs: 100, Retries: 1})}, nil)
	h.waitHealth("t1", shoalv1.TaskHealth_TASK_HEALTH_HEALTHY)
	h.stop()
	db, err := openTaskDB(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.put("t1", nil, &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_STARTING}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	h.mu.Lock()
	h.reports = nil
	h.mu.Unlock()
	h.start()
	h.waitHealth("t1", shoalv1.TaskHealth_TASK_HEALTH_HEALTHY)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.reports {
		if r.GetState() == shoalv1.TaskState_TASK_STATE_RUNNING && r.GetHealth() == shoalv1.TaskHealth_TASK_HEALTH_NONE {
			t.Fatalf("re-adopted task with a check reported RUNNING without health: %v", r)
		}
	}
}
