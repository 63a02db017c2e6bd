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

// recordedConn keeps what a client read (the server's frames) and wrote
// (its own) on its connection.
type recordedConn struct {
	net.Conn
	mu            sync.Mutex
	read, written bytes.Buffer
}

func (c *recordedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.read.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recordedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.written.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// flowFrames counts the PINGs that are not acknowledgements (gRPC's BDP
// probes) and the WINDOW_UPDATEs recorded so far, of the server's side or
// (client, after HTTP/2's preface) of the client's.
func (c *recordedConn) flowFrames(t *testing.T, client bool) (pings, updates int) {
	c.mu.Lock()
	data := append([]byte(nil), c.read.Bytes()...)
	if client {
		data = append([]byte(nil), c.written.Bytes()...)
	}
	c.mu.Unlock()
	if client {
		if !bytes.HasPrefix(data, []byte(http2.ClientPreface)) {
			t.Fatal("the connection did not start with HTTP/2's client preface")
		}
		data = data[len(http2.ClientPreface):]
	}
	fr := http2.NewFramer(nil, bytes.NewReader(data))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return pings, updates // the end of what was recorded (a frame cut short included)
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

// smallCalls serves gRPC's health service with the manager's tuning
// options, makes calls health checks over a client with opts (credentials
// added) and returns the client's recorded connection. Whatever either
// side queued for a call went out before the next call's request and
// answer, so the frames of the calls are all recorded.
func smallCalls(t *testing.T, calls int, opts ...grpc.DialOption) *recordedConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(tuningOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(ln)
	defer srv.Stop()

	var rec *recordedConn
	conn, err := grpc.NewClient(ln.Addr().String(), append(opts,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			rec = &recordedConn{Conn: c}
			return rec, nil
		}))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for range calls {
		if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	return rec
}

// With the manager's fixed flow-control windows the server sends no PING
// (gRPC's BDP probe) for the many small messages node sessions and API
// clients send it: at 5,000 node sessions the probes and their
// acknowledgements were a read and a write syscall per message each way.
func TestServerSendsNoFlowControlPings(t *testing.T) {
	const calls = 20
	if n, _ := smallCalls(t, calls).flowFrames(t, false); n != 0 {
		t.Fatalf("the server sent %d PING frames for %d small calls, want 0 (fixed flow-control windows)", n, calls)
	}
}

// A follower's connection to the leader, on which it forwards calls, has
// the server's fixed windows too: with gRPC's dynamic window the follower
// answered nearly every forwarded reply with a WINDOW_UPDATE and a PING
// that the leader read and acknowledged. One WINDOW_UPDATE opens the
// connection's window at the start.
func TestForwardClientSendsNoFlowControlPings(t *testing.T) {
	const calls = 20
	if pings, updates := smallCalls(t, calls, forwardDialOptions()...).flowFrames(t, true); pings != 0 || updates > 1 {
		t.Fatalf("the forwarding client sent %d PINGs and %d WINDOW_UPDATEs for %d small calls, want none (one update at the start)", pings, updates, calls)
	}
}
