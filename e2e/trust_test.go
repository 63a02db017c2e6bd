package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/e2e/harness"
	"github.com/shoal-dev/shoal/logstream"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// refusalPoll is how often the trust tests probe while waiting for a
// refusal; the time from the change to the first refusal is logged (a
// figure, not an assertion).
const refusalPoll = 50 * time.Millisecond

// copyNodeCreds copies h's current node credentials (a thief's copy) into
// dir as a CLI cert dir (ca.crt, admin.crt, admin.key) and returns them.
func copyNodeCreds(t *testing.T, h *harness.Host, dir string) *trust.Creds {
	t.Helper()
	creds, err := trust.LoadCreds(h.NodeCertDir(), "node")
	if err != nil {
		t.Fatalf("%s's node credentials: %v", h, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := trust.SaveCreds(dir, "admin", creds); err != nil {
		t.Fatal(err)
	}
	return creds
}

// prober presents one set of credentials, from inside host from, to the
// manager API, the raft port and the agent API of other nodes.
type prober struct {
	t     *testing.T
	from  *harness.Host
	creds *trust.Creds
	id    trust.Identity
}

func newProber(t *testing.T, from *harness.Host, creds *trust.Creds) *prober {
	t.Helper()
	id, err := creds.Identity()
	if err != nil {
		t.Fatal(err)
	}
	return &prober{t: t, from: from, creds: creds, id: id}
}

func (p *prober) dialOpts(base *tls.Config) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(base)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return p.from.DialContext(ctx, "tcp", addr)
		}),
	}
}

// control calls Control.GetNode(ref) on the manager at addr, with the
// shoal-forwarded-for header set to forgedFor when not empty.
func (p *prober) control(addr, ref, forgedFor string) error {
	conf, err := trust.ClientTLSConfigFromCreds(p.creds, trust.ManagerServerName)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(addr, p.dialOpts(conf)...)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := attempt()
	defer cancel()
	if forgedFor != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "shoal-forwarded-for", forgedFor)
	}
	_, err = shoalv1.NewControlClient(conn).GetNode(ctx, &shoalv1.GetNodeRequest{Ref: ref})
	return err
}

// listNodes calls Control.ListNodes (managers and admins only).
func (p *prober) listNodes(addr string) error {
	conf, err := trust.ClientTLSConfigFromCreds(p.creds, trust.ManagerServerName)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(addr, p.dialOpts(conf)...)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := attempt()
	defer cancel()
	_, err = shoalv1.NewControlClient(conn).ListNodes(ctx, &shoalv1.ListNodesRequest{})
	return err
}

// agent calls AgentAPI.ListImages on node nodeID's agent at addr.
func (p *prober) agent(addr, nodeID string) error {
	base, err := trust.ClientTLSConfigFromCreds(p.creds, trust.ManagerServerName)
	if err != nil {
		return err
	}
	conf, err := logstream.ClientTLSConfig(base, nodeID)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(addr, p.dialOpts(conf)...)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := attempt()
	defer cancel()
	_, err = shoalv1.NewAgentAPIClient(conn).ListImages(ctx, &shoalv1.ListImagesRequest{})
	return err
}

// raft sends an AppendEntries with term 0 to the manager at addr over the
// raft ALPN: harmless (any server answers a stale term with its own), so
// an answer means the connection was admitted, an error that it was
// refused.
func (p *prober) raft(addr string) error {
	store, err := trust.NewCertStore(p.creds)
	if err != nil {
		return err
	}
	stream := &nsStream{from: p.from, conf: store.ClientTLSConfig(trust.ManagerServerName, trust.ALPNRaft), closed: make(chan struct{})}
	trans := raft.NewNetworkTransport(stream, 1, attemptLimit, io.Discard)
	defer trans.Close()
	var resp raft.AppendEntriesResponse
	return trans.AppendEntries(raft.ServerID("probe"), raft.ServerAddress(addr), &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(p.id.NodeID), Addr: []byte(p.from.Addr())},
		Term:      0, Leader: []byte(p.from.Addr()),
	}, &resp)
}

// nsStream is a raft StreamLayer that only dials, from inside a host.
type nsStream struct {
	from   *harness.Host
	conf   *tls.Config
	closed chan struct{}
}

func (s *nsStream) Accept() (net.Conn, error) { <-s.closed; return nil, net.ErrClosed }
func (s *nsStream) Close() error {
	select {
	case <-s.closed:
	default:
		close(s.closed)
	}
	return nil
}
func (s *nsStream) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (s *nsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	raw, err := s.from.DialContext(ctx, "tcp", string(addr))
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, s.conf.Clone())
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// refusedCode reports whether err is a refusal by authorization.
func refusedCode(err error) bool {
	c := status.Code(err)
	return c == codes.PermissionDenied || c == codes.Unauthenticated
}

