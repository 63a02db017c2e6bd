// Package client is how Go callers (the CLI, tests, benchmarks) talk to the
// managers: it finds credentials and manager addresses from a data dir or
// explicit settings, dials with mTLS, fails over between managers, and
// retries calls that failed with UNAVAILABLE (a leader election, a manager
// restarting) until the call's deadline. A manager that answers that it is
// not ready (errdefs.ErrNotReady: starting, restarted without quorum,
// still joining) is failed over from as a refused connection is: the
// call goes on to the next address (failover.go), and so does a server
// stream, opened again there (stream.go). With Config.ReadyWait
// (the CLI's --ready-wait) a call stops sooner when no manager can serve
// it yet — every address refused connections or answered not ready — and
// says why (the last answer's reason first), instead of waiting out its
// --timeout. ListNodes, ListServices and
// ListTasks read every page of a list (the API answers one page of 100
// when asked for no page size). Control's other calls travel over one
// pipeline stream per connection, many at once (pipeline.go); retries and
// failover treat them as the unary calls they stand for.
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
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
	// reaches managers inside another network namespace; with a dialer of
	// its own, refused connections are not told from other failures and
	// are retried until the deadline).
	DialOptions []grpc.DialOption
	// ReadyWait bounds how long a call keeps retrying while no manager can
	// serve it yet: every address refuses connections (nothing listens:
	// the node is down or has not opened its port yet) or the manager
	// answers that it is not ready (errdefs.ErrNotReady: it holds no
	// cluster state yet). Then the call fails saying which. 0 retries such
	// answers until the call's deadline, as any other UNAVAILABLE. A call
	// that is merely slow (a manager holding it) is not affected.
	ReadyWait time.Duration
}

// Client is a connection to the managers.
type Client struct {
	Control shoalv1.ControlClient
	conn    *grpc.ClientConn
	// hosts are the connection's addresses, which LearnManagers extends.
	hosts *hostList
}

// hostList is the manager addresses of one connection, shared by the
// Client (LearnManagers adds to it) and its retry interceptor, which must
// judge "every manager refuses connections" and name the managers over
// all of them, learned ones included: a learned manager that answers
// while the first one is dead is not "nothing listens".
//
// It also moves the connection off a manager that answers "not ready"
// (failover.go): pick_first stays on a connected address as long as it is
// listed, so the resolver is given the list without that address.
type hostList struct {
	mu    sync.Mutex // guards the fields below
	hosts []string
	// r feeds the connection its addresses (nil: nothing to update).
	r *manual.Resolver
	// skip is the address left out of the resolver's list because it
	// answered not ready ("": none).
	skip string
	// unready is each address's last "not ready" answer.
	unready map[string]unreadyAnswer
}

func (l *hostList) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.hosts...)
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn returns the underlying connection.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Hosts returns the manager addresses the client may use.
func (c *Client) Hosts() []string { return c.hosts.get() }

// LearnManagers adds the cluster's raft members (GetCluster) to the
// addresses the connection may fail over to, after the ones it has. A
// command that waits long (a rollout) calls it first: the addresses it
// started from may name one manager only (a data dir's node.json lists
// the managers its agent heard of when its session opened), and that one
// may be the leader killed during the wait.
func (c *Client) LearnManagers(ctx context.Context) error {
	resp, err := c.Control.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if err != nil {
		return err
	}
	l := c.hosts
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[string]bool{}
	for _, h := range l.hosts {
		seen[h] = true
	}
	added := false
	for _, m := range resp.GetMembers() {
		if a := m.GetAddr(); a != "" && !seen[a] {
			seen[a] = true
			l.hosts = append(l.hosts, a)
			added = true
		}
	}
	if added {
		// pick_first keeps the connected address when it is still listed.
		l.updateLocked()
	}
	return nil
}

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
	l := &hostList{hosts: hosts}
	conn, err := dialHosts(l, credentials.NewTLS(conf), cfg.ReadyWait, cfg.DialOptions...)
	if err != nil {
		return nil, err
	}
	return &Client{Control: shoalv1.NewControlClient(conn), conn: conn, hosts: l}, nil
}

// DialHosts returns a connection over several managers: pick_first moves on
// to the next address when one is down, and unary calls retry UNAVAILABLE
// until their deadline.
func DialHosts(hosts []string, tc credentials.TransportCredentials, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	return dialHosts(&hostList{hosts: hosts}, tc, 0, extra...)
}

// DialHostsReadyWait is DialHosts whose calls stop retrying after
// readyWait while no manager can serve them yet (see Config.ReadyWait).
func DialHostsReadyWait(hosts []string, tc credentials.TransportCredentials, readyWait time.Duration, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	return dialHosts(&hostList{hosts: hosts}, tc, readyWait, extra...)
}

func addresses(hosts []string) []resolver.Address {
	addrs := make([]resolver.Address, len(hosts))
	for i, h := range hosts {
		addrs[i] = resolver.Address{Addr: h}
	}
	return addrs
}

