package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-dev/shoal/manager/ca"
)

// RaftStreamLayer is hashicorp/raft's StreamLayer over the mux: it accepts
// from Mux.Raft() and dials other managers' ports with TLS and ALPN
// "shoal-raft".
type RaftStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	clientTLS func() *tls.Config
}

var _ raft.StreamLayer = (*RaftStreamLayer)(nil)

// NewRaftStreamLayer returns a stream layer accepting from ln (Mux.Raft())
// and advertising advertise, which raft records as this server's address.
// clientTLS is called for every dial, so a renewed certificate is used at
// once; it should return a configuration verifying ca.ManagerServerName (as
// ca.CertStore.ClientTLSConfig(ca.ManagerServerName, ca.ALPNRaft) does).
func NewRaftStreamLayer(ln net.Listener, advertise net.Addr, clientTLS func() *tls.Config) *RaftStreamLayer {
	return &RaftStreamLayer{ln: ln, advertise: advertise, clientTLS: clientTLS}
}

// Accept waits for the next raft connection from another manager.
func (s *RaftStreamLayer) Accept() (net.Conn, error) { return s.ln.Accept() }

// Close stops accepting raft connections.
func (s *RaftStreamLayer) Close() error { return s.ln.Close() }

// Addr is the advertised address (not the listen address): raft hands it to
// its peers.
func (s *RaftStreamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to the raft endpoint of the manager at address, within
// timeout for connect and handshake together.
func (s *RaftStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if s.clientTLS == nil {
		return nil, errors.New("raft dial: the stream layer has no client TLS configuration")
	}
	conf := s.clientTLS().Clone()
	// Whatever the caller configured, this connection must reach raft and
	// only a manager may answer it.
	conf.NextProtos = []string{ca.ALPNRaft}
	if conf.ServerName == "" {
		conf.ServerName = ca.ManagerServerName
	}
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: conf}
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("raft dial %s: %w", address, err)
	}
	tc := c.(*tls.Conn)
	if p := tc.ConnectionState().NegotiatedProtocol; p != ca.ALPNRaft {
		tc.Close()
		return nil, fmt.Errorf("raft dial %s: the server negotiated ALPN %q, not %q", address, p, ca.ALPNRaft)
	}
	return tc, nil
}
