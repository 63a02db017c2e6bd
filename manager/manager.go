package manager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/shoal-dev/shoal/errdefs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/shoal-dev/shoal/datadir"
	"github.com/shoal-dev/shoal/manager/allocator"
	"github.com/shoal-dev/shoal/manager/controlapi"
	"github.com/shoal-dev/shoal/manager/dispatcher"
	"github.com/shoal-dev/shoal/manager/forward"
	"github.com/shoal-dev/shoal/manager/gossipkeys"
	"github.com/shoal-dev/shoal/manager/httpapi"
	"github.com/shoal-dev/shoal/manager/logbroker"
	"github.com/shoal-dev/shoal/manager/membership"
	"github.com/shoal-dev/shoal/manager/nodeca"
	"github.com/shoal-dev/shoal/manager/opsapi"
	"github.com/shoal-dev/shoal/manager/orchestrator"
	"github.com/shoal-dev/shoal/manager/pipeline"
	"github.com/shoal-dev/shoal/manager/transport"
	"github.com/shoal-dev/shoal/metrics"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// Config configures a manager.
type Config struct {
	NodeID        string
	DataDir       string // the node's data dir; raft lives in DataDir/raft
	ListenAddr    string // host:port to listen on
	AdvertiseAddr string // host:port others dial
	Certs         *trust.CertStore
	// Bootstrap is set only by `shoal init`: start a one-voter raft group and
	// create the cluster and first node objects.
	Bootstrap *Bootstrap
	Logger    *slog.Logger
	// Raft timing; zero values take raftstore's defaults.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
	// Gossip is the node's gossip view, which the dispatcher consults
	// while this manager leads (nil: heartbeats alone).
	Gossip dispatcher.GossipView
	// Audit receives the audit records (execs: opsapi); nil: Logger.
	Audit *slog.Logger
	// Metrics is the node's manager metrics, fed by the store, dispatcher
	// and orchestrator while this manager runs (nil: none).
	Metrics *metrics.Manager
	// MetricsHandler serves the node's registry; the HTTPS API serves it
	// at /metrics (httpapi.Config.Metrics).
	MetricsHandler http.Handler
	// HTTPAddr is where the HTTPS JSON API listens (host:port); empty: no
	// HTTP server.
	HTTPAddr string
	// HTTPCORSOrigins are the origins allowed cross-origin requests.
	HTTPCORSOrigins []string
	// HTTPUI serves "/" on the HTTPS server (nil: 404); "/metrics" is
	// MetricsHandler.
	HTTPUI http.Handler
}

// Manager is a running manager.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	store *raftstore.Store

	ready     chan struct{} // closed once the store is open and serving
	boot      chan struct{} // closed once the cluster object exists
	bootOnce  sync.Once
	readyOnce sync.Once
}

// New returns a manager; Run starts it.
func New(cfg Config) *Manager {
	return &Manager{cfg: cfg, log: cfg.Logger.With("component", "manager"),
		ready: make(chan struct{}), boot: make(chan struct{})}
}

// Ready is closed once the manager serves its API.
// MaxTokenStreams bounds the streams one API token holds open on one
// manager (trust.Authorizer.MaxTokenStreams).
const MaxTokenStreams = 64

// maxReplyBytes bounds a reply the forwarder relays from the leader: a
// list of everything at the cluster's limits (max_replicas tasks with
// their specs) fits with room.
const maxReplyBytes = 256 << 20

func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Bootstrapped is closed once the cluster object is committed.
func (m *Manager) Bootstrapped() <-chan struct{} { return m.boot }

// Store returns the raft store (valid after Ready).
func (m *Manager) Store() *raftstore.Store { return m.store }