// awaitRefusals probes until every check is refused and logs how long
// after since each first was. A check returns nil while still admitted,
// errRefused-wrapped once refused, any other error for trouble (retried).
func awaitRefusals(t *testing.T, since time.Time, checks map[string]func() error) {
	t.Helper()
	refusedAt := map[string]time.Duration{}
	last := map[string]error{}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	err := harness.Poll(ctx, refusalPoll, func() error {
		for name, check := range checks {
			if _, done := refusedAt[name]; done {
				continue
			}
			err := check()
			last[name] = err
			if errors.Is(err, errRefused) {
				refusedAt[name] = time.Since(since)
			}
		}
		if len(refusedAt) < len(checks) {
			return fmt.Errorf("refused so far: %v; last answers: %v", refusedAt, last)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range refusedAt {
		t.Logf("refused %v after the change: %s (%v)", d.Round(time.Millisecond), name, last[name])
	}
}

var errRefused = errors.New("refused")

// refusal maps an RPC error to errRefused (authorization), nil (admitted)
// or itself.
func refusal(err error) error {
	switch {
	case err == nil:
		return nil
	case refusedCode(err):
		return fmt.Errorf("%w: %v", errRefused, err)
	}
	return err
}

// raftRefusal: a raft probe has no status code; any error after a
// successful round before is the connection being refused.
func raftRefusal(err error) error {
	if err != nil {
		return fmt.Errorf("%w: %v", errRefused, err)
	}
	return nil
}

// TestDemotedAndRemovedCertificatesRefused: a demoted manager's
// certificate is refused on the control API, raft and the agent API even
// though the node (down) never renewed it; a
// forged shoal-forwarded-for is refused from a worker and from the demoted
// node; a removed worker's certificate is refused.
func TestDemotedAndRemovedCertificatesRefused(t *testing.T) {
	c := newCluster(t, 3, 1)
	h1, h2, h3, w := c.hosts[0], c.hosts[1], c.hosts[2], c.workers[0]
	nodes := c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		for _, h := range c.hosts {
			if findNode(nodes, c.id(h)).GetStatus().GetAgentAddr() == "" {
				return fmt.Errorf("%s has no agent address yet", h)
			}
		}
		return nil
	})
	agentOf := func(h *harness.Host) (addr, id string) {
		return findNode(nodes, c.id(h)).GetStatus().GetAgentAddr(), c.id(h)
	}
	clusterID := ""
	if st, err := h1.State(); err == nil {
		clusterID = st.ClusterID
	}

	old := newProber(t, h3, copyNodeCreds(t, h3, filepath.Join(h3.Dir, "old-manager-certs")))
	worker := newProber(t, w, copyNodeCreds(t, w, filepath.Join(w.Dir, "worker-certs")))
	forgedManager := c.id(h1) + "/manager/" + clusterID

	// While h3 is a manager its certificate opens everything, and it may
	// forward; the worker may read its own node but not forward.
	a1addr, a1id := agentOf(h1)
	harness.Eventually(t, settleTimeout, poll, func() error {
		if err := old.listNodes(h1.Addr()); err != nil {
			return fmt.Errorf("control: %w", err)
		}
		if err := old.raft(h1.Addr()); err != nil {
			return fmt.Errorf("raft: %w", err)
		}
		if err := old.agent(a1addr, a1id); err != nil {
			return fmt.Errorf("agent API: %w", err)
		}
		if err := old.control(h1.Addr(), c.id(w), forgedManager); err != nil {
			return fmt.Errorf("forwarding as a manager: %w", err)
		}
		return worker.control(h2.Addr(), c.id(w), "")
	})
	if err := worker.control(h2.Addr(), c.id(w), forgedManager); !refusedCode(err) {
		t.Fatalf("a worker forging shoal-forwarded-for: %v, want PERMISSION_DENIED", err)
	} else {
		t.Logf("worker forging shoal-forwarded-for refused: %v", err)
	}

	// Demote h3 while it is down: a demoted node that never fetches its
	// worker certificate (a stolen copy, a hostile node) must lose the
	// manager's powers all the same.
	if err := h3.Crash(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := attempt()
	_, err := c.admin(h1).Run(ctx, "node", "demote", c.id(h3))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	demoted := time.Now()
	a2addr, a2id := agentOf(h2)
	awaitRefusals(t, demoted, map[string]func() error{
		"control API on h1":              func() error { return refusal(old.listNodes(h1.Addr())) },
		"control API on h2":              func() error { return refusal(old.listNodes(h2.Addr())) },
		"raft on h1":                     func() error { return raftRefusal(old.raft(h1.Addr())) },
		"raft on h2":                     func() error { return raftRefusal(old.raft(h2.Addr())) },
		"agent API of h1":                func() error { return refusal(old.agent(a1addr, a1id)) },
		"agent API of h2":                func() error { return refusal(old.agent(a2addr, a2id)) },
		"forwarded-for from the demoted": func() error { return refusal(old.control(h2.Addr(), c.id(w), forgedManager)) },
	})
	// Back up, h3 renews as a worker; the cluster carries on with two
	// managers.
	h3.Daemon(t)
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error { return c.nodeReady(nodes, h3, shoalv1.NodeRole_NODE_ROLE_WORKER) })

	// node rm of the worker: its certificate is refused, as removed.
	ctx, cancel = attempt()
	_, err = c.admin(h1).Run(ctx, "node", "rm", "--force", c.id(w))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	mentionsRemovedNode := regexp.MustCompile(`removed`)
	awaitRefusals(t, removed, map[string]func() error{
		"removed worker on h1": func() error {
			err := worker.control(h1.Addr(), c.id(w), "")
			if refusedCode(err) && !mentionsRemovedNode.MatchString(err.Error()) {
				return fmt.Errorf("refused without saying the node was removed: %v", err)
			}
			return refusal(err)
		},
		"removed worker on h2": func() error { return refusal(worker.control(h2.Addr(), c.id(w), "")) },
	})
}

// TestRevokedAdminCertificateRefused: `admin-cert create` makes a second
// admin credential that works on every manager and agent API; after
// `admin-cert revoke` every one of them refuses it. Revoking the credential the CLI runs with, or
// the last usable one, needs --force.
func TestRevokedAdminCertificateRefused(t *testing.T) {
	c := newCluster(t, 3, 0)
	h1 := c.hosts[0]
	opsDir := filepath.Join(h1.Dir, "ops-admin")
	run := func(args ...string) (string, error) {
		ctx, cancel := attempt()
		defer cancel()
		return c.admin(h1).Run(ctx, args...)
	}
	if out, err := run("admin-cert", "create", "ops", "--ttl", "1h", "--out", opsDir); err != nil {
		t.Fatalf("admin-cert create: %v\n%s", err, out)
	}
	out, err := run("admin-cert", "ls")
	if err != nil || !regexp.MustCompile(`(?m)^admin\s`).MatchString(out) || !regexp.MustCompile(`(?m)^ops\s`).MatchString(out) {
		t.Fatalf("admin-cert ls lists neither init's certificate nor ops: %v\n%s", err, out)
	}
	// Revoking the credential the command runs with needs --force.
	if _, err := run("admin-cert", "revoke", "admin"); err == nil || !regexp.MustCompile(`--force`).MatchString(err.Error()) {
		t.Fatalf("revoking one's own admin certificate without --force: %v", err)
	}
	ops, err := trust.LoadCreds(opsDir, "admin")
	if err != nil {
		t.Fatal(err)
	}
	p := newProber(t, h1, ops)
	agents := map[*harness.Host]string{}
	c.waitNodes(h1, func(nodes []*shoalv1.Node) error {
		for _, h := range c.hosts {
			if agents[h] = findNode(nodes, c.id(h)).GetStatus().GetAgentAddr(); agents[h] == "" {
				return fmt.Errorf("%s has no agent address yet", h)
			}
		}
		return nil
	})
	harness.Eventually(t, settleTimeout, poll, func() error {
		for _, h := range c.hosts {
			if err := p.listNodes(h.Addr()); err != nil {
				return fmt.Errorf("ops on %s: %w", h, err)
			}
			if err := p.agent(agents[h], c.id(h)); err != nil {
				return fmt.Errorf("ops on %s's agent API: %w", h, err)
			}
		}
		return nil
	})
	if _, err := run("admin-cert", "revoke", "ops"); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	checks := map[string]func() error{}
	for _, h := range c.hosts {
		checks["control API on "+h.Name] = func() error { return refusal(p.listNodes(h.Addr())) }
		checks["agent API of "+h.Name] = func() error { return refusal(p.agent(agents[h], c.id(h))) }
	}
	awaitRefusals(t, revoked, checks)
	// The CLI with the revoked credentials says why.
	ctx, cancel := attempt()
	_, err = h1.Remote(opsDir, h1.Addr()).Run(ctx, "node", "ls")
	cancel()
	if err == nil || !regexp.MustCompile(`revoked`).MatchString(err.Error()) {
		t.Fatalf("node ls with a revoked admin certificate: %v, want a refusal saying it was revoked", err)
	}
	// init's admin certificate still works.
	if _, err := run("node", "ls"); err != nil {
		t.Fatal(err)
	}
}
