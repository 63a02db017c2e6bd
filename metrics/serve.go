package metrics

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/shoal-dev/shoal/trust"
)

// DefaultPort is the --metrics-addr port when only an IP is given: the
// port of Docker's metrics-addr, which operators' scrape configurations
// already know.
const DefaultPort = 9323

// ServeConfig configures Serve.
type ServeConfig struct {
	// Addr is host:port to listen on.
	Addr string
	// Certs are the node's credentials: the server certificate and the
	// cluster CA that client certificates must chain to.
	Certs   *trust.CertStore
	Handler http.Handler
	// Current checks that a client certificate is still honoured (not
	// revoked, not renewed twice since); nil trusts the certificate alone
	// (tests).
	Current func(ctx context.Context, id trust.Identity) (trust.Role, error)
	Logger  *slog.Logger
}

// Serve serves the handler over HTTPS on cfg.Addr until ctx ends. Like
// every other shoal port it is mutual TLS: the client must present a
// certificate of this cluster's CA with the admin or manager role (a
// Prometheus server scrapes with an admin certificate, `shoal admin-cert`),
// since the metrics name services, tasks and nodes.
func Serve(ctx context.Context, cfg ServeConfig) error {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("metrics listen on %s: %w", cfg.Addr, err)
	}
	return ServeListener(ctx, ln, cfg)
}

// ServeListener is Serve on a listener of the caller's (tests: port 0).
func ServeListener(ctx context.Context, ln net.Listener, cfg ServeConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "metrics")
	srv := &http.Server{
		Handler:           Authorize(cfg.Certs.Identity().ClusterID, cfg.Current, cfg.Handler, log),
		TLSConfig:         serverTLSConfig(cfg.Certs),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	defer stop()
	log.Info("metrics serving", "listen", ln.Addr().String())
	err := srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// serverTLSConfig is the node's server configuration requiring a client
// certificate, for HTTP/1.1 and h2 instead of gRPC's ALPN.
func serverTLSConfig(certs *trust.CertStore) *tls.Config {
	base := certs.ServerTLSConfig()
	strict := func(c *tls.Config) *tls.Config {
		c = c.Clone()
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.NextProtos = []string{"h2", "http/1.1"}
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

// Authorize lets through requests whose verified client certificate is of
// clusterID with the admin or manager role (and still current, when
// current is set); others get 401 or 403.
func Authorize(clusterID string, current func(context.Context, trust.Identity) (trust.Role, error), next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			http.Error(w, "metrics: a client certificate of the cluster CA is required", http.StatusUnauthorized)
			return
		}
		id, err := trust.IdentityFromCert(r.TLS.VerifiedChains[0][0])
		if err == nil && id.ClusterID != clusterID {
			err = fmt.Errorf("certificate of cluster %q, not this one", id.ClusterID)
		}
		if err == nil && current != nil {
			id.Role, err = current(r.Context(), id)
		}
		if err != nil {
			log.Warn("metrics scrape refused", "caller", id.String(), "err", err)
			http.Error(w, "metrics: "+err.Error(), http.StatusUnauthorized)
			return
		}
		if id.Role != trust.RoleAdmin && id.Role != trust.RoleManager {
			log.Warn("metrics scrape refused", "caller", id.String(), "err", "role")
			http.Error(w, fmt.Sprintf("metrics: %s may not read metrics (admin or manager certificates only)", id), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
