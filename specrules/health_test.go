package specrules

import (
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestHealthcheckRules(t *testing.T) {
	const f = "spec.task.container.healthcheck"
	tests := []struct {
		name string
		hc   *shoalv1.HealthCheck
		want []string // substrings of the error; none = valid
	}{
		{"exec", &shoalv1.HealthCheck{Type: "exec", Command: []string{"curl -f localhost"}, IntervalMs: 1000, TimeoutMs: 500, Retries: 2, StartPeriodMs: 5000}, nil},
		{"http", &shoalv1.HealthCheck{Type: "http", Port: 8080, HttpPath: "/health?x=1"}, nil},
		{"tcp", &shoalv1.HealthCheck{Type: "tcp", Port: 6379}, nil},
		{"none", &shoalv1.HealthCheck{Type: "none"}, nil},
		{"image's with timings", &shoalv1.HealthCheck{IntervalMs: 2000}, nil},
		{"exec without command", &shoalv1.HealthCheck{Type: "exec"}, []string{f + ".command: required"}},
		{"exec empty command", &shoalv1.HealthCheck{Type: "exec", Command: []string{" "}}, []string{f + ".command[0]: must not be empty"}},
		{"exec NUL", &shoalv1.HealthCheck{Type: "exec", Command: []string{"a", "b\x00"}}, []string{f + ".command[1]: contains a NUL"}},
		{"exec and port", &shoalv1.HealthCheck{Type: "exec", Command: []string{"x"}, Port: 80}, []string{f + ": an exec check takes no port"}},
		{"http without port", &shoalv1.HealthCheck{Type: "http"}, []string{f + ".port: must be 1-65535 for an http check, got 0"}},
		{"tcp port too high", &shoalv1.HealthCheck{Type: "tcp", Port: 70000}, []string{f + ".port: must be 1-65535"}},
		{"http and command", &shoalv1.HealthCheck{Type: "http", Port: 80, Command: []string{"x"}}, []string{f + ".command: an http check takes no command"}},
		{"tcp and path", &shoalv1.HealthCheck{Type: "tcp", Port: 80, HttpPath: "/x"}, []string{f + ".http_path: a tcp check takes no http path"}},
		{"http relative path", &shoalv1.HealthCheck{Type: "http", Port: 80, HttpPath: "health"}, []string{f + ".http_path: must start with '/'"}},
		{"http path with space", &shoalv1.HealthCheck{Type: "http", Port: 80, HttpPath: "/a b"}, []string{f + ".http_path: must not contain spaces"}},
		{"none with command", &shoalv1.HealthCheck{Type: "none", Command: []string{"x"}}, []string{f + ": a disabled check (none) takes no"}},
		{"none with timings", &shoalv1.HealthCheck{Type: "none", Retries: 2}, []string{f + ": a disabled check"}},
		{"command without type", &shoalv1.HealthCheck{Command: []string{"x"}}, []string{f + ".type: required with a command"}},
		{"unknown type", &shoalv1.HealthCheck{Type: "grpc", Port: 80}, []string{f + ".type: must be exec, http, tcp or none"}},
		{"interval too short", &shoalv1.HealthCheck{Type: "tcp", Port: 80, IntervalMs: 5}, []string{f + ".interval_ms: must be 0 (the default) or at least 100"}},
		{"negative timeout", &shoalv1.HealthCheck{Type: "tcp", Port: 80, TimeoutMs: -1}, []string{f + ".timeout_ms: must be >= 0"}},
		{"start period too long", &shoalv1.HealthCheck{Type: "tcp", Port: 80, StartPeriodMs: MaxDuration.Milliseconds() + 1}, []string{f + ".start_period_ms: must be at most"}},
		{"negative retries", &shoalv1.HealthCheck{Type: "tcp", Port: 80, Retries: -1}, []string{f + ".retries: must be >= 0"}},
		{"too many retries", &shoalv1.HealthCheck{Type: "tcp", Port: 80, Retries: 1001}, []string{f + ".retries: must be at most 1000"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := validService()
			s.Task.Container.Healthcheck = tc.hc
			err := Service(s).Err()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
