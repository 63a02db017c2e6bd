package raftstore

import (
	"context"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// slogHCLog adapts a *slog.Logger to hclog.Logger, which raft logs through,
// so raft's messages land in the process's one structured log with the
// caller's attributes.
type slogHCLog struct {
	// base is the caller's logger; l is base with the name and implied
	// args added (slog cannot remove an attribute, so renaming starts
	// again from base).
	base    *slog.Logger
	l       *slog.Logger
	name    string
	implied []any
	// min is an extra floor set through SetLevel (hclog.NoLevel: none); it
	// is shared with loggers derived by With and Named, as in hclog.
	min *atomic.Int32
}

var _ hclog.Logger = (*slogHCLog)(nil)

// NewHCLog returns an hclog.Logger writing to l, under the logger name
// given: raft's own log goes through it, and the manager hands one to
// raft's network transport.
func NewHCLog(l *slog.Logger, name string) hclog.Logger {
	return build(l, name, nil, new(atomic.Int32))
}

func build(base *slog.Logger, name string, implied []any, min *atomic.Int32) *slogHCLog {
	l := base
	if name != "" {
		l = l.With("logger", name)
	}
	if len(implied) > 0 {
		l = l.With(implied...)
	}
	return &slogHCLog{base: base, l: l, name: name, implied: implied, min: min}
}

// slogLevel maps hclog levels; Trace sits below slog's Debug.
func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (h *slogHCLog) enabled(level hclog.Level) bool {
	if min := hclog.Level(h.min.Load()); min != hclog.NoLevel && level < min {
		return false
	}
	return h.l.Enabled(context.Background(), slogLevel(level))
}

func (h *slogHCLog) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Error && peerUnreachable(msg, args) {
		level = hclog.Warn
	}
	if level == hclog.Error && ownShutdown(msg, args) {
		level = hclog.Info
	}
	if level == hclog.Off || !h.enabled(level) {
		return
	}
	h.l.Log(context.Background(), slogLevel(level), msg, args...)
}

func (h *slogHCLog) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *slogHCLog) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *slogHCLog) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *slogHCLog) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *slogHCLog) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *slogHCLog) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *slogHCLog) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *slogHCLog) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *slogHCLog) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *slogHCLog) IsError() bool { return h.enabled(hclog.Error) }

func (h *slogHCLog) ImpliedArgs() []any { return h.implied }

func (h *slogHCLog) With(args ...any) hclog.Logger {
	return build(h.base, h.name, append(append([]any(nil), h.implied...), args...), h.min)
}

func (h *slogHCLog) Name() string { return h.name }

func (h *slogHCLog) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.ResetNamed(name)
}

func (h *slogHCLog) ResetNamed(name string) hclog.Logger {
	return build(h.base, name, h.implied, h.min)
}

func (h *slogHCLog) SetLevel(level hclog.Level) { h.min.Store(int32(level)) }

func (h *slogHCLog) GetLevel() hclog.Level {
	if min := hclog.Level(h.min.Load()); min != hclog.NoLevel {
		return min
	}
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if h.l.Enabled(context.Background(), slogLevel(l)) {
			return l
		}
	}
	return hclog.Off
}

func (h *slogHCLog) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	level := slog.LevelInfo
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = slogLevel(opts.ForceLevel)
	}
	return slog.NewLogLogger(h.l.Handler(), level)
}

func (h *slogHCLog) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	return h.StandardLogger(opts).Writer()
}

// peerMessages are raft's ERROR lines about a request to another voter.
var peerMessages = []string{"failed to make requestVote RPC", "failed to appendEntries to", "failed to heartbeat to", "failed to pipeline appendEntries"}

// peerDown are the errors of a peer that is down or unreachable, as
// opposed to one that answered wrongly.
var peerDown = []string{"connect: connection refused", "no route to host", "i/o timeout", "connection reset by peer", "network is unreachable"}

// peerUnreachable: raft logs at ERROR every request it could not deliver
// to a peer that is down — routine while a manager restarts or the cluster
// is stopped node by node, and repeated for as long as it lasts. Those are
// logged as WARN; an error from a peer that answered stays ERROR.
func peerUnreachable(msg string, args []any) bool {
	known := false
	for _, m := range peerMessages {
		if strings.HasPrefix(msg, m) {
			known = true
			break
		}
	}
	if !known {
		return false
	}
	text, ok := errorText(args)
	if !ok {
		return false
	}
	if text == io.EOF.Error() {
		// The peer closed the connection before answering: it stopped
		// (a manager's clean stop closes its raft connections).
		return true
	}
	for _, d := range peerDown {
		if strings.Contains(text, d) {
			return true
		}
	}
	return false
}

// ownShutdown: the transport refusing a request that arrived while this
// node shuts down is part of a clean stop, not an error.
func ownShutdown(msg string, args []any) bool {
	if !strings.HasPrefix(msg, "failed to decode incoming command") {
		return false
	}
	text, ok := errorText(args)
	return ok && text == raft.ErrTransportShutdown.Error()
}

// errorText is the text of the "error" argument of a log call.
func errorText(args []any) (string, bool) {
	for i := 0; i+1 < len(args); i += 2 {
		if k, _ := args[i].(string); k != "error" {
			continue
		}
		switch e := args[i+1].(type) {
		case error:
			return e.Error(), true
		case string:
			return e, true
		}
	}
	return "", false
}
