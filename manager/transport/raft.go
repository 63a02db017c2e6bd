package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-dev/shoal/trust"
)

// RaftStreamLayer is hashicorp/raft's StreamLayer over the mux: it accepts
// from Mux.Raft() and dials other managers' ports with TLS and ALPN
// "shoal-raft".
type RaftStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	clientTLS func() *tls.Config

	closed    chan struct{} // closed by Close
	closeOnce sync.Once
}

var _ raft.StreamLayer = (*RaftStreamLayer)(nil)

// NewRaftStreamLayer returns a stream layer accepting from ln (Mux.Raft())
// and advertising advertise, which raft records as this server's address.
// clientTLS is called for every dial, so a renewed certificate is used at
// once; it should return a configuration verifying trust.ManagerServerName (as
// trust.CertStore.ClientTLSConfig(trust.ManagerServerName, trust.ALPNRaft) does).
func NewRaftStreamLayer(ln net.Listener, advertise net.Addr, clientTLS func() *tls.Config) *RaftStreamLayer {
	return &RaftStreamLayer{ln: ln, advertise: advertise, clientTLS: clientTLS, closed: make(chan struct{})}
}

// Accept waits for the next raft connection from another manager. When
// the listener closes under it (the mux stops before raft does, on every
// clean stop) it waits for Close: hashicorp/raft's NetworkTransport logs
// every Accept error at ERROR level, and retries, until it is shut down
// itself.
func (s *RaftStreamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil && errors.Is(err, net.ErrClosed) {
		<-s.closed
	}
	return c, err
}

// Close stops accepting raft connections.
func (s *RaftStreamLayer) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	if s.ln == nil {
		return nil
	}
	return s.ln.Close()
}

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
	conf.NextProtos = []string{trust.ALPNRaft}
	if conf.ServerName == "" {
		conf.ServerName = trust.ManagerServerName
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
	if p := tc.ConnectionState().NegotiatedProtocol; p != trust.ALPNRaft {
		tc.Close()
		return nil, fmt.Errorf("raft dial %s: the server negotiated ALPN %q, not %q", address, p, trust.ALPNRaft)
	}
	return tc, nil
}

// RaftAdmission is the check a manager's mux applies to raft peers
// (Mux.AdmitRaft): the peer must be a voter of the latest raft
// configuration and, per the store (check: trust.StoreCheck when a connection
// is accepted, trust.ConnectionCheck on an open one), a current manager: its
// certificate current, not removed, not demoted. A voter whose node object
// has not reached this manager's store yet is admitted (raft configuration
// entries apply before the log is committed). A manager whose
// configuration is still empty is joining: nothing there to protect yet,
// and its first peer is the leader adding it, so any manager certificate
// is admitted.
func RaftAdmission(configuration func() (raft.Configuration, error), check func(trust.Identity) (trust.Role, error)) func(trust.Identity) error {
	return func(id trust.Identity) error {
		conf, err := configuration()
		if err != nil {
			return fmt.Errorf("reading the raft configuration: %w", err)
		}
		if len(conf.Servers) == 0 {
			return nil
		}
		voter := false
		for _, s := range conf.Servers {
			if string(s.ID) == id.NodeID && s.Suffrage == raft.Voter {
				voter = true
				break
			}
		}
		if !voter {
			return fmt.Errorf("%s is not a voter of the raft configuration", id)
		}
		role, err := check(id)
		switch {
		case errors.Is(err, trust.ErrNodeUnknown):
			return nil
		case err != nil:
			return err
		case role != trust.RoleManager:
			return fmt.Errorf("%s is no longer a manager (its role is changing)", id)
		}
		return nil
	}
}
