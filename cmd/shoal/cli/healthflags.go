package cli

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// healthFlags set ContainerSpec.healthcheck, on create and update alike
// (update changes only what is given: a kind flag replaces the kind, a
// timing flag that timing).
type healthFlags struct {
	cmd                          string
	http                         string
	httpPath                     string
	port                         uint32
	tcp                          uint32
	interval, timeout, startWait time.Duration
	retries                      int64
	none                         bool
}

func (h *healthFlags) bind(fs *pflag.FlagSet) {
	fs.StringVar(&h.cmd, "health-cmd", "", `health check run in the container (exit 0: healthy): a shell command line, or a JSON array run without a shell ('["/app","check"]')`)
	fs.StringVar(&h.http, "health-http", "", "HTTP health check: PORT[/PATH], a GET from inside the task's network namespace (2xx/3xx: healthy)")
	fs.StringVar(&h.httpPath, "health-http-path", "", "HTTP health check path (with --health-port)")
	fs.Uint32Var(&h.port, "health-port", 0, "port of the HTTP health check (with --health-http-path; default path /)")
	fs.Uint32Var(&h.tcp, "health-tcp", 0, "TCP health check: PORT accepts a connection inside the task's network namespace")
	fs.DurationVar(&h.interval, "health-interval", 0, "time between health checks (default: the image's, else 30s)")
	fs.DurationVar(&h.timeout, "health-timeout", 0, "longest a health check may take (default: the image's, else 30s)")
	fs.Int64Var(&h.retries, "health-retries", 0, "consecutive failures that make a task unhealthy (default: the image's, else 3)")
	fs.DurationVar(&h.startWait, "health-start-period", 0, "time after the start in which failures do not count (default: the image's, else 0s)")
	fs.BoolVar(&h.none, "no-healthcheck", false, "disable any health check, the image's HEALTHCHECK included")
}

// apply sets c.Healthcheck from the flags that were given.
func (h *healthFlags) apply(fs *pflag.FlagSet, c *shoalv1.ContainerSpec) error {
	set := fs.Changed
	var kinds []string
	for _, f := range []string{"health-cmd", "health-http", "health-tcp"} {
		if set(f) {
			kinds = append(kinds, "--"+f)
		}
	}
	if set("health-http-path") || set("health-port") {
		if set("health-http") {
			return fmt.Errorf("--health-http: give either PORT/PATH or --health-port and --health-http-path")
		}
		kinds = append(kinds, "--health-port/--health-http-path")
	}
	timings := set("health-interval") || set("health-timeout") || set("health-retries") || set("health-start-period")
	if set("no-healthcheck") {
		if len(kinds) > 0 || timings {
			return fmt.Errorf("--no-healthcheck: cannot be combined with other --health-* flags")
		}
		if h.none {
			c.Healthcheck = &shoalv1.HealthCheck{Type: "none"}
		} else if c.GetHealthcheck().GetType() == "none" {
			c.Healthcheck = nil // --no-healthcheck=false: the image's again
		}
		return nil
	}
	if len(kinds) > 1 {
		return fmt.Errorf("%s: one kind of health check at a time", strings.Join(kinds, ", "))
	}
	if len(kinds) == 0 && !timings {
		return nil
	}
	hc := &shoalv1.HealthCheck{}
	if c.GetHealthcheck().GetType() != "none" && c.GetHealthcheck() != nil {
		hc = proto.Clone(c.GetHealthcheck()).(*shoalv1.HealthCheck)
	}
	switch {
	case set("health-cmd"):
		argv, err := parseHealthCmd(h.cmd)
		if err != nil {
			return err
		}
		*hc = shoalv1.HealthCheck{Type: "exec", Command: argv, IntervalMs: hc.IntervalMs, TimeoutMs: hc.TimeoutMs,
			Retries: hc.Retries, StartPeriodMs: hc.StartPeriodMs}
	case set("health-http"):
		port, path, err := parseHealthHTTP(h.http)
		if err != nil {
			return err
		}
		hc.Type, hc.Command, hc.Port, hc.HttpPath = "http", nil, port, path
	case set("health-tcp"):
		hc.Type, hc.Command, hc.Port, hc.HttpPath = "tcp", nil, h.tcp, ""
	case set("health-http-path") || set("health-port"):
		if hc.Type != "http" {
			hc.Type, hc.Command, hc.Port, hc.HttpPath = "http", nil, 0, "/"
		}
		if set("health-port") {
			hc.Port = h.port
		}
		if set("health-http-path") {
			hc.HttpPath = h.httpPath
		}
		if hc.Port == 0 {
			return fmt.Errorf("--health-http-path: needs --health-port")
		}
	}
	if set("health-interval") {
		hc.IntervalMs = h.interval.Milliseconds()
	}
	if set("health-timeout") {
		hc.TimeoutMs = h.timeout.Milliseconds()
	}
	if set("health-retries") {
		hc.Retries = h.retries
	}
	if set("health-start-period") {
		hc.StartPeriodMs = h.startWait.Milliseconds()
	}
	c.Healthcheck = hc
	return nil
}

// parseHealthCmd reads --health-cmd: a JSON array is the argv itself (the
// exec form of a Dockerfile's HEALTHCHECK CMD, for images without a
// shell); anything else is one shell command line (one element, run as
// /bin/sh -c). A one-element array would read as a shell line, so it is
// refused.
func parseHealthCmd(v string) ([]string, error) {
	if strings.TrimSpace(v) == "" {
		return nil, fmt.Errorf("--health-cmd: empty command")
	}
	if !strings.HasPrefix(strings.TrimSpace(v), "[") {
		return []string{v}, nil
	}
	var argv []string
	if err := json.Unmarshal([]byte(v), &argv); err != nil {
		return nil, fmt.Errorf("--health-cmd: a JSON array of strings: %v", err)
	}
	if len(argv) < 2 {
		return nil, fmt.Errorf(`--health-cmd: the JSON form needs a program and at least one argument (a bare program is '%s' without brackets)`, strings.Join(argv, " "))
	}
	return argv, nil
}

// parseHealthHTTP reads --health-http PORT[/PATH].
func parseHealthHTTP(v string) (uint32, string, error) {
	p, path, _ := strings.Cut(v, "/")
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return 0, "", fmt.Errorf("--health-http: want PORT[/PATH] with PORT 1-65535, got %q", v)
	}
	return uint32(port), "/" + path, nil
}

// healthColumn is the HEALTH column of `service ps`: "-" for a task
// without a check, else starting, healthy or unhealthy (with the failing
// streak while a healthy task's probes fail).
func healthColumn(st *shoalv1.TaskStatus) string {
	h := st.GetHealth()
	if h == shoalv1.TaskHealth_TASK_HEALTH_NONE {
		return "-"
	}
	s := strings.ToLower(enumShort(h.String(), "TASK_HEALTH_"))
	if n := st.GetHealthFailingStreak(); n > 0 && h != shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY {
		s += fmt.Sprintf(" (%d failing)", n)
	}
	return s
}

// runningHealthy: the task is RUNNING and, where it has a health check,
// HEALTHY — what discovery answers and what convergence counts.
func runningHealthy(t *shoalv1.Task) bool {
	st := t.GetStatus()
	h := st.GetHealth()
	return st.GetState() == shoalv1.TaskState_TASK_STATE_RUNNING &&
		(h == shoalv1.TaskHealth_TASK_HEALTH_NONE || h == shoalv1.TaskHealth_TASK_HEALTH_HEALTHY)
}
