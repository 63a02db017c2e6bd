package manager

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

// serverFrames records what the server wrote on a client's connection.
type serverFrames struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *serverFrames) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// pings parses the frames recorded so far and counts the PINGs that are
// not acknowledgements (the server's own BDP probes).
func (c *serverFrames) pings(t *testing.T) int {
	c.mu.Lock()
	data := append([]byte(nil), c.buf.Bytes()...)
	c.mu.Unlock()
	fr := http2.NewFramer(nil, bytes.NewReader(data))
	n := 0
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return n // the end of what was recorded (a frame cut short included)
		}
		if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
			n++
		}
	}
}

// With the manager's fixed flow-control windows the server sends no PING
// (gRPC's BDP probe) for the many small messages node sessions and API
// clients send it: at 5,000 node sessions the probes and their
// acknowledgements were a read and a write syscall per message each way.
func TestServerSendsNoFlowControlPings(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(tuningOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(ln)
	defer srv.Stop()

	var rec *serverFrames
	conn, err := grpc.NewClient(ln.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			rec = &serverFrames{Conn: c}
			return rec, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	const calls = 20
	for i := 0; i < calls; i++ {
		if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	// Each answer was read after any PING the server queued before it
	// (frames go out in the order queued), so every probe is recorded.
	if n := rec.pings(t); n != 0 {
		t.Fatalf("the server sent %d PING frames for %d small calls, want 0 (fixed flow-control windows)", n, calls)
	}
}

// clientFrames records what a client wrote on its connection.
type clientFrames struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *clientFrames) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.buf.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// pingsAndUpdates counts the client's PINGs (not acknowledgements) and
// WINDOW_UPDATEs recorded so far.
func (c *clientFrames) pingsAndUpdates(t *testing.T) (pings, updates int) {
	c.mu.Lock()
	data := append([]byte(nil), c.buf.Bytes()...)
	c.mu.Unlock()
	if !bytes.HasPrefix(data, []byte(http2.ClientPreface)) {
		t.Fatal("the connection did not start with HTTP/2's client preface")
	}
	fr := http2.NewFramer(nil, bytes.NewReader(data[len(http2.ClientPreface):]))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return pings, updates
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

// A follower's connection to the leader, on which it forwards calls, has
// the server's fixed windows too: with gRPC's dynamic window the follower
// answered nearly every forwarded reply with a WINDOW_UPDATE and a PING
// that the leader read and acknowledged.
func TestForwardClientSendsNoFlowControlPings(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(tuningOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(ln)
	defer srv.Stop()

	var rec *clientFrames
	conn, err := grpc.NewClient(ln.Addr().String(), append(forwardDialOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			rec = &clientFrames{Conn: c}
			return rec, nil
		}))...)
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
	// What the client queued for a reply was written before the next
	// call's request. One WINDOW_UPDATE opens the connection's window.
	if pings, updates := rec.pingsAndUpdates(t); pings != 0 || updates > 1 {
		t.Fatalf("the forwarding client sent %d PINGs and %d WINDOW_UPDATEs for %d small calls, want none (one update at the start)", pings, updates, calls)
	}
}
