package trust_test

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/shoal-dev/shoal/trust"
)

// handshake runs one TLS handshake over a pipe and returns the server's
// view of it.
func handshake(tb testing.TB, server, client *tls.Config) tls.ConnectionState {
	tb.Helper()
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	srv := tls.Server(sc, server)
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := tls.Client(cc, client).Handshake(); err != nil {
		tb.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		tb.Fatalf("server handshake: %v", err)
	}
	return srv.ConnectionState()
}

// TestClusterHandshakeUsesX25519: connections between cluster nodes agree
// on X25519 (see trust.clusterCurves for why), while a client offering Go's
// default hybrid X25519MLKEM768 first (an operator's) still gets it.
func TestClusterHandshakeUsesX25519(t *testing.T) {
	root := newRoot(t, "c1")
	mgr := newStore(t, nodeCreds(t, root, "m1", trust.RoleManager))
	wrk := newStore(t, nodeCreds(t, root, "w1", trust.RoleWorker))
	cluster := wrk.ClientTLSConfig(trust.ManagerServerName, trust.ALPNGRPC)
	if got := handshake(t, mgr.ServerTLSConfig(), cluster).CurveID; got != tls.X25519 {
		t.Errorf("cluster client: curve %s, want X25519", got)
	}
	// An operator's client offering the hybrid (Go's default) keeps it:
	// the servers do not restrict the key exchange.
	hybridFirst := cluster.Clone()
	hybridFirst.CurvePreferences = nil
	if got := handshake(t, mgr.ServerTLSConfig(), hybridFirst).CurveID; got != tls.X25519MLKEM768 {
		t.Errorf("client offering the hybrid first: curve %s, want X25519MLKEM768", got)
	}
}

// BenchmarkHandshake compares one node-to-manager handshake (ECDSA P-256
// certificates both ways) with the hybrid key exchange and with X25519.
func BenchmarkHandshake(b *testing.B) {
	root, err := trust.NewRootCA("c1")
	if err != nil {
		b.Fatal(err)
	}
	creds := func(id string, role trust.Role) *trust.CertStore {
		keyPEM, csrPEM, err := trust.NewKeyAndCSR()
		if err != nil {
			b.Fatal(err)
		}
		certPEM, _, err := root.SignCSR(csrPEM, id, role, testTTL)
		if err != nil {
			b.Fatal(err)
		}
		s, err := trust.NewCertStore(&trust.Creds{CACertPEM: root.CertPEM(), CertPEM: certPEM, KeyPEM: keyPEM})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	mgr, wrk := creds("m1", trust.RoleManager), creds("w1", trust.RoleWorker)
	for _, tc := range []struct {
		name  string
		curve tls.CurveID
	}{{"X25519MLKEM768", tls.X25519MLKEM768}, {"X25519", tls.X25519}} {
		b.Run(tc.name, func(b *testing.B) {
			server := mgr.ServerTLSConfig()
			inner, _ := server.GetConfigForClient(nil)
			inner = inner.Clone()
			inner.CurvePreferences = []tls.CurveID{tc.curve}
			server.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return inner, nil }
			client := wrk.ClientTLSConfig(trust.ManagerServerName, trust.ALPNGRPC)
			client.CurvePreferences = []tls.CurveID{tc.curve}
			for b.Loop() {
				if got := handshake(b, server, client).CurveID; got != tc.curve {
					b.Fatalf("curve %s, want %s", got, tc.curve)
				}
			}
		})
	}
}
