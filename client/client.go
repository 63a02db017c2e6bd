// Package client is how Go callers (the CLI, tests, benchmarks) talk to the
// managers: it finds credentials and manager addresses from a data dir or
// explicit settings, dials with mTLS, fails over between managers, and
// retries calls that failed with UNAVAILABLE (a leader election, a manager
// restarting) until the call's deadline. ListNodes, ListServices and
// ListTasks read every page of a list (the API answers one page of 100
// when asked for no page size).
package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/datadir"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// Config says where the managers are and which credentials to use.
type Config struct {
	// DataDir is a node's data dir: node.json lists managers; admin/ or, on
	// a manager, certs/ holds credentials.
	DataDir string
	// Hosts are manager API addresses (host:port); they win over DataDir.
	Hosts []string
	// CertDir holds ca.crt, admin.crt and admin.key; it wins over DataDir.
	CertDir string
	// DialOptions are added to the connection's (e.g. a dialer that
	// reaches managers inside another network namespace).
	DialOptions []grpc.DialOption
}

// Client is a connection to the managers.
type Client struct {
	Control shoalv1.ControlClient
	conn    *grpc.ClientConn
	hosts   []string
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn returns the underlying connection.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Hosts returns the manager addresses the client may use.
func (c *Client) Hosts() []string { return c.hosts }

// Credentials finds the credentials cfg points at.
func Credentials(cfg Config) (*trust.Creds, error) {
	if cfg.CertDir != "" {
		c, err := trust.LoadCreds(cfg.CertDir, "admin")
		if err != nil {
			return nil, fmt.Errorf("--cert-dir %s: %w", cfg.CertDir, err)
		}
		return c, nil
	}
	if cfg.DataDir == "" {
		return nil, errors.New("no credentials: pass --cert-dir or --data-dir")
	}
	admin := datadir.Dir(cfg.DataDir).Admin()
	if _, err := os.Stat(filepath.Join(admin, "admin.crt")); err == nil {
		return trust.LoadCreds(admin, "admin")
	}
	certs := datadir.Dir(cfg.DataDir).Certs()
	if st, err := datadir.Load(cfg.DataDir); err == nil && st.Role == string(trust.RoleManager) {
		return trust.LoadCreds(certs, "node")
	}
	return nil, fmt.Errorf("no credentials: pass --cert-dir or run on a manager's data dir (looked in %s and %s)", admin, certs)
}

// Hosts finds the manager addresses cfg points at.
func Hosts(cfg Config) ([]string, error) {
	if len(cfg.Hosts) > 0 {
		return cfg.Hosts, nil
	}
	if cfg.DataDir == "" {
		return nil, errors.New("no manager address: pass --host or --data-dir")
	}
	st, err := datadir.Load(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("no manager address: pass --host, or a --data-dir holding a node (%v)", err)
	}
	var out []string
	seen := map[string]bool{}
	add := func(a string) {
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	if st.Role == string(trust.RoleManager) {
		add(st.AdvertiseAddr)
	}
	for _, m := range st.Managers {
		add(m)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s lists no manager", cfg.DataDir)
	}
	return out, nil
}

// Dial connects to the managers. It does not wait for a connection: the
// first call does, and fails with a clear error if none is reachable.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	creds, err := Credentials(cfg)
	if err != nil {
		return nil, err
	}
	hosts, err := Hosts(cfg)
	if err != nil {
		return nil, err
	}
	conf, err := trust.ClientTLSConfigFromCreds(creds, trust.ManagerServerName)
	if err != nil {
		return nil, err
	}
	conn, err := DialHosts(hosts, credentials.NewTLS(conf), cfg.DialOptions...)
	if err != nil {
		return nil, err
	}
	return &Client{Control: shoalv1.NewControlClient(conn), conn: conn, hosts: hosts}, nil
}

// DialHosts returns a connection over several managers: pick_first moves on
// to the next address when one is down, and unary calls retry UNAVAILABLE.
func DialHosts(hosts []string, tc credentials.TransportCredentials, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	r := manual.NewBuilderWithScheme("shoal")
	addrs := make([]resolver.Address, len(hosts))
	for i, h := range hosts {
		addrs[i] = resolver.Address{Addr: h}
	}
	r.InitialState(resolver.State{Addresses: addrs})
	opts := append([]grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(tc),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"pick_first":{}}]}`),
		grpc.WithChainUnaryInterceptor(RetryUnavailable(hosts)),
		// Lists can be large (100,000 tasks are ~23 MB), above gRPC's
		// default 4 MiB receive limit.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxReplyBytes)),
	}, extra...)
	return grpc.NewClient(r.Scheme()+":///managers", opts...)
}

// MaxReplyBytes bounds one reply the client accepts.
const MaxReplyBytes = 256 << 20

// RetryUnavailable retries calls that failed with UNAVAILABLE, backing off
// from 25 ms to 250 ms (a leader election takes about a second, so a longer
// back-off would only add to the failover time), until the call's context
// ends. Calls without a deadline get 30 s. The final error names the
// managers tried. Two answers end the retries early, each with an error
// that says what is wrong rather than gRPC's "context deadline exceeded":
//
//   - NO_QUORUM (errdefs.ErrNoQuorum): a manager already waited for an
//     election that did not come; the cluster has lost quorum and only an
//     operator can bring it back.
//   - the call's own deadline passing while a manager held it (a write
//     the leader could not commit, say): DeadlineExceeded naming the
//     managers and the timeout.
func RetryUnavailable(hosts []string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		start := time.Now()
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
		}
		backoff := 25 * time.Millisecond
		for {
			err := invoker(ctx, method, req, reply, cc, opts...)
			switch {
			case errdefs.Is(err, errdefs.ErrNoQuorum):
				return errdefs.ToGRPC(errdefs.NoQuorumf("%s; at least half of the managers %v and one more must be up and reach each other (`shoal node ls` on a manager lists them)", status.Convert(err).Message(), hosts))
			case status.Code(err) == codes.DeadlineExceeded:
				// The call's deadline travels to the server, which may end the
				// call a moment before this side's context notices.
				return errdefs.ToGRPC(fmt.Errorf("no answer from the managers %v within %v (--timeout; a write may still be applied if the cluster recovers): %w", hosts, time.Since(start).Round(100*time.Millisecond), context.DeadlineExceeded))
			case !errdefs.IsUnavailable(err):
				return err
			}
			select {
			case <-ctx.Done():
				// Answered as a server would: callers read it as a status.
				return errdefs.ToGRPC(errdefs.Unavailablef("cannot reach a manager (%v): %s", hosts, status.Convert(err).Message()))
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 250*time.Millisecond)
		}
	}
}
