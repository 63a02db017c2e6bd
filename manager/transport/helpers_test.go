package transport_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"

	"github.com/shoal-dev/shoal/manager/transport"
	"github.com/shoal-dev/shoal/trust"
	"github.com/shoal-dev/shoal/trust/trusttest"
)

type cluster struct {
	t    *testing.T
	root *trust.CA
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	root, err := trust.NewRootCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, root: root}
}

// store returns a certificate store for a node of the cluster.
func (c *cluster) store(nodeID string, role trust.Role) *trust.CertStore {
	return trusttest.NodeCerts(c.t, c.root, nodeID, role)
}

// logBuffer is a concurrency-safe slog destination.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startMux serves a mux on 127.0.0.1 with certs; it stops at cleanup.
func startMux(t *testing.T, certs *trust.CertStore, logs *logBuffer) *transport.Mux {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logger *slog.Logger
	if logs != nil {
		logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	mux := transport.NewMux(ln, certs.ServerTLSConfig(), logger)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mux.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return mux
}