// Run serves until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	cfg := m.cfg
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("manager listen on %s: %w", cfg.ListenAddr, err)
	}
	mux := transport.NewMux(ln, cfg.Certs.ServerTLSConfig(), cfg.Logger)
	adv, err := net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr)
	if err != nil {
		ln.Close()
		return fmt.Errorf("advertise address %q: %w", cfg.AdvertiseAddr, err)
	}
	stream := transport.NewRaftStreamLayer(mux.Raft(), adv, func() *tls.Config {
		return cfg.Certs.ClientTLSConfig(trust.ManagerServerName, "shoal-raft")
	})
	// The transport logs through slog like the rest of raft; only its
	// errors, as it is chatty about every connection otherwise.
	netLog := raftstore.NewHCLog(cfg.Logger.With("component", "raft-net"), "raft-net")
	netLog.SetLevel(hclog.Error)
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 8, Timeout: 10 * time.Second,
		Logger: netLog,
	})
	raftDir := datadir.Dir(cfg.DataDir).Raft()
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		ln.Close()
		return err
	}
	store, err := raftstore.Open(raftstore.Config{
		NodeID: cfg.NodeID, Addr: cfg.AdvertiseAddr, DataDir: raftDir, Transport: trans,
		Bootstrap: cfg.Bootstrap != nil, Logger: cfg.Logger,
		HeartbeatTimeout: cfg.HeartbeatTimeout, ElectionTimeout: cfg.ElectionTimeout, LeaderLeaseTimeout: cfg.LeaderLeaseTimeout,
		OnCommit: cfg.Metrics.ObserveCommit, OnApply: cfg.Metrics.ObserveApply,
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("opening the raft store: %w", err)
	}
	m.store = store
	cfg.Metrics.SetStore(metrics.RaftStore(store), filepath.Join(raftDir, "raft.db"))
	defer cfg.Metrics.SetStore(nil, "")

	// RenewNodeCertificate is served where it arrives (a follower answers
	// UNAVAILABLE, the node tries the next manager): it issues for the
	// direct peer's node id, never for one named in forwarding metadata.
	fwd := forward.New(store, func(addr string) (*grpc.ClientConn, error) {
		// A forwarded reply may be a whole list (100,000 tasks are ~23 MB):
		// above gRPC's default 4 MiB receive limit.
		return grpc.NewClient(addr, append(forwardDialOptions(), grpc.WithTransportCredentials(trust.ClientCreds(cfg.Certs)))...)
	}, cfg.Logger, "/shoal.v1.NodeCA/GetRootCA", "/shoal.v1.Dispatcher/Session", shoalv1.NodeCA_RenewNodeCertificate_FullMethodName)
	defer fwd.Close()
	// The store part of raft's re-check on each read, and the admin
	// certificates' index that every admin API call reads, are reused
	// until a node or the cluster object changes (the generation is
	// bumped inside the store's apply).
	nodesGen := transport.WatchStoreGeneration(ctx, store, cfg.Logger)
	admins := transport.CachedAdmins(storeAdmins(store), nodesGen)
	check := trust.StoreCheckIndexed(storeNodes(store), admins)
	ongoing := trust.StoreCheckOngoingIndexed(storeNodes(store), admins)
	authz := &trust.Authorizer{Policy: trust.DefaultPolicy(), ClusterID: cfg.Certs.Identity().ClusterID,
		Current: func(_ context.Context, id trust.Identity) (trust.Role, error) { return check(id) },
		// Streams (sessions, watches, followed logs) are asked about again
		// every second: a demoted, removed or revoked caller loses them.
		Recheck: time.Second,
		Ongoing: func(_ context.Context, id trust.Identity) (trust.Role, error) { return ongoing(id) },
		// One store read a second for every stream open (5,000 sessions).
		OngoingView: func() func(trust.Identity) (trust.Role, error) {
			view := store.View()
			return trust.StoreCheckOngoing(viewNodes(view), viewAdmins(view))
		},
		// API tokens are looked up in this manager's store on every call.
		Tokens: func(_ context.Context, tok string) (trust.Identity, error) { return StoreTokenCheck(store, tok) },
		// A dashboard holds a few streams; a leaked token may not hold
		// thousands.
		MaxTokenStreams: MaxTokenStreams}
	raftConf := func() (raft.Configuration, error) {
		f := store.Raft().GetConfiguration()
		return f.Configuration(), f.Error()
	}
	// Raft peers are checked again whenever bytes arrive.
	mux.AdmitRaft(transport.RaftAdmission(raftConf, check), transport.RaftAdmission(raftConf, transport.CachedCheck(trust.ConnectionCheck(storeNodes(store)), nodesGen)))
	unary := []grpc.UnaryServerInterceptor{errdefs.UnaryServerInterceptor(), authz.Unary(), fwd.Unary()}
	srv := grpc.NewServer(append([]grpc.ServerOption{
		grpc.Creds(transport.ServerCreds()),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor(), authz.Stream(), fwd.Stream()),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 2 * time.Second, PermitWithoutStream: true}),
	}, tuningOptions()...)...,
	)
	disp := dispatcher.New(dispatcher.Config{Store: store, Logger: cfg.Logger, Managers: m.managers, Gossip: cfg.Gossip, Metrics: cfg.Metrics})
	member := membership.New(store, cfg.Logger)
	// The HTTP gateway calls the API services' unary methods directly,
	// through the same interceptors (httpapi.Direct).
	direct := &httpapi.Direct{Unary: unary}
	api := httpapi.Tee{srv, direct}
	// Control's unary calls may also come over one client's pipeline
	// stream, each through the same interceptors (manager/pipeline).
	pipe := &pipeline.Server{Unary: unary}
	shoalv1.RegisterControlServer(httpapi.Tee{srv, direct, pipe}, controlapi.New(store, cfg.Logger))
	shoalv1.RegisterPipelineServer(srv, pipe)
	shoalv1.RegisterDispatcherServer(srv, disp)
	shoalv1.RegisterNodeCAServer(srv, nodeca.New(store, cfg.Logger))
	shoalv1.RegisterRaftMembershipServer(srv, member)
	// Served by every manager from its own store (not forwarded).
	shoalv1.RegisterLogsServer(api, logbroker.New(logbroker.Config{Store: store, Certs: cfg.Certs, Logger: cfg.Logger}))
	shoalv1.RegisterOpsServer(api, opsapi.New(opsapi.Config{Store: store, Certs: cfg.Certs, Logger: cfg.Logger, Audit: cfg.Audit}))

	// The HTTP gateway's streams reach this same gRPC server in memory, its
	// unary calls go through direct's copy of the same interceptors: every
	// HTTP call passes the authorizer and the forwarder like a gRPC one.
	inproc := httpapi.NewInProcessListener()
	var hs *httpapi.Server
	if cfg.HTTPAddr != "" {
		hs, err = httpapi.New(ctx, httpapi.Config{Addr: cfg.HTTPAddr, Certs: cfg.Certs, GRPC: inproc, Direct: direct,
			CORSOrigins: cfg.HTTPCORSOrigins, UI: cfg.HTTPUI, Metrics: cfg.MetricsHandler, Logger: cfg.Logger,
			MetricsCurrent: func(_ context.Context, id trust.Identity) (trust.Role, error) { return check(id) }})
		if err != nil {
			store.Close()
			trans.Close()
			ln.Close()
			return fmt.Errorf("http api: %w", err)
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return mux.Serve(gctx) })
	g.Go(func() error {
		if err := srv.Serve(mux.GRPC()); err != nil && !errors.Is(err, grpc.ErrServerStopped) && gctx.Err() == nil {
			return fmt.Errorf("grpc serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := srv.Serve(inproc); err != nil && !errors.Is(err, grpc.ErrServerStopped) && gctx.Err() == nil {
			return fmt.Errorf("grpc serve (in-process): %w", err)
		}
		return nil
	})
	if hs != nil {
		g.Go(func() error { return hs.Run(gctx) })
	}
	g.Go(func() error { return m.leaderLoop(gctx, disp, member) })
	g.Go(func() error { return redialOnRenewal(gctx, cfg.Certs, fwd) })
	g.Go(func() error {
		<-gctx.Done()
		// Raft first: a manager that is stopping must not start an
		// election while the rest of it winds down (its peers may be
		// stopping too, and a vote request to one that is gone is an
		// ERROR in raft's log). Close is idempotent; the store is closed
		// again below, and the raft port after that.
		store.Close()
		srv.Stop()
		mux.Close()
		return nil
	})
	m.readyOnce.Do(func() { close(m.ready) })
	m.log.Info("manager serving", "listen", cfg.ListenAddr, "advertise", cfg.AdvertiseAddr, "node_id", cfg.NodeID)
	err = g.Wait()
	if cerr := store.Close(); cerr != nil && err == nil {
		err = cerr
	}
	// raft does not close its transport; the stream layer's Accept waits
	// for this (see transport.RaftStreamLayer.Accept).
	trans.Close()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// StoreTokenCheck verifies an API bearer token against the tokens in the
// store now (no cache: a revocation applies from the next call).
func StoreTokenCheck(store *raftstore.Store, tok string) (trust.Identity, error) {
	c, ok := raftstore.ClusterOf(store.View())
	if !ok {
		return trust.Identity{}, errdefs.Unavailablef("the cluster is still being bootstrapped")
	}
	return trust.VerifyAPIToken(c.GetApiTokens(), c.GetMeta().GetId(), tok, time.Now())
}

// storeAdmins reads the cluster's admin certificates from the store.
func storeAdmins(store *raftstore.Store) trust.AdminLookup {
	return func() ([]*shoalv1.AdminCertificate, bool) {
		c, ok := raftstore.ClusterOf(store.View())
		return c.GetAdminCerts(), ok
	}
}

// storeNodes looks node ids up in the store.
func storeNodes(store *raftstore.Store) trust.NodeLookup {
	return func(id string) (*shoalv1.Node, bool) { return viewNodes(store.View())(id) }
}

// viewNodes looks node ids up in one view of the store.
func viewNodes(view raftstore.Reader) trust.NodeLookup {
	return func(id string) (*shoalv1.Node, bool) {
		if n, ok := raftstore.Get[*shoalv1.Node](view, id); ok {
			return n, false
		}
		c, _ := raftstore.ClusterOf(view)
		return nil, slices.Contains(c.GetRemovedNodes(), id)
	}
}

// viewAdmins reads the cluster's admin certificates from one view.
func viewAdmins(view raftstore.Reader) trust.AdminLookup {
	return func() ([]*shoalv1.AdminCertificate, bool) {
		c, ok := raftstore.ClusterOf(view)
		return c.GetAdminCerts(), ok
	}
}

// redialOnRenewal drops the forwarder's connections made with this node's
// previous certificate when it changes: the store honours a certificate on
// gRPC calls only until the renewal after next. (Raft connections are
// checked for membership, not serial, once admitted: they are kept.)
func redialOnRenewal(ctx context.Context, certs *trust.CertStore, fwd *forward.Forwarder) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-certs.Changed():
		}
		fwd.Redial(30 * time.Second)
	}
}

