package trust

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/credentials"
)

// CertStore holds a node's current credentials and hands out TLS
// configurations that always use them: a node's certificate changes when it
// is promoted or demoted (or renews), and listeners and gRPC clients made
// before the change must present the new one on their next handshake.
// Connections already established keep the certificate they were made with.
type CertStore struct {
	// cur is replaced whole by Set; a certState is never modified, so
	// handshakes read it without locks.
	cur atomic.Pointer[certState]

	mu      sync.Mutex    // guards changed
	changed chan struct{} // closed by the next Set
}

// certState is everything derived from one set of credentials.
type certState struct {
	creds  *Creds
	cert   *tls.Certificate // with Leaf parsed
	pool   *x509.CertPool   // the cluster CA
	id     Identity
	server *tls.Config // per-handshake server config, see ServerTLSConfig
}

// NewCertStore returns a store holding c (after Validate).
func NewCertStore(c *Creds) (*CertStore, error) {
	s := &CertStore{}
	if err := s.Set(c); err != nil {
		return nil, err
	}
	return s, nil
}

// Set replaces the credentials; new handshakes use them at once.
func (s *CertStore) Set(c *Creds) error {
	st, err := newCertState(c)
	if err != nil {
		return err
	}
	s.cur.Store(st)
	s.mu.Lock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	s.mu.Unlock()
	return nil
}

// Changed returns a channel closed by the next Set. Holders of long-lived
// connections use it to dial again with the new certificate: the store
// stops honouring a certificate one renewal after the next.
func (s *CertStore) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

// Leaf is the current certificate, parsed. Do not modify it.
func (s *CertStore) Leaf() *x509.Certificate { return s.cur.Load().cert.Leaf }

func newCertState(c *Creds) (*certState, error) {
	if c == nil {
		return nil, errors.New("cert store: nil credentials")
	}
	c = c.clone()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("cert store: %w", err)
	}
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("cert store: %w", err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("cert store: %w", err)
		}
	}
	id, err := IdentityFromCert(pair.Leaf)
	if err != nil {
		return nil, fmt.Errorf("cert store: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.CACertPEM) {
		return nil, errors.New("cert store: no CA certificate in the credentials")
	}
	st := &certState{creds: c, cert: &pair, pool: pool, id: id}
	st.server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
		NextProtos:   []string{ALPNGRPC, ALPNRaft},
		// Resumed sessions would skip verifying the client's certificate
		// against the current CA; connections here are few and long-lived,
		// so full handshakes cost nothing that matters.
		SessionTicketsDisabled: true,
	}
	return st, nil
}

// clusterCurves is the key exchange the cluster's own connections offer
// (sessions, raft, node to manager, manager to agent: ClientTLSConfig):
// X25519 alone, not Go's default hybrid X25519MLKEM768 first. The hybrid
// makes a handshake 1.6–1.9 times as costly (BenchmarkHandshake, a P-256
// mutual handshake, both ends: 2.1 ms against 1.3 ms, and 5.2 against
// 2.7 ms on a loaded 2-core machine) and was 12 % of the leader's CPU
// while 3,000 nodes opened their sessions, a storm that collapsed the
// leader. The price: node-to-node traffic is not protected against a
// future quantum adversary recording it today. Servers keep Go's default
// preferences, so an operator's client (the CLI, a browser, curl) that
// offers the hybrid still gets it.
var clusterCurves = []tls.CurveID{tls.X25519}

// Creds returns a copy of the current credentials.
func (s *CertStore) Creds() *Creds { return s.cur.Load().creds.clone() }

// Identity is who the current certificate names.
func (s *CertStore) Identity() Identity { return s.cur.Load().id }

// ServerTLSConfig is the configuration for the manager port: TLS 1.3, ALPN
// h2 and shoal-raft, and a client certificate verified against the cluster
// CA if one is given (joining nodes have none yet; the Authorizer decides per
// method). The certificate and the client CAs are looked up per handshake,
// so the same configuration follows Set.
func (s *CertStore) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		ClientAuth:             tls.VerifyClientCertIfGiven,
		NextProtos:             []string{ALPNGRPC, ALPNRaft},
		SessionTicketsDisabled: true,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load().server, nil
		},
		// Unused while GetConfigForClient answers; kept so the outer config
		// alone is never left without a certificate.
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cur.Load().cert, nil
		},
	}
}

// ClientTLSConfig is the configuration for dialling a server named
// serverName (ManagerServerName for managers) with ALPN protocol alpn. The
// client certificate is looked up per handshake; the trusted CA is the one
// current when ClientTLSConfig is called (the cluster CA does not change
// with promotion or renewal).
func (s *CertStore) ClientTLSConfig(serverName, alpn string) *tls.Config {
	conf := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		CurvePreferences: clusterCurves,
		RootCAs:          s.cur.Load().pool,
		ServerName:       serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.cur.Load().cert, nil
		},
	}
	if alpn != "" {
		conf.NextProtos = []string{alpn}
	}
	return conf
}

// ClientCreds are the transport credentials a node uses to dial managers
// over gRPC (the manager's and the daemon's connections to the leader).
func ClientCreds(certs *CertStore) credentials.TransportCredentials {
	return credentials.NewTLS(certs.ClientTLSConfig(ManagerServerName, "h2"))
}
