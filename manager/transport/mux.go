package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/trust"
)

// HandshakeTimeout bounds each connection's TLS handshake, so a peer that
// connects and says nothing holds a goroutine and a socket only that long.
const HandshakeTimeout = 10 * time.Second

// Mux accepts TLS connections on one listener and hands each, handshaken, to
// the listener for its ALPN protocol.
type Mux struct {
	ln   net.Listener
	conf *tls.Config
	log  *slog.Logger

	grpc *connListener
	raft *connListener

	// ctx is cancelled by Close; it aborts handshakes in flight.
	ctx    context.Context
	cancel context.CancelFunc

	// admit and readmit, when set, decide whether a raft peer is (still)
	// a member; see AdmitRaft.
	admit, readmit func(trust.Identity) error

	closeOnce sync.Once
	closeErr  error
	conns     sync.WaitGroup // handshake goroutines, waited for by Serve
}

// NewMux returns a mux over ln; conf is the server TLS configuration (see
// trust.CertStore.ServerTLSConfig) and must offer the ALPN protocols "h2" and
// "shoal-raft". A nil logger discards.
func NewMux(ln net.Listener, conf *tls.Config, logger *slog.Logger) *Mux {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Mux{
		ln:     ln,
		conf:   conf,
		log:    logger.With("component", "transport"),
		grpc:   newConnListener(ln.Addr()),
		raft:   newConnListener(ln.Addr()),
		ctx:    ctx,
		cancel: cancel,
	}
}

// GRPC is the listener of connections that negotiated "h2"; serve it with a
// gRPC server using ServerCreds. Closing it refuses later h2 connections but
// leaves the mux running.
func (m *Mux) GRPC() net.Listener { return m.grpc }

// Raft is the listener of connections that negotiated "shoal-raft" and whose
// peer holds a verified manager certificate of the cluster CA. Closing it
// refuses later raft connections but leaves the mux running.
func (m *Mux) Raft() net.Listener { return m.raft }

// AdmitRaft makes the mux check every raft peer: with admit when the
// connection is accepted, and with readmit whenever bytes arrive on it, so
// a peer that stops being a member (demoted, removed) cannot send another
// raft RPC, even on a connection opened while it was one. hashicorp/raft
// itself accepts AppendEntries with a higher term from anyone. readmit may
// be more lenient than admit on what does not change a membership (a
// certificate replaced by a renewal with the same role), so that renewals
// do not cut raft's connections. Call it before Serve.
func (m *Mux) AdmitRaft(admit, readmit func(trust.Identity) error) {
	m.admit, m.readmit = admit, readmit
}

// Addr is the address the mux listens on.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Serve accepts connections until ctx ends or the mux (or its listener) is
// closed, and returns nil then; it returns an error only if accepting fails
// for good. When it returns, the mux is closed and every connection it
// accepted has been handed out or closed. Call it once.
func (m *Mux) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { m.Close() })
	defer stop()
	defer m.conns.Wait()
	defer m.Close()

	var backoff time.Duration
	for {
		raw, err := m.ln.Accept()
		if err != nil {
			if m.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if !errors.As(err, &ne) {
				return fmt.Errorf("transport: accepting on %s: %w", m.ln.Addr(), err)
			}
			// Accept errors on a live TCP listener are resource shortages
			// (EMFILE, ENOBUFS): wait for them to pass instead of spinning.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			m.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-m.ctx.Done():
			}
			continue
		}
		backoff = 0
		m.conns.Add(1)
		go func() {
			defer m.conns.Done()
			m.handle(raw)
		}()
	}
}

