package opsapi

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/shoal-dev/shoal/logstream"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// Store is what the server reads: the manager's local view.
type Store interface {
	View() raftstore.Reader
}

// Config configures a Server.
type Config struct {
	Store Store
	// Certs are the manager's node credentials; agents are dialled with
	// them.
	Certs  *trust.CertStore
	Logger *slog.Logger
	// Audit receives one record per exec (who, which task, what command,
	// how it ended). Nil: Logger.
	Audit *slog.Logger
	// ReachTimeout bounds how long a node may take to answer before it is
	// reported and skipped; zero means DefaultReachTimeout.
	ReachTimeout time.Duration
}

// DefaultReachTimeout is how long an agent gets to answer.
const DefaultReachTimeout = 3 * time.Second

// Server implements shoalv1.OpsServer: TaskExec (exec.go) and TaskStats
// (stats.go).
type Server struct {
	shoalv1.UnimplementedOpsServer
	cfg   Config
	log   *slog.Logger
	audit *slog.Logger
	// dial reaches the agent API of a node; tests replace it.
	dial func(ctx context.Context, addr, nodeID string) (*grpc.ClientConn, error)
}

// New returns a server; register it with shoalv1.RegisterOpsServer.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReachTimeout <= 0 {
		cfg.ReachTimeout = DefaultReachTimeout
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "opsapi"), audit: cfg.Audit}
	if s.audit == nil {
		s.audit = s.log.With("audit", true)
	}
	s.dial = func(_ context.Context, addr, nodeID string) (*grpc.ClientConn, error) {
		// The client configuration is taken per dial: it presents the
		// manager's current certificate (promotion, renewal).
		return logstream.Dial(addr, nodeID, cfg.Certs.ClientTLSConfig("", trust.ALPNGRPC),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}))
	}
	return s
}
