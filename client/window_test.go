package client

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// recordingListener keeps what the server read from each connection: what
// the client wrote.
type recordingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*readRecorder
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	r := &readRecorder{Conn: c}
	l.mu.Lock()
	l.conns = append(l.conns, r)
	l.mu.Unlock()
	return r, nil
}

type readRecorder struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *readRecorder) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// clientPings counts the PINGs (not acknowledgements) and WINDOW_UPDATEs
// the clients wrote on every connection recorded so far.
func (l *recordingListener) clientPings(t *testing.T) (pings, updates int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.mu.Lock()
		data := append([]byte(nil), c.buf.Bytes()...)
		c.mu.Unlock()
		if !bytes.HasPrefix(data, []byte(http2.ClientPreface)) {
			t.Fatalf("a connection did not start with HTTP/2's client preface")
		}
		fr := http2.NewFramer(nil, bytes.NewReader(data[len(http2.ClientPreface):]))
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				break // the end of what was recorded
			}
			switch f := f.(type) {
			case *http2.PingFrame:
				if !f.IsAck() {
					pings++
				}
			case *http2.WindowUpdateFrame:
				updates++
			}
		}
	}
	return pings, updates
}

// With its fixed flow-control windows the client sends no PING (gRPC's
// BDP probe) and no WINDOW_UPDATE for small replies: with the dynamic
// window it sent both for nearly every reply, and the manager read them,
// woke its writer for them and acknowledged each PING.
func TestClientSendsNoFlowControlPings(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingListener{Listener: ln}
	// The server's own windows are fixed too (as a manager's), so that
	// the frames counted are the client's own doing.
	srv := grpc.NewServer(grpc.StaticStreamWindowSize(2<<20), grpc.StaticConnWindowSize(2<<20))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(rec)
	defer srv.Stop()

	conn, err := DialHosts([]string{ln.Addr().String()}, insecure.NewCredentials())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	const calls = 20
	for range calls {
		if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	// A PING or WINDOW_UPDATE the client queued for a reply goes out
	// before the next call's request, which the server read. One
	// WINDOW_UPDATE opens the connection's fixed window at the start.
	if pings, updates := rec.clientPings(t); pings != 0 || updates > 1 {
		t.Fatalf("the client sent %d PINGs and %d WINDOW_UPDATEs for %d small calls, want none (fixed flow-control windows; one update at the start)", pings, updates, calls)
	}
}
