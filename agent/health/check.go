package health

import (
	"fmt"
	"strings"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Kinds of check.
const (
	KindExec = "exec"
	KindHTTP = "http"
	KindTCP  = "tcp"
	KindNone = "none"
)

// Defaults for zero timings (Docker's).
const (
	DefaultInterval = 30 * time.Second
	DefaultTimeout  = 30 * time.Second
	DefaultRetries  = 3
	// StartInterval is the most time between probes while a task is
	// starting within its start period.
	StartInterval = time.Second
	// MaxOutput bounds a probe's output as reported (TaskStatus.health_output).
	MaxOutput = 4096
)

// Check is a resolved health check.
type Check struct {
	Kind string
	// Command is the exec probe's argv (a shell command already wrapped
	// in /bin/sh -c).
	Command     []string
	Path        string // http: request path, "/" if empty
	Port        uint32 // http, tcp
	Interval    time.Duration
	Timeout     time.Duration
	StartPeriod time.Duration
	Retries     int64
}

// ImageCheck is an image's HEALTHCHECK as its config carries it: Test is
// {"NONE"}, {"CMD", args...} or {"CMD-SHELL", command}; empty inherits
// (none here). Zero timings mean the defaults.
type ImageCheck struct {
	Test        []string
	Interval    time.Duration
	Timeout     time.Duration
	StartPeriod time.Duration
	Retries     int
}

// Resolve returns the check a task runs: the spec's if it names a type,
// else the image's HEALTHCHECK if it has one; ok is false for none. The
// spec's non-zero timings override the image's. An error means a check
// that cannot run (an exec check without a command, an unknown type, an
// image HEALTHCHECK of an unknown form).
func Resolve(spec *shoalv1.HealthCheck, img *ImageCheck) (c Check, ok bool, err error) {
	switch spec.GetType() {
	case KindNone:
		return Check{}, false, nil
	case KindExec:
		if len(spec.GetCommand()) == 0 {
			return Check{}, false, fmt.Errorf("healthcheck: an exec check needs a command")
		}
		c = Check{Kind: KindExec, Command: shellWrap(spec.GetCommand())}
	case KindHTTP, KindTCP:
		if spec.GetPort() == 0 || spec.GetPort() > 65535 {
			return Check{}, false, fmt.Errorf("healthcheck: port %d out of range 1-65535", spec.GetPort())
		}
		c = Check{Kind: spec.GetType(), Port: spec.GetPort(), Path: spec.GetHttpPath()}
	case "":
		if img == nil || len(img.Test) == 0 {
			return Check{}, false, nil
		}
		switch img.Test[0] {
		case "NONE":
			return Check{}, false, nil
		case "CMD":
			if len(img.Test) < 2 {
				return Check{}, false, fmt.Errorf("image HEALTHCHECK: CMD without a command")
			}
			c = Check{Kind: KindExec, Command: append([]string(nil), img.Test[1:]...)}
		case "CMD-SHELL":
			if len(img.Test) != 2 || strings.TrimSpace(img.Test[1]) == "" {
				return Check{}, false, fmt.Errorf("image HEALTHCHECK: CMD-SHELL needs one command")
			}
			c = Check{Kind: KindExec, Command: []string{"/bin/sh", "-c", img.Test[1]}}
		default:
			return Check{}, false, fmt.Errorf("image HEALTHCHECK: unknown test %q (want NONE, CMD or CMD-SHELL)", img.Test[0])
		}
	default:
		return Check{}, false, fmt.Errorf("healthcheck: unknown type %q (want exec, http, tcp or none)", spec.GetType())
	}
	if c.Kind == KindHTTP && c.Path == "" {
		c.Path = "/"
	}
	var imgT ImageCheck
	if img != nil {
		imgT = *img
	}
	c.Interval = pick(ms(spec.GetIntervalMs()), imgT.Interval, DefaultInterval)
	c.Timeout = pick(ms(spec.GetTimeoutMs()), imgT.Timeout, DefaultTimeout)
	c.StartPeriod = pick(ms(spec.GetStartPeriodMs()), imgT.StartPeriod, 0)
	c.Retries = pick(spec.GetRetries(), int64(imgT.Retries), DefaultRetries)
	return c, true, nil
}

// shellWrap: a single element is a shell command line.
func shellWrap(cmd []string) []string {
	if len(cmd) == 1 {
		return []string{"/bin/sh", "-c", cmd[0]}
	}
	return append([]string(nil), cmd...)
}

func ms(v int64) time.Duration { return time.Duration(v) * time.Millisecond }

// pick returns the first positive value, else def.
func pick[T ~int64](vals ...T) T {
	for _, v := range vals[:len(vals)-1] {
		if v > 0 {
			return v
		}
	}
	return vals[len(vals)-1]
}

// Truncate bounds a probe's output to MaxOutput bytes without cutting a
// UTF-8 sequence, marking the cut.
func Truncate(s string) string {
	s = strings.TrimSpace(s)
	if len(s) <= MaxOutput {
		return s
	}
	const mark = " [truncated]"
	cut := MaxOutput - len(mark)
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut-- // a continuation byte: back to the sequence's start
	}
	return s[:cut] + mark
}
