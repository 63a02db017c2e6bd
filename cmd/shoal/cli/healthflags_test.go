package cli

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestHealthFlags(t *testing.T) {
	withCheck := func(hc *shoalv1.HealthCheck) *shoalv1.ServiceSpec {
		return &shoalv1.ServiceSpec{Task: &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "x", Healthcheck: hc}}}
	}
	httpCheck := &shoalv1.HealthCheck{Type: "http", Port: 8080, HttpPath: "/health", IntervalMs: 2000, Retries: 5}
	tests := []struct {
		name    string
		update  bool
		spec    *shoalv1.ServiceSpec
		args    []string
		want    *shoalv1.HealthCheck
		wantErr string
	}{
		{name: "no flags, no check", args: nil, want: nil},
		{name: "cmd with timings", args: []string{"--health-cmd", "curl -f localhost", "--health-interval", "2s", "--health-timeout", "500ms", "--health-retries", "2", "--health-start-period", "10s"},
			want: &shoalv1.HealthCheck{Type: "exec", Command: []string{"curl -f localhost"}, IntervalMs: 2000, TimeoutMs: 500, Retries: 2, StartPeriodMs: 10000}},
		{name: "cmd JSON argv", args: []string{"--health-cmd", `["/shoal-demo", "fetch", "http://127.0.0.1:8080/health"]`},
			want: &shoalv1.HealthCheck{Type: "exec", Command: []string{"/shoal-demo", "fetch", "http://127.0.0.1:8080/health"}}},
		{name: "cmd JSON one element", args: []string{"--health-cmd", `["/check"]`}, wantErr: "needs a program and at least one argument"},
		{name: "cmd bad JSON", args: []string{"--health-cmd", `["/check",`}, wantErr: "a JSON array of strings"},
		{name: "cmd empty", args: []string{"--health-cmd", " "}, wantErr: "empty command"},
		{name: "http port/path", args: []string{"--health-http", "8080/health"}, want: &shoalv1.HealthCheck{Type: "http", Port: 8080, HttpPath: "/health"}},
		{name: "http port only", args: []string{"--health-http", "80"}, want: &shoalv1.HealthCheck{Type: "http", Port: 80, HttpPath: "/"}},
		{name: "http path + port", args: []string{"--health-http-path", "/ready", "--health-port", "9000"}, want: &shoalv1.HealthCheck{Type: "http", Port: 9000, HttpPath: "/ready"}},
		{name: "tcp", args: []string{"--health-tcp", "6379"}, want: &shoalv1.HealthCheck{Type: "tcp", Port: 6379}},
		{name: "none", args: []string{"--no-healthcheck"}, want: &shoalv1.HealthCheck{Type: "none"}},
		{name: "timings only: the image's check", args: []string{"--health-interval", "1s"}, want: &shoalv1.HealthCheck{IntervalMs: 1000}},
		{name: "two kinds", args: []string{"--health-cmd", "x", "--health-tcp", "80"}, wantErr: "--health-cmd, --health-tcp: one kind of health check at a time"},
		{name: "http both forms", args: []string{"--health-http", "80", "--health-port", "81"}, wantErr: "either PORT/PATH"},
		{name: "path without port", args: []string{"--health-http-path", "/x"}, wantErr: "needs --health-port"},
		{name: "bad http", args: []string{"--health-http", "x/health"}, wantErr: "want PORT[/PATH]"},
		{name: "none and cmd", args: []string{"--no-healthcheck", "--health-cmd", "x"}, wantErr: "cannot be combined"},
		{name: "update keeps the check", update: true, spec: withCheck(httpCheck), args: []string{"--replicas", "2"}, want: httpCheck},
		{name: "update a timing", update: true, spec: withCheck(httpCheck), args: []string{"--health-interval", "5s"},
			want: &shoalv1.HealthCheck{Type: "http", Port: 8080, HttpPath: "/health", IntervalMs: 5000, Retries: 5}},
		{name: "update the path", update: true, spec: withCheck(httpCheck), args: []string{"--health-http-path", "/ready"},
			want: &shoalv1.HealthCheck{Type: "http", Port: 8080, HttpPath: "/ready", IntervalMs: 2000, Retries: 5}},
		{name: "update to exec keeps timings", update: true, spec: withCheck(httpCheck), args: []string{"--health-cmd", "true"},
			want: &shoalv1.HealthCheck{Type: "exec", Command: []string{"true"}, IntervalMs: 2000, Retries: 5}},
		{name: "update disables", update: true, spec: withCheck(httpCheck), args: []string{"--no-healthcheck"}, want: &shoalv1.HealthCheck{Type: "none"}},
		{name: "update re-enables the image's", update: true, spec: withCheck(&shoalv1.HealthCheck{Type: "none"}), args: []string{"--no-healthcheck=false"}, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			if spec == nil {
				spec = &shoalv1.ServiceSpec{}
			}
			var f specFlags
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			f.bind(fs, tc.update)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := f.apply(fs, spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := spec.GetTask().GetContainer().GetHealthcheck(); !proto.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestHealthColumn(t *testing.T) {
	for _, c := range []struct {
		st   *shoalv1.TaskStatus
		want string
	}{
		{&shoalv1.TaskStatus{}, "-"},
		{&shoalv1.TaskStatus{Health: shoalv1.TaskHealth_TASK_HEALTH_STARTING}, "starting"},
		{&shoalv1.TaskStatus{Health: shoalv1.TaskHealth_TASK_HEALTH_HEALTHY}, "healthy"},
		{&shoalv1.TaskStatus{Health: shoalv1.TaskHealth_TASK_HEALTH_HEALTHY, HealthFailingStreak: 2}, "healthy (2 failing)"},
		{&shoalv1.TaskStatus{Health: shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY, HealthFailingStreak: 3}, "unhealthy"},
	} {
		if got := healthColumn(c.st); got != c.want {
			t.Errorf("%v: %q, want %q", c.st, got, c.want)
		}
	}
}

// A task with a check counts towards convergence only once healthy.
func TestConvergenceWaitsForHealthy(t *testing.T) {
	svc := &shoalv1.Service{SpecVersion: 7, Spec: &shoalv1.ServiceSpec{Replicas: 1}}
	for _, c := range []struct {
		health shoalv1.TaskHealth
		done   bool
	}{
		{shoalv1.TaskHealth_TASK_HEALTH_NONE, true},
		{shoalv1.TaskHealth_TASK_HEALTH_STARTING, false},
		{shoalv1.TaskHealth_TASK_HEALTH_HEALTHY, true},
		{shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY, false},
	} {
		tk := &shoalv1.Task{Meta: &shoalv1.Meta{Id: "t1"}, Slot: 1, SpecVersion: 7, DesiredState: shoalv1.TaskState_TASK_STATE_RUNNING,
			Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_RUNNING, Health: c.health}}
		tasks := map[string]*shoalv1.Task{"t1": tk}
		if _, _, done := convergence(svc, tasks); done != c.done {
			t.Errorf("%s: converged %v, want %v", c.health, done, c.done)
		}
		if key := countedKey(svc, tasks); (key == "t1") != c.done {
			t.Errorf("%s: counted key %q", c.health, key)
		}
	}
}
