package agentapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/trust"
)

// ServerOptions are the options of an agent API gRPC server: TLS with the
// node's certificate (following certs as it changes on promotion or
// renewal), a client certificate required and verified against the
// cluster CA, trust.AgentPolicy checked on every call, and refused calls
// logged.
//
// The certificate alone is trusted here; ServeListener adds the store
// check of Config.Current.
func ServerOptions(certs *trust.CertStore, logger *slog.Logger) []grpc.ServerOption {
	return serverOptions(certs, logger, nil, nil)
}

// RecheckPeriod is how often a stream in progress (a followed log) asks
// again whether its caller is still current.
const RecheckPeriod = time.Second

func serverOptions(certs *trust.CertStore, logger *slog.Logger, current, ongoing func(context.Context, trust.Identity) (trust.Role, error)) []grpc.ServerOption {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	log := logger.With("component", "agentapi")
	authz := &trust.Authorizer{Policy: trust.AgentPolicy(), ClusterID: certs.Identity().ClusterID, Current: current, Ongoing: ongoing, Recheck: RecheckPeriod}
	// logRefusal runs outside errdefs' interceptor: it sees the status the
	// caller gets.
	logRefusal := func(ctx context.Context, method string, err error) {
		switch status.Code(err) {
		case codes.PermissionDenied, codes.Unauthenticated:
			from := "unknown"
			if id, ierr := trust.PeerIdentity(ctx); ierr == nil {
				from = id.String()
			}
			log.Warn("agent API call refused", "method", method, "caller", from, "err", status.Convert(err).Message())
		}
	}
	return []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(serverTLSConfig(certs))),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			resp, err := h(ctx, req)
			logRefusal(ctx, info.FullMethod, err)
			return resp, err
		}, errdefs.UnaryServerInterceptor(), authz.Unary()),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			err := h(srv, ss)
			logRefusal(ss.Context(), info.FullMethod, err)
			return err
		}, errdefs.StreamServerInterceptor(), authz.Stream()),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 2 * time.Second, PermitWithoutStream: true}),
	}
}

// serverTLSConfig is the node's server configuration made strict for this
// port: only gRPC, and no connection without a certificate of the cluster
// CA (unlike the manager port, nobody joins through here).
func serverTLSConfig(certs *trust.CertStore) *tls.Config {
	base := certs.ServerTLSConfig()
	strict := func(c *tls.Config) *tls.Config {
		c = c.Clone()
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.NextProtos = []string{trust.ALPNGRPC}
		return c
	}
	conf := strict(base)
	conf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := base.GetConfigForClient(hello)
		if err != nil || c == nil {
			return c, err
		}
		return strict(c), nil
	}
	return conf
}

// Serve listens on listenAddr and serves srv until ctx ends.
func Serve(ctx context.Context, listenAddr string, certs *trust.CertStore, srv *Server) error {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return fmt.Errorf("agent API listen on %s: %w", listenAddr, err)
	}
	return ServeListener(ctx, ln, certs, srv)
}

// ServeListener serves srv on ln until ctx ends, then closes ln. Streams
// in flight (followed logs) are cut: they would otherwise hold the
// shutdown for as long as their callers like.
func ServeListener(ctx context.Context, ln net.Listener, certs *trust.CertStore, srv *Server) error {
	g := grpc.NewServer(serverOptions(certs, srv.cfg.Logger, srv.cfg.Current, srv.cfg.Ongoing)...)
	srv.Register(g)
	stop := context.AfterFunc(ctx, g.Stop)
	defer stop()
	srv.log.Info("agent API serving", "listen", ln.Addr().String())
	err := g.Serve(ln)
	if ctx.Err() != nil || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return fmt.Errorf("agent API serve: %w", err)
}
