package trust_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shoal-dev/shoal/manager/transport"
	"github.com/shoal-dev/shoal/trust"
)

const testTTL = time.Hour

func newRoot(t *testing.T, clusterID string) *trust.CA {
	t.Helper()
	root, err := trust.NewRootCA(clusterID)
	if err != nil {
		t.Fatalf("NewRootCA: %v", err)
	}
	return root
}

// nodeCreds issues node credentials the way a join does: key and CSR here,
// signature by the root.
func nodeCreds(t *testing.T, root *trust.CA, nodeID string, role trust.Role) *trust.Creds {
	t.Helper()
	keyPEM, csrPEM, err := trust.NewKeyAndCSR()
	if err != nil {
		t.Fatalf("NewKeyAndCSR: %v", err)
	}
	certPEM, _, err := root.SignCSR(csrPEM, nodeID, role, testTTL)
	if err != nil {
		t.Fatalf("SignCSR(%q, %s): %v", nodeID, role, err)
	}
	return &trust.Creds{CACertPEM: root.CertPEM(), CertPEM: certPEM, KeyPEM: keyPEM}
}

func adminCreds(t *testing.T, root *trust.CA) *trust.Creds {
	t.Helper()
	certPEM, keyPEM, err := root.IssueAdmin("admin", testTTL)
	if err != nil {
		t.Fatalf("IssueAdmin: %v", err)
	}
	return &trust.Creds{CACertPEM: root.CertPEM(), CertPEM: certPEM, KeyPEM: keyPEM}
}

func newStore(t *testing.T, c *trust.Creds) *trust.CertStore {
	t.Helper()
	s, err := trust.NewCertStore(c)
	if err != nil {
		t.Fatalf("NewCertStore: %v", err)
	}
	return s
}

// serveGRPC runs a gRPC server over a Mux on 127.0.0.1 with the server's
// certificate store, register adding services, and the given interceptors.
// It returns the address; everything stops at test cleanup.
func serveGRPC(t *testing.T, certs *trust.CertStore, register func(*grpc.Server), opts ...grpc.ServerOption) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := transport.NewMux(ln, certs.ServerTLSConfig(), nil)
	// errdefs' interceptors first, as on a manager.
	srv := grpc.NewServer(append([]grpc.ServerOption{grpc.Creds(transport.ServerCreds()),
		grpc.ChainUnaryInterceptor(errdefs.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor())}, opts...)...)
	register(srv)
	ctx, cancel := context.WithCancel(context.Background())
	muxDone := make(chan error, 1)
	srvDone := make(chan error, 1)
	go func() { muxDone <- mux.Serve(ctx) }()
	go func() { srvDone <- srv.Serve(mux.GRPC()) }()
	t.Cleanup(func() {
		srv.Stop()
		cancel()
		if err := <-muxDone; err != nil {
			t.Errorf("mux.Serve: %v", err)
		}
		if err := <-srvDone; err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
			t.Errorf("grpc Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// dial returns a client connection to addr with conf; closed at cleanup.
func dial(t *testing.T, addr string, conf *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s): %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// withoutSerial clears the (random) serial for comparisons.
func withoutSerial(id trust.Identity) trust.Identity {
	id.Serial = ""
	return id
}
