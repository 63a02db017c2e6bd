package specrules

import (
	"strconv"
	"strings"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Health check limits.
const (
	// MinHealthInterval and MinHealthTimeout keep a check from becoming a
	// busy loop in the agent (an interval of 0 means the default, 30 s).
	MinHealthInterval = 100 * time.Millisecond
	MinHealthTimeout  = 10 * time.Millisecond
	MaxHealthRetries  = 1000
	MaxHealthPath     = 2048
)

// healthcheck checks ContainerSpec.healthcheck: exactly one kind (exec
// with a command, http or tcp with a port; none; or empty to keep the
// image's HEALTHCHECK with only its timings overridden), and sane timings.
func healthcheck(p *Problems, field string, h *shoalv1.HealthCheck) {
	if h == nil {
		return
	}
	hasCmd, hasPort, hasPath := len(h.GetCommand()) > 0, h.GetPort() != 0, h.GetHttpPath() != ""
	switch h.GetType() {
	case "exec":
		if !hasCmd {
			p.Add(field+".command", "required for an exec check")
		}
		for i, a := range h.GetCommand() {
			switch {
			case i == 0 && strings.TrimSpace(a) == "":
				p.Add(field+".command[0]", "must not be empty")
			case len(a) > MaxArgEntry:
				p.Add(field+".command["+strconv.Itoa(i)+"]", "%d bytes long, at most %d", len(a), MaxArgEntry)
			case strings.IndexByte(a, 0) >= 0:
				p.Add(field+".command["+strconv.Itoa(i)+"]", "contains a NUL byte")
			}
		}
		if len(h.GetCommand()) > MaxArgv {
			p.Add(field+".command", "%d entries, at most %d", len(h.GetCommand()), MaxArgv)
		}
		if hasPort || hasPath {
			p.Add(field, "an exec check takes no port or http path (one kind of check at a time)")
		}
	case "http", "tcp":
		if port := h.GetPort(); port < 1 || port > 65535 {
			p.Add(field+".port", "must be 1-65535 for an %s check, got %d", h.GetType(), port)
		}
		if hasCmd {
			p.Add(field+".command", "an %s check takes no command (one kind of check at a time)", h.GetType())
		}
		if h.GetType() == "tcp" && hasPath {
			p.Add(field+".http_path", "a tcp check takes no http path")
		}
		if path := h.GetHttpPath(); hasPath && h.GetType() == "http" {
			switch {
			case path[0] != '/':
				p.Add(field+".http_path", "must start with '/', got %q", path)
			case len(path) > MaxHealthPath:
				p.Add(field+".http_path", "%d bytes long, at most %d", len(path), MaxHealthPath)
			case strings.IndexFunc(path, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
				p.Add(field+".http_path", "must not contain spaces or control characters")
			}
		}
	case "none":
		if hasCmd || hasPort || hasPath || h.GetIntervalMs() != 0 || h.GetTimeoutMs() != 0 || h.GetRetries() != 0 || h.GetStartPeriodMs() != 0 {
			p.Add(field, "a disabled check (none) takes no command, port, path or timings")
		}
		return
	case "":
		// The image's HEALTHCHECK with these timings.
		if hasCmd || hasPort || hasPath {
			p.Add(field+".type", "required with a command, port or path (exec, http or tcp)")
		}
	default:
		p.Add(field+".type", "must be exec, http, tcp or none, got %q", clip(h.GetType()))
	}
	healthDuration(p, field+".interval_ms", h.GetIntervalMs(), MinHealthInterval)
	healthDuration(p, field+".timeout_ms", h.GetTimeoutMs(), MinHealthTimeout)
	healthDuration(p, field+".start_period_ms", h.GetStartPeriodMs(), 0)
	switch r := h.GetRetries(); {
	case r < 0:
		p.Add(field+".retries", "must be >= 0 (0: the default, 3), got %d", r)
	case r > MaxHealthRetries:
		p.Add(field+".retries", "must be at most %d, got %d", MaxHealthRetries, r)
	}
}

// healthDuration: 0 (the default), or between lo and MaxDuration.
func healthDuration(p *Problems, field string, ms int64, lo time.Duration) {
	if ms > 0 && ms < lo.Milliseconds() {
		p.Add(field, "must be 0 (the default) or at least %d (%s), got %d", lo.Milliseconds(), lo, ms)
		return
	}
	duration(p, field, ms)
}