func dialHosts(hosts *hostList, tc credentials.TransportCredentials, readyWait time.Duration, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	r := manual.NewBuilderWithScheme("shoal")
	r.InitialState(resolver.State{Addresses: addresses(hosts.get())})
	hosts.mu.Lock()
	hosts.r = r
	hosts.mu.Unlock()
	dials := newDialLog()
	opts := append([]grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(tc),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"pick_first":{}}]}`),
		grpc.WithContextDialer(dials.dial),
		// gRPC waits 1 s, then up to 120 s, before dialling an address that
		// failed again; a manager restarting or a leader failing over is
		// back within seconds, so try again sooner.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second,
		}, MinConnectTimeout: 20 * time.Second}),
		// Innermost: Control's calls other than lists go over one
		// pipeline stream (pipeline.go), under the retries.
		grpc.WithChainUnaryInterceptor(retryUnavailable(hosts, readyWait, dials), newPipeline(context.Background()).unary),
		grpc.WithChainStreamInterceptor(retryNotReadyStream(hosts, readyWait, dials)),
		// Lists can be large (100,000 tasks are ~23 MB), above gRPC's
		// default 4 MiB receive limit.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxReplyBytes)),
		// Fixed flow-control windows, as the managers' own: with gRPC's
		// dynamic (BDP) window the client answered nearly every reply
		// with a WINDOW_UPDATE and a PING, which the manager read, woke
		// its writer for and acknowledged (a write syscall): a fourth of
		// the leader's socket writes per call at one writer
		// (TestClientSendsNoFlowControlPings).
		grpc.WithStaticStreamWindowSize(window),
		grpc.WithStaticConnWindowSize(window),
	}, extra...)
	return grpc.NewClient(r.Scheme()+":///managers", opts...)
}

// MaxReplyBytes bounds one reply the client accepts.
const MaxReplyBytes = 256 << 20

// window is the client's fixed HTTP/2 flow-control window, per stream and
// per connection: what a manager may send ahead of the client's reads
// (below the 16 MiB gRPC's dynamic window may grow to). A 23 MB list takes
// a dozen round trips of it, a millisecond on a LAN.
const window = 2 << 20

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
	return retryUnavailable(&hostList{hosts: hosts}, 0, nil)
}

// retryUnavailable is RetryUnavailable that also moves off a manager that
// answers ErrNotReady (to the next address, as for a refused connection)
// and gives up after readyWait (> 0) of answers saying no manager can
// serve yet: every address refused its last connection (as dials records
// them) or answered ErrNotReady during this call. Any other answer starts
// that wait again.
//
// hosts is read at each answer: addresses learned during the call
// (LearnManagers) count, for "every address" and in the messages.
func retryUnavailable(hl *hostList, readyWait time.Duration, dials *dialLog) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		start := time.Now()
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
		}
		backoff := 25 * time.Millisecond
		var unready time.Time // since when no manager could serve; zero: one could
		for {
			var p peer.Peer
			err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
			switch {
			case err == nil:
				hl.answered(dials.hostOf(&p))
				return nil
			case errdefs.IsNotReady(err):
				// The next attempt goes to another manager, if there is one.
				hl.notReady(dials.hostOf(&p), notReadyReason(err, &p))
			default:
				hl.answered(dials.hostOf(&p))
				if errdefs.IsUnavailable(err) {
					hl.retrySkipped(dials)
				}
			}
			hosts := hl.get()
			if why := hl.noneReady(err, &p, dials, start); why == "" {
				unready = time.Time{}
			} else if unready.IsZero() {
				unready = time.Now()
			} else if readyWait > 0 && time.Since(unready) >= readyWait {
				return errdefs.ToGRPC(errdefs.NotReadyf("%s", why))
			}
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

// notReadyReason is what a manager's ErrNotReady answer says, naming the
// manager.
func notReadyReason(err error, p *peer.Peer) string {
	at := "a manager"
	if p.Addr != nil {
		at = "manager at " + p.Addr.String()
	}
	msg := status.Convert(err).Message()
	return fmt.Sprintf("%s is not ready: %s", at, strings.TrimPrefix(msg, "manager not ready: "))
}

// dialLog dials the managers and remembers which addresses refused their
// last connection, so that "nothing listens there" is told from an answer
// that may change in a moment, from the error itself rather than its text;
// and which address each connection was dialled for, so that an answer is
// put down to the address it came from (hostOf).
type dialLog struct {
	mu      sync.Mutex // guards refused and remote
	refused map[string]bool
	// remote maps a connection's remote address to the address dialled.
	remote map[string]string
}

func newDialLog() *dialLog {
	return &dialLog{refused: map[string]bool{}, remote: map[string]string{}}
}

func (d *dialLog) dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	d.mu.Lock()
	d.refused[addr] = errors.Is(err, syscall.ECONNREFUSED)
	if err == nil {
		d.remote[c.RemoteAddr().String()] = addr
	}
	d.mu.Unlock()
	return c, err
}

// refusedLast reports whether host refused its last dial (one not
// dialled yet has not).
func (d *dialLog) refusedLast(host string) bool {
	if d == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.refused[host]
}

// allRefused reports whether every one of hosts refused its last dial
// (one not dialled yet has not).
func (d *dialLog) allRefused(hosts []string) bool {
	for _, h := range hosts {
		if !d.refusedLast(h) {
			return false
		}
	}
	return len(hosts) > 0
}

// hostOf is the address dialled for the connection p answered on, or ""
// when not known (a dialer of the caller's own, DialOptions: then the
// remote address itself, which is the host when hosts are IP:port).
func (d *dialLog) hostOf(p *peer.Peer) string {
	if p.Addr == nil {
		return ""
	}
	remote := p.Addr.String()
	if d != nil {
		d.mu.Lock()
		h, ok := d.remote[remote]
		d.mu.Unlock()
		if ok {
			return h
		}
	}
	return remote
}