// managers lists manager API addresses, leader first (raft addresses are
// the API addresses: both share the multiplexed port).
func (m *Manager) managers() []string {
	members, err := m.store.Members()
	if err != nil {
		return nil
	}
	var out []string
	for _, mem := range members {
		if mem.Leader {
			out = append([]string{mem.Addr}, out...)
		} else {
			out = append(out, mem.Addr)
		}
	}
	return out
}

// leaderLoop runs the leader-only components while this manager leads.
func (m *Manager) leaderLoop(ctx context.Context, disp *dispatcher.Dispatcher, member *membership.Server) error {
	for ctx.Err() == nil {
		ch := m.store.LeadershipChanged()
		if m.store.IsLeader() {
			m.log.Info("leadership acquired")
			lctx, cancel := context.WithCancel(ctx)
			g, gctx := errgroup.WithContext(lctx)
			g.Go(func() error { return m.ensureCluster(gctx) })
			g.Go(func() error { return orchestrator.New(m.store, m.cfg.Logger).WithMetrics(m.cfg.Metrics).Run(gctx) })
			g.Go(func() error { return allocator.New(m.store, m.cfg.Logger).Run(gctx) })
			g.Go(func() error { return disp.Run(gctx) })
			g.Go(func() error { return member.Run(gctx) })
			g.Go(func() error { return gossipkeys.NewDropper(m.store, m.cfg.Logger).Run(gctx) })
			// Leader components stop when leadership is lost or ctx ends.
			for m.store.IsLeader() && ctx.Err() == nil {
				select {
				case <-ch:
				case <-ctx.Done():
				case <-gctx.Done():
				}
				ch = m.store.LeadershipChanged()
				if gctx.Err() != nil {
					break
				}
			}
			cancel()
			if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
				m.log.Error("leader component failed; restarting leader components", "err", err)
				select { // do not spin on a component that fails at once
				case <-time.After(time.Second):
				case <-ctx.Done():
				}
			}
			m.log.Info("leadership lost or stopping")
			continue
		}
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
	return ctx.Err()
}

// ensureCluster writes the bootstrap objects once (idempotent: a crash
// between raft bootstrap and this write is healed by the next start).
func (m *Manager) ensureCluster(ctx context.Context) error {
	if _, ok := raftstore.ClusterOf(m.store.View()); ok {
		m.bootOnce.Do(func() { close(m.boot) })
		return nil
	}
	b := m.cfg.Bootstrap
	if b == nil {
		return nil
	}
	_, err := m.store.Update(ctx, func(tx raftstore.WriteTx) error {
		if _, ok := raftstore.ClusterOf(tx); ok {
			return nil
		}
		if err := tx.Create(b.Cluster); err != nil {
			return err
		}
		if _, ok := raftstore.Get[*shoalv1.Node](tx, b.Self.GetMeta().GetId()); !ok {
			return tx.Create(b.Self)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bootstrapping the cluster: %w", err)
	}
	m.bootOnce.Do(func() { close(m.boot) })
	m.log.Info("cluster bootstrapped", "cluster_id", b.Cluster.GetMeta().GetId())
	return nil
}
