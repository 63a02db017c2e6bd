package raftstore

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// TestPeerDownIsAWarning: raft's ERROR about a request it could not
// deliver to a peer that is down is logged as WARN; the same message with
// an error from a peer that answered, and any other ERROR, stay ERROR.
func TestPeerDownIsAWarning(t *testing.T) {
	var buf bytes.Buffer
	l := NewHCLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "raft")
	cases := []struct {
		msg  string
		err  error
		want string
	}{
		{"failed to make requestVote RPC", errors.New("raft dial 10.0.0.2:4242: dial tcp 10.0.0.2:4242: connect: connection refused"), "level=WARN"},
		{"failed to appendEntries to", errors.New("dial tcp: i/o timeout"), "level=WARN"},
		{"failed to make requestVote RPC", errors.New("unexpected EOF decoding response"), "level=ERROR"},
		{"failed to take snapshot", errors.New("connect: connection refused"), "level=ERROR"},
		// A peer that stopped closes its connections: io.EOF before any answer.
		{"failed to appendEntries to", io.EOF, "level=WARN"},
		{"failed to appendEntries to", errors.New("EOF in the middle"), "level=ERROR"},
		// This node's own transport refusing a request while it stops.
		{"failed to decode incoming command", raft.ErrTransportShutdown, "level=INFO"},
		{"failed to decode incoming command", errors.New("msgpack decode error"), "level=ERROR"},
	}
	for _, c := range cases {
		buf.Reset()
		l.Error(c.msg, "target", "peer", "error", c.err)
		if !strings.Contains(buf.String(), c.want) {
			t.Errorf("%q with %v: logged %q, want %s", c.msg, c.err, buf.String(), c.want)
		}
	}
}
