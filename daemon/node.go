package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/agent/nullexec"
	"github.com/shoal-dev/shoal/daemon/idlemem"
	"github.com/shoal-dev/shoal/datadir"
	"github.com/shoal-dev/shoal/manager"
	"github.com/shoal-dev/shoal/metrics"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
	"github.com/shoal-dev/shoal/ui"
)

// node is one running node process.
type node struct {
	o     Options
	log   *slog.Logger
	certs *trust.CertStore
	boot  *manager.Bootstrap
	// bootstrapped is closed once an init's cluster object is committed.
	bootstrapped chan struct{}

	mu sync.Mutex // guards st, mgrStop, mgrDone
	st *datadir.Node
	// mgrStop/mgrDone control the running manager (nil when none).
	mgrStop context.CancelFunc
	mgrDone chan error
	// mgrStore is the running manager's store (nil when none), whose
	// caches an idle release drops (forgetCaches).
	mgrStore atomic.Pointer[raftstore.Store]

	roleCh  chan shoalv1.NodeRole // desired roles seen by the agent
	renewCh chan struct{}         // renew now (a shorter cluster lifetime; renew.go)
	errCh   chan error            // fatal errors from the manager
	gossip  *nodeGossip           // this node's gossip membership (gossip.go)
	metrics *nodeMetrics          // the node's registry (metrics.go)
}

