package agentapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/logstream"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
	"github.com/shoal-dev/shoal/trust/trusttest"
)

// testCA issues the certificates of a test cluster.
type testCA struct {
	t    *testing.T
	root *trust.CA
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	root, err := trust.NewRootCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{t: t, root: root}
}

func (c *testCA) node(id string, role trust.Role) *trust.CertStore {
	return trusttest.NodeCerts(c.t, c.root, id, role)
}

// adminTLS is the CLI's configuration (any server name; ClientTLSConfig
// replaces the check).
func (c *testCA) adminTLS() *tls.Config {
	c.t.Helper()
	certPEM, keyPEM, err := c.root.IssueAdmin("admin", time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	conf, err := trust.ClientTLSConfigFromCreds(&trust.Creds{CACertPEM: c.root.CertPEM(), CertPEM: certPEM, KeyPEM: keyPEM}, trust.ManagerServerName)
	if err != nil {
		c.t.Fatal(err)
	}
	return conf
}

func (c *testCA) nodeTLS(id string, role trust.Role) *tls.Config {
	return c.node(id, role).ClientTLSConfig(trust.ManagerServerName, trust.ALPNGRPC)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// serve runs srv on loopback with the node's certificates until cleanup.
func serve(t *testing.T, certs *trust.CertStore, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, certs, srv) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeListener: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("ServeListener did not return after its context ended")
		}
	})
	return ln.Addr().String()
}

func client(t *testing.T, addr, nodeID string, base *tls.Config) shoalv1.AgentAPIClient {
	t.Helper()
	conn, err := logstream.Dial(addr, nodeID, base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return shoalv1.NewAgentAPIClient(conn)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// appendLog appends records in agent/runtime's format.
func appendLog(t *testing.T, path string, recs ...rec) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, r := range recs {
		b, _ := json.Marshal(struct {
			Time   time.Time `json:"time"`
			Stream string    `json:"stream"`
			Log    string    `json:"log"`
		}{t0.Add(r.at), r.stream, r.text + "\n"})
		if _, err := f.Write(append(b, '\n')); err != nil {
			t.Fatal(err)
		}
	}
}

type rec struct {
	at     time.Duration // after t0
	stream string
	text   string
}

// collect reads a log stream to its end.
func collect(t *testing.T, st grpc.ServerStreamingClient[shoalv1.LogsResponse]) (msgs []*shoalv1.LogMessage, warnings []string, batches []int, err error) {
	t.Helper()
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return msgs, warnings, batches, nil
		}
		if err != nil {
			return msgs, warnings, batches, err
		}
		msgs = append(msgs, resp.GetMessages()...)
		warnings = append(warnings, resp.GetWarnings()...)
		if len(resp.GetMessages()) > 0 {
			batches = append(batches, len(resp.GetMessages()))
		}
	}
}

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msgPart) {
		t.Fatalf("got %v, want %s containing %q", err, code, msgPart)
	}
}

// logsDir is a node's log directory with LogPath and Tasks over it.
type logsDir struct {
	dir   string
	known map[string]*shoalv1.Task
}

func newLogsDir(t *testing.T, tasks ...*shoalv1.Task) *logsDir {
	d := &logsDir{dir: t.TempDir(), known: map[string]*shoalv1.Task{}}
	for _, tk := range tasks {
		d.known[tk.GetMeta().GetId()] = tk
	}
	return d
}

func (d *logsDir) path(id string) string { return filepath.Join(d.dir, id+".log") }

func (d *logsDir) logPath(id string) string {
	if d.known[id] == nil {
		return ""
	}
	return d.path(id)
}

func (d *logsDir) tasks() []*shoalv1.Task {
	var out []*shoalv1.Task
	for _, tk := range d.known {
		out = append(out, tk)
	}
	return out
}

func task(id, service string, slot uint64) *shoalv1.Task {
	return &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: "svc-" + service, ServiceName: service, Slot: slot, NodeId: "n1"}
}
