package transport_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/shoal-dev/shoal/manager/transport"
	"github.com/shoal-dev/shoal/trust"
)

// serveHealth runs a gRPC health server on the mux's h2 listener.
func serveHealth(t *testing.T, mux *transport.Mux) {
	t.Helper()
	srv := grpc.NewServer(grpc.Creds(transport.ServerCreds()))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(mux.GRPC())
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
}

// acceptOne returns a channel that yields the next connection of ln.
func acceptOne(ln net.Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(ch)
			return
		}
		ch <- c
	}()
	return ch
}

func waitConn(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("the listener closed")
		}
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection was handed out")
	}
	return nil
}

// readClosed reports how a client connection ends: it must be closed by the
// server (EOF or a TLS alert), not left hanging.
func readClosed(t *testing.T, c net.Conn) error {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on a connection the mux should have closed: %v", err)
	}
	return err
}

func TestMuxRoutesByALPN(t *testing.T) {
	c := newCluster(t)
	mux := startMux(t, c.store("m0", trust.RoleManager), nil)
	serveHealth(t, mux)
	accepted := acceptOne(mux.Raft())
	client := c.store("m1", trust.RoleManager)

	// h2 → gRPC.
	conn, err := grpc.NewClient(mux.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(client.ClientTLSConfig(trust.ManagerServerName, trust.ALPNGRPC))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check over h2: %v, %v", resp, err)
	}

	// shoal-raft → Raft(), same port, with the peer's verified identity.
	rc, err := tls.Dial("tcp", mux.Addr().String(), client.ClientTLSConfig(trust.ManagerServerName, trust.ALPNRaft))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := rc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	sc := waitConn(t, accepted).(*tls.Conn)
	st := sc.ConnectionState()
	if st.NegotiatedProtocol != trust.ALPNRaft || st.VerifiedChains[0][0].Subject.CommonName != "m1" {
		t.Errorf("raft connection: ALPN %q, peer %q", st.NegotiatedProtocol, st.VerifiedChains[0][0].Subject.CommonName)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("raft side read %q, %v", buf, err)
	}
	if mux.GRPC().Addr().String() != mux.Addr().String() || mux.Raft().Addr().String() != mux.Addr().String() {
		t.Error("protocol listeners do not report the mux address")
	}
}

func TestMuxRaftAdmitsOnlyManagers(t *testing.T) {
	c := newCluster(t)
	logs := &logBuffer{}
	mux := startMux(t, c.store("m0", trust.RoleManager), logs)
	accepted := acceptOne(mux.Raft())

	for _, tc := range []struct {
		name string
		conf *tls.Config
		log  string
	}{
		{"worker", c.store("w1", trust.RoleWorker).ClientTLSConfig(trust.ManagerServerName, trust.ALPNRaft), `worker \"w1\" is not a manager`},
		{"no certificate", &tls.Config{RootCAs: c.root.Pool(), ServerName: trust.ManagerServerName, NextProtos: []string{trust.ALPNRaft}}, "no certificate verified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := tls.Dial("tcp", mux.Addr().String(), tc.conf)
			if err != nil {
				t.Fatal(err) // TLS 1.3: the client's handshake ends before the server decides
			}
			defer rc.Close()
			readClosed(t, rc)
			// The log line is written before the server closes the connection.
			if l := logs.String(); !strings.Contains(l, "refused raft connection") || !strings.Contains(l, tc.log) {
				t.Errorf("logs do not say why:\n%s", l)
			}
		})
	}

	// Neither was handed out: the next raft connection is the manager's.
	rc, err := tls.Dial("tcp", mux.Addr().String(), c.store("m1", trust.RoleManager).ClientTLSConfig(trust.ManagerServerName, trust.ALPNRaft))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	sc := waitConn(t, accepted).(*tls.Conn)
	if cn := sc.ConnectionState().VerifiedChains[0][0].Subject.CommonName; cn != "m1" {
		t.Fatalf("raft listener handed out the connection of %q", cn)
	}
}

func TestMuxRefusesOtherProtocols(t *testing.T) {
	c := newCluster(t)
	mux := startMux(t, c.store("m0", trust.RoleManager), nil)
	conf := c.store("m1", trust.RoleManager).ClientTLSConfig(trust.ManagerServerName, "")

	// No ALPN at all, or only http/1.1 (which Go's TLS server treats as no
	// ALPN): handshaken, then closed.
	for _, protos := range [][]string{nil, {"http/1.1"}} {
		conf.NextProtos = protos
		rc, err := tls.Dial("tcp", mux.Addr().String(), conf)
		if err != nil {
			t.Fatalf("ALPN %q: %v", protos, err)
		}
		defer rc.Close()
		readClosed(t, rc)
	}

	// Another ALPN protocol the mux does not speak fails the handshake.
	conf.NextProtos = []string{"spdy/3"}
	if rc, err := tls.Dial("tcp", mux.Addr().String(), conf); err == nil {
		rc.Close()
		t.Fatal("handshake with ALPN spdy/3 succeeded")
	}

	// Another cluster's client certificate fails the handshake.
	other := newCluster(t)
	conf = other.store("m9", trust.RoleManager).ClientTLSConfig(trust.ManagerServerName, trust.ALPNRaft)
	conf.RootCAs = c.root.Pool()
	rc2, err := tls.Dial("tcp", mux.Addr().String(), conf)
	if err != nil {
		t.Fatal(err)
	}
	defer rc2.Close()
	if err := readClosed(t, rc2); !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Errorf("foreign client certificate: %v", err)
	}
}

// TestMuxServeStops checks that cancelling Serve's context aborts a
// handshake in flight, closes the protocol listeners and returns nil.
func TestMuxServeStops(t *testing.T) {
	c := newCluster(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := transport.NewMux(ln, c.store("m0", trust.RoleManager).ServerTLSConfig(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mux.Serve(ctx) }()
	grpcClosed := make(chan error, 1)
	go func() {
		_, err := mux.GRPC().Accept()
		grpcClosed <- err
	}()

	// A peer that connects and says nothing...
	silent, err := net.Dial("tcp", mux.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// ...accepted before this one, whose handshake completes, so the silent
	// one is certainly in its handshake now.
	accepted := acceptOne(mux.Raft())
	rc, err := tls.Dial("tcp", mux.Addr().String(), c.store("m1", trust.RoleManager).ClientTLSConfig(trust.ManagerServerName, trust.ALPNRaft))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	waitConn(t, accepted)

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve returned %v", err)
	}
	readClosed(t, silent)
	if err := <-grpcClosed; !errors.Is(err, net.ErrClosed) {
		t.Errorf("GRPC().Accept after stop: %v", err)
	}
	if _, err := mux.Raft().Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Raft().Accept after stop: %v", err)
	}
	if err := mux.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestServerCreds(t *testing.T) {
	creds := transport.ServerCreds()
	if creds.Info().SecurityProtocol != "tls" {
		t.Errorf("Info = %+v", creds.Info())
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, _, err := creds.ClientHandshake(context.Background(), "x", a); err == nil {
		t.Error("ClientHandshake succeeded")
	}
	if _, _, err := creds.ServerHandshake(a); err == nil || !strings.Contains(err.Error(), "not handshaken by the mux") {
		t.Errorf("ServerHandshake of a plain conn: %v", err)
	}
	if creds.Clone() == nil {
		t.Error("Clone returned nil")
	}
}