func runNode(ctx context.Context, o Options, st *datadir.Node, withBootstrap bool) error {
	creds, err := trust.LoadCreds(datadir.Dir(o.DataDir).Certs(), "node")
	if err != nil {
		return fmt.Errorf("loading node credentials: %w", err)
	}
	certs, err := trust.NewCertStore(creds)
	if err != nil {
		return err
	}
	n := &node{o: o, log: o.Logger.With("node_id", st.NodeID), certs: certs, st: st,
		metrics: newNodeMetrics(), bootstrapped: make(chan struct{}), roleCh: make(chan shoalv1.NodeRole, 1), renewCh: make(chan struct{}, 1), errCh: make(chan error, 1)}
	if withBootstrap {
		if n.boot, err = manager.LoadBootstrap(datadir.Dir(o.DataDir).BootstrapFile()); err != nil {
			return err
		}
	}
	// Gossip first: the manager's dispatcher consults it and the agent's
	// hello reports its address.
	n.gossip = startGossip(n.log, st.NodeID, hostOf(st.AdvertiseAddr), o.GossipPort)
	defer n.gossip.close()
	if st.Role == string(trust.RoleManager) {
		if err := n.startManager(ctx); err != nil {
			return err
		}
	}
	// The manager's context is not ctx (see startManager): every return
	// from here on stops it.
	// st is n.st, which the manager's goroutines read (n.state) by now.
	n.mu.Lock()
	changed, err := applyAgentOptions(st, o)
	if err == nil && changed {
		err = st.Save(o.DataDir)
	}
	n.mu.Unlock()
	if err != nil {
		n.stopManager()
		return err
	}
	var side *agentSide
	if !o.NoExecutor {
		if side, err = n.buildAgentSide(ctx); err != nil {
			n.stopManager()
			return err
		}
		defer side.close()
	}
	if n.boot != nil {
		go n.announce(ctx)
	} else if o.dev {
		n.printDevHint()
	}
	acfg := agent.Config{
		NodeID: st.NodeID, Addr: st.AdvertiseAddr, Managers: st.Managers, Creds: trust.ClientCreds(certs),
		Description: describe(st.NodeName), OnManagers: n.saveManagers, OnNode: n.onNode, Logger: o.Logger,
		GossipAddr: n.gossip.Addr(), Gossip: n.gossip,
	}
	g, gctx := errgroup.WithContext(ctx)
	if side != nil {
		acfg.Executor = side.ex
		n.metrics.addAgent(side)
		acfg.Networks = side.networks()
		acfg.AgentAddr = st.AgentAddr
		g.Go(func() error { return side.ex.Run(gctx) })
		g.Go(func() error { return n.serveAgentAPI(gctx, side) })
		g.Go(func() error { return side.collectImages(gctx, n.log) })
	} else {
		// --no-executor: assignments are taken and reported, nothing runs.
		acfg.Executor = nullexec.New()
	}
	ag := agent.New(acfg)
	g.Go(func() error {
		err := ag.Run(gctx)
		if errors.Is(err, agent.ErrRemoved) && side != nil {
			// Removed from the cluster: nobody will stop this node's
			// containers, and their replacements run elsewhere.
			rctx, cancel := context.WithTimeout(gctx, 60*time.Second)
			if rerr := side.ex.RemoveAll(rctx); rerr != nil {
				n.log.Warn("stopping this node's tasks after its removal", "err", rerr)
			}
			// Nor keep the cluster's networks: overlay devices whose
			// FDB entries point at its hosts, bridges, their rules.
			if rerr := side.clearNetworks(rctx); rerr != nil {
				n.log.Warn("removing this node's networks after its removal", "err", rerr)
			}
			cancel()
		}
		return err
	})
	g.Go(func() error { return n.roleLoop(gctx) })
	g.Go(func() error { return n.serveMetrics(gctx) })
	g.Go(func() error { idlemem.Run(gctx, idlemem.Every, n.forgetCaches); return nil })
	g.Go(func() error {
		select {
		case err := <-n.errCh:
			return err
		case <-gctx.Done():
			return nil
		}
	})
	err = g.Wait()
	if merr := n.stopManager(); merr != nil && err == nil {
		err = merr
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// announce waits for the bootstrap to commit, drops the on-disk copy and
// tells the operator how to grow the cluster.
func (n *node) announce(ctx context.Context) {
	select {
	case <-n.bootstrapped:
	case <-ctx.Done():
		return
	}
	if err := os.Remove(datadir.Dir(n.o.DataDir).BootstrapFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		n.log.Warn("removing bootstrap file", "err", err)
	}
	c, st := n.boot.Cluster, n.state()
	if n.o.dev {
		n.printDevHint()
		return
	}
	admin := datadir.Dir(n.o.DataDir).Admin()
	fmt.Fprintf(n.o.Out, `Cluster %s initialised. This node (%s) is its first manager, at %s.

To add a worker, run on it:
    shoal join --data-dir /var/lib/shoal --advertise-addr <its IP> --token %s %s

To add a manager, run on it:
    shoal join --data-dir /var/lib/shoal --advertise-addr <its IP> --token %s %s

Admin credentials are in %s. Use them with:
    shoal --data-dir %s node ls
    shoal --host %s --cert-dir %s node ls
`, c.GetMeta().GetId(), st.NodeID, st.AdvertiseAddr, c.GetTokens().GetWorker(), st.AdvertiseAddr,
		c.GetTokens().GetManager(), st.AdvertiseAddr, admin, n.o.DataDir, st.AdvertiseAddr, admin)
}

func (n *node) printDevHint() {
	exe, err := os.Executable()
	if err != nil {
		exe = "shoal"
	}
	fmt.Fprint(n.o.Out, devHintText(n.o.DataDir, exe, n.state().BridgeSubnet))
}

func (n *node) state() datadir.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return *n.st
}

func (n *node) saveManagers(ms []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if equalStrings(n.st.Managers, ms) {
		return
	}
	n.st.Managers = append([]string(nil), ms...)
	if err := n.st.Save(n.o.DataDir); err != nil {
		n.log.Warn("saving the manager list", "err", err)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// startManager runs the manager components in the background.
func (n *node) startManager(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mgrStop != nil {
		return nil
	}
	// Not cancelled with ctx: runNode stops the manager (stopManager) only
	// after the agent has said goodbye, which the leader may be this node.
	haddr, err := httpAddr(n.o.HTTPAddr, n.st.AdvertiseAddr)
	if err != nil {
		return err
	}
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	// The audit log (execs, with who ran them) is a file of the node's data
	// dir, open while the manager runs.
	audit, auditFile, err := openAuditLog(n.o.DataDir)
	if err != nil {
		cancel()
		return fmt.Errorf("manager: audit log: %w", err)
	}
	m := manager.New(manager.Config{
		NodeID: n.st.NodeID, DataDir: n.o.DataDir, ListenAddr: n.st.ListenAddr, AdvertiseAddr: n.st.AdvertiseAddr,
		Certs: n.certs, Bootstrap: n.boot, Logger: n.o.Logger, Gossip: n.gossip, Audit: audit,
		Metrics: n.metrics.mgr, MetricsHandler: metrics.Handler(n.metrics.reg),
		HTTPAddr: haddr, HTTPCORSOrigins: n.o.HTTPCORSOrigins, HTTPUI: ui.Handler(),
	})
	done := make(chan error, 1)
	go func() {
		err := m.Run(mctx)
		auditFile.Close()
		done <- err
		if err != nil && mctx.Err() == nil {
			select {
			case n.errCh <- fmt.Errorf("manager: %w", err):
			default:
			}
		}
	}()
	n.mgrStop, n.mgrDone = cancel, done
	select {
	case <-m.Ready():
	case err := <-done:
		cancel()
		n.mgrStop, n.mgrDone = nil, nil
		return fmt.Errorf("manager: %w", err)
	}
	go func() {
		select {
		case <-m.Bootstrapped():
			select {
			case <-n.bootstrapped:
			default:
				close(n.bootstrapped)
			}
		case <-mctx.Done():
		}
	}()
	n.mgrStore.Store(m.Store())
	// Ask to be a raft voter (a no-op for a member); needed after a manager
	// join or a promotion, harmless otherwise.
	go n.joinRaft(mctx)
	go n.watchCertExpiry(mctx, m.Store())
	return nil
}

func (n *node) stopManager() error {
	n.mu.Lock()
	stop, done := n.mgrStop, n.mgrDone
	n.mgrStop, n.mgrDone = nil, nil
	n.mu.Unlock()
	if stop == nil {
		return nil
	}
	n.mgrStore.Store(nil)
	stop()
	return <-done
}

// forgetCaches drops what the running manager's store caches only for
// speed (idlemem calls it when the node is idle).
func (n *node) forgetCaches() {
	if s := n.mgrStore.Load(); s != nil {
		s.ForgetCaches()
	}
}

// joinRaft calls RaftMembership.JoinRaft through any manager until it works.
// A refusal (FailedPrecondition: this binary reads an older raft store
// format than the leader's log may hold) is logged as a warning once per
// distinct reason, as it needs the operator; the calls go on, since another
// leader (of this node's release, during a rolling upgrade) may accept.
func (n *node) joinRaft(ctx context.Context) {
	backoff := 100 * time.Millisecond
	var refused string
	for attempt := 0; ctx.Err() == nil; attempt++ {
		st := n.state()
		targets := append([]string{}, st.Managers...)
		targets = append(targets, st.AdvertiseAddr)
		addr := targets[attempt%len(targets)]
		err := n.callJoinRaft(ctx, addr)
		if err == nil {
			n.log.Info("raft voter", "via", addr)
			return
		}
		if msg := status.Convert(err).Message(); status.Code(err) == codes.FailedPrecondition && msg != refused {
			refused = msg
			n.log.Warn("the leader refuses this manager in raft", "via", addr, "err", msg)
		} else {
			n.log.Debug("join raft", "via", addr, "err", err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(backoff*2, 3*time.Second)
	}
}

func (n *node) callJoinRaft(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(trust.ClientCreds(n.certs)))
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err = shoalv1.NewRaftMembershipClient(conn).JoinRaft(cctx, &shoalv1.JoinRaftRequest{
		Addr: n.state().AdvertiseAddr,
		// This binary's own format, whatever the certificate was issued for.
		StoreFormat: raftstore.StoreFormat,
	})
	return err
}

// onNode is called by the agent with this node's object; a desired role
// that differs from the certificate's starts a role change.
func (n *node) onNode(nd *shoalv1.Node) {
	want := nd.GetSpec().GetDesiredRole()
	if want == shoalv1.NodeRole_NODE_ROLE_UNSPECIFIED || trust.RoleFromProto(want) == n.certs.Identity().Role {
		return
	}
	select {
	case n.roleCh <- want:
	default:
	}
}

// roleLoop owns the node's certificate: it renews it for a new role, and
// when it is due (renew.go), and starts or stops the manager to match. A
// renewal that fails is retried with back-off, whatever asked for it.
func (n *node) roleLoop(ctx context.Context) error {
	retry := time.Duration(0)
	for {
		wait := time.Until(n.renewDue())
		if retry > 0 {
			wait = min(wait, retry)
		}
		timer := time.NewTimer(max(wait, 0))
		why := "due"
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case want := <-n.roleCh:
			timer.Stop()
			if trust.RoleFromProto(want) == n.certs.Identity().Role {
				continue
			}
			why = "role change"
		case <-n.renewCh:
			timer.Stop()
			why = "shorter cluster lifetime"
		case <-timer.C:
		}
		if err := n.renewCert(ctx); err != nil {
			retry = min(max(2*retry, renewRetryMin), renewRetryMax)
			n.log.Warn("renewing the node certificate failed; retrying", "reason", why, "err", err, "retry_in", retry)
			continue
		}
		retry = 0
	}
}