// handle handshakes one connection and routes it.
func (m *Mux) handle(raw net.Conn) {
	remote := raw.RemoteAddr().String()
	tc := tls.Server(raw, m.conf)
	// Both bounds: the deadline for a silent peer, the context for Close.
	if err := raw.SetDeadline(time.Now().Add(HandshakeTimeout)); err != nil {
		raw.Close()
		return
	}
	ctx, cancel := context.WithTimeout(m.ctx, HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		tc.Close()
		if m.ctx.Err() == nil {
			// EOFs are port probes and health checks; certificate trouble
			// (another cluster, an expired node) is worth seeing.
			level := slog.LevelInfo
			if errors.Is(err, io.EOF) {
				level = slog.LevelDebug
			}
			m.log.Log(m.ctx, level, "TLS handshake failed", "remote", remote, "err", err)
		}
		return
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		tc.Close()
		return
	}
	st := tc.ConnectionState()
	switch st.NegotiatedProtocol {
	case trust.ALPNGRPC:
		m.grpc.deliver(tc)
	case trust.ALPNRaft:
		id, err := raftPeer(st)
		if err != nil {
			m.log.Warn("refused raft connection", "remote", remote, "err", err)
			tc.Close()
			return
		}
		if m.admit == nil {
			m.log.Debug("raft connection", "remote", remote, "node_id", id.NodeID)
			m.raft.deliver(tc)
			return
		}
		if err := m.admit(id); err != nil {
			m.log.Warn("refused raft connection", "remote", remote, "node_id", id.NodeID, "err", err)
			tc.Close()
			return
		}
		m.log.Debug("raft connection", "remote", remote, "node_id", id.NodeID)
		m.raft.deliver(&admittedConn{Conn: tc, id: id, admit: m.readmit, log: m.log, remote: remote})
	default:
		m.log.Info("closing connection without a known ALPN protocol", "remote", remote, "alpn", st.NegotiatedProtocol)
		tc.Close()
	}
}

// raftPeer admits only managers to raft: raft messages carry no
// authorization of their own, and a worker that could speak raft could
// vote or rewrite the log.
func raftPeer(st tls.ConnectionState) (trust.Identity, error) {
	if len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return trust.Identity{}, errors.New("the peer presented no certificate verified by the cluster CA")
	}
	id, err := trust.IdentityFromCert(st.VerifiedChains[0][0])
	if err != nil {
		return trust.Identity{}, err
	}
	if id.Role != trust.RoleManager {
		return id, fmt.Errorf("%s is not a manager", id)
	}
	return id, nil
}

// admittedConn is a raft connection whose peer is checked again before each
// read: raft reads one RPC after another, so a peer that is no longer a
// member gets none through (at most what it sent while it still was one and
// the reader had already buffered).
type admittedConn struct {
	net.Conn
	id     trust.Identity
	admit  func(trust.Identity) error
	log    *slog.Logger
	remote string

	refused atomic.Bool
}

func (c *admittedConn) Read(p []byte) (int, error) {
	if c.refused.Load() {
		return 0, io.EOF
	}
	// Checked when the bytes have arrived, not when the read began: raft
	// waits in Read for the next RPC for as long as the peer is silent.
	n, err := c.Conn.Read(p)
	if n == 0 {
		return n, err
	}
	if aerr := c.admit(c.id); aerr != nil {
		c.refused.Store(true)
		c.log.Warn("raft peer no longer admitted; closing its connection", "remote", c.remote, "node_id", c.id.NodeID, "err", aerr)
		c.Conn.Close()
		// EOF, not an error: raft logs anything else at ERROR, and this
		// is a decision, already logged. What was read is dropped.
		return 0, io.EOF
	}
	return n, err
}

// ConnectionState exposes the TLS state (tests, logs).
func (c *admittedConn) ConnectionState() tls.ConnectionState {
	return c.Conn.(*tls.Conn).ConnectionState()
}

// Close stops accepting, aborts handshakes in flight and closes both
// protocol listeners. Connections already handed out stay open: their
// owners (gRPC, raft) close them.
func (m *Mux) Close() error {
	m.closeOnce.Do(func() {
		m.cancel()
		if err := m.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			m.closeErr = err
		}
		m.grpc.Close()
		m.raft.Close()
	})
	return m.closeErr
}

// connListener is a net.Listener fed by the mux.
type connListener struct {
	addr  net.Addr
	conns chan net.Conn // unbuffered: a connection is handed over or closed, never stranded
	done  chan struct{}
	once  sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// deliver waits until the connection is accepted or the listener closes.
func (l *connListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }
