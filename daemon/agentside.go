package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/agent/agentapi"
	"github.com/shoal-dev/shoal/agent/image"
	"github.com/shoal-dev/shoal/agent/network"
	"github.com/shoal-dev/shoal/agent/runtime"
	"github.com/shoal-dev/shoal/agent/runtime/hostclean"
	"github.com/shoal-dev/shoal/datadir"
	"github.com/shoal-dev/shoal/overlay"
	"github.com/shoal-dev/shoal/overlay/dns"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// agentSide is what runs tasks on a node: image store, runtime, node
// network and the executor on top of them.
type agentSide struct {
	images *image.Store
	net    *network.Manager // nil when tasks get no node network
	// ov programs the overlay and bridge networks (nil without a node
	// network); bridge networks only when the underlay address is not
	// usable for VXLAN (ovM.BridgeOnly).
	ov  *overlay.Node
	ovM *overlay.Manager
	// disc serves DNS and VIPs to tasks on overlay networks (with ov).
	disc *overlay.Discovery
	// discRun runs the Discovery updates of network messages, hints and
	// expired hints one at a time, each from the newest ov.States(),
	// merging those asked for during a run into one (coalesce.go).
	discRun *coalescer
	vtep    netip.Addr // the overlay's VTEP (with ov, unless bridge-only)
	ex      *agent.Executor
	gcNow   chan struct{} // cap 1: a task was removed
	// lc is the libcontainer runtime (nil when a test runtime is used).
	lc *runtime.Libcontainer
	// ports programs the node's published ports (with ov).
	ports       *portProgrammer
	localSubnet netip.Prefix
	// gossip carries the Withdrawn acknowledgements (with vtep).
	gossip *nodeGossip
	// withdrawn: the acknowledgements made and received (withdraw.go).
	withdrawn *withdrawals
	// refreshDelay slows every discovery refresh down (a test hook:
	// SHOAL_TEST_DISCOVERY_DELAY, what a node with many task namespaces
	// takes).
	refreshDelay time.Duration
	log          *slog.Logger
}

// refreshDelayEnv names the test hook that slows discovery refreshes.
const refreshDelayEnv = "SHOAL_TEST_DISCOVERY_DELAY"

// maxRefreshDelay bounds the hook: a refresh holds the agent's session
// (a longer one ends it), so a stray value must not stall a node.
const maxRefreshDelay = 10 * time.Second

// refreshDelay parses the value of refreshDelayEnv ("": none).
func refreshDelay(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err == nil && (d < 0 || d > maxRefreshDelay) {
		err = fmt.Errorf("out of range 0..%s", maxRefreshDelay)
	}
	if err != nil {
		return 0, fmt.Errorf("%s=%q: want a duration such as 2s: %w", refreshDelayEnv, v, err)
	}
	return d, nil
}

// imageGCPeriod is how often unreferenced images and unused layers are
// collected even when no task goes away (after `shoal image rm`).
const imageGCPeriod = 5 * time.Minute

// collectImages removes images that lost all references (`image rm`) and
// that no task on the node uses, and layers no image uses, whenever a task
// is removed and every imageGCPeriod.
func (s *agentSide) collectImages(ctx context.Context, log *slog.Logger) error {
	t := time.NewTicker(imageGCPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.gcNow:
		}
		n, freed, err := s.images.GC(ctx, s.ex.ImageInUse)
		if err != nil && ctx.Err() == nil {
			log.Warn("image garbage collection", "err", err)
		} else if n > 0 || freed > 0 {
			log.Info("image garbage collection", "images", n, "freed_bytes", freed)
		}
	}
}

// agentAddr is where the agent API listens unless told: the advertise
// host, the manager port + 1 (4243 by default).
func agentAddr(advertise string) (string, error) {
	host, port, err := net.SplitHostPort(advertise)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p >= 65535 {
		return "", fmt.Errorf("advertise address %q: bad port", advertise)
	}
	return net.JoinHostPort(host, strconv.Itoa(p+1)), nil
}

func (n *node) buildAgentSide(ctx context.Context) (*agentSide, error) {
	o, st := n.o, n.state()
	dd := datadir.Dir(o.DataDir)
	dir := dd.Agent()
	images, err := image.OpenWithLimits(dd.Images(), o.Logger,
		image.Limits{MaxLayerBytes: o.MaxLayerBytes, MaxLayerEntries: o.MaxLayerEntries})
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	for _, p := range o.LoadImages {
		imgs, err := images.Load(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("--load-image %s: %w", p, err)
		}
		for _, img := range imgs {
			n.log.Info("image loaded", "path", p, "refs", img.References, "digest", img.Digest)
		}
	}
	rt := o.Seams.Runtime
	if rt == nil {
		var opts []runtime.Option
		if st.CgroupParent != "" {
			opts = append(opts, runtime.WithCgroupParent(st.CgroupParent))
		}
		// Refuse to start rather than accept tasks that would all fail.
		if err := hostclean.CheckCgroups(); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
		lc, err := runtime.NewLibcontainer(dd.Runtime(), o.Logger, opts...)
		if err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
		rt = lc
	}
	side := &agentSide{images: images, gcNow: make(chan struct{}, 1), gossip: n.gossip, withdrawn: newWithdrawals(), log: n.log}
	if side.refreshDelay, err = refreshDelay(os.Getenv(refreshDelayEnv)); err != nil {
		return nil, err
	} else if side.refreshDelay > 0 {
		n.log.Warn("discovery refreshes slowed down (test hook)", "delay", side.refreshDelay)
	}
	side.discRun = newCoalescer(side.refreshDiscovery)
	if lc, ok := rt.(*runtime.Libcontainer); ok {
		side.lc = lc
		// A shim started ahead takes the first task: it does not wait
		// for a shim's start-up.
		go func() {
			if err := lc.Prepare(ctx); err != nil && ctx.Err() == nil {
				n.log.Warn("starting a spare shim", "err", err)
			}
		}()
	}
	var netw agent.Network
	if !o.Seams.NoTaskNetwork {
		cfg := network.Config{Bridge: st.Bridge, StateDir: dd.Network(), Logger: o.Logger}
		if st.BridgeSubnet != "" {
			if cfg.Subnet, err = netip.ParsePrefix(st.BridgeSubnet); err != nil {
				side.close()
				return nil, fmt.Errorf("--bridge-subnet: %w", err)
			}
		}
		if side.net, err = network.New(cfg); err != nil {
			side.close()
			return nil, fmt.Errorf("node network: %w", err)
		}
		netw = netAdapter{side.net}
		subnet := cfg.Subnet
		if !subnet.IsValid() {
			subnet = network.DefaultSubnet
		}
		side.startOverlay(ctx, n.log, st.AdvertiseAddr, subnet)
		if side.vtep.IsValid() && !o.NoGossipHints {
			n.gossip.setHintHandler(func(b []byte) { side.applyHint(n.log, b) }, ctx.Done())
			n.gossip.setWithdrawnHandler(func(w overlay.Withdrawn) { side.withdrawn.add(w.TaskID, w.VTEP, time.Now()) })
		}
	}
	var ov agent.Overlay
	var disc agent.Discovery
	var withdrawal agent.EndpointWithdrawal
	if side.ov != nil {
		ov = ovAdapter{side.ov}
		disc = side.disc
		if side.vtep.IsValid() && !o.NoGossipHints {
			withdrawal = side
		}
	}
	side.ex, err = agent.NewExecutor(agent.ExecutorConfig{
		Dir: dir, NodeDataDir: o.DataDir, Runtime: rt, Images: countingImages{images, n.metrics}, Network: netw, Overlay: ov, Discovery: disc,
		Withdrawal: withdrawal,
		Pull:       image.PullOptions{InsecureRegistries: st.InsecureRegistries},
		NodeMemory: memTotal(), Logger: o.Logger.With("node_id", st.NodeID),
		OnStatus: func(t *shoalv1.Task, st *shoalv1.TaskStatus) {
			if !o.NoGossipHints {
				side.gossipHints(n.gossip, t, st)
			}
		},
		OnRemoved: func(string) {
			select {
			case side.gcNow <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		side.close()
		return nil, err
	}
	if side.ov != nil {
		side.ports = &portProgrammer{nodeID: st.NodeID, subnet: side.localSubnet, tasks: side.ex.Tasks,
			vtep: side.vtep, nodes: gossipNodes(n.gossip, side.vtep), log: o.Logger.With("node_id", st.NodeID)}
		go side.ports.run(ctx, overlayRepairPeriod)
		if side.vtep.IsValid() && !o.NoGossipHints {
			go side.expireHints(ctx, n.log)
		}
	}
	return side, nil
}

func (s *agentSide) close() {
	if s.lc != nil {
		s.lc.Close() // the spare shim; tasks keep running
	}
	if s.net != nil {
		s.net.Close()
	}
	if s.ovM != nil {
		s.ovM.Close()
	}
}

// overlayRepairPeriod is how often the overlay's kernel state is
// reconciled against the held desired state without a new message.
const overlayRepairPeriod = 30 * time.Second

// startOverlay sets up the network data plane on the node's underlay
// address (the advertise host; its interface is the uplink). A node
// whose address cannot carry VXLAN (loopback, a name, no interface) runs
// it bridge-only (overlay.Config.BridgeOnly): bridge and host networks
// work, tasks on overlay networks are rejected; a warning, not a failure.
func (s *agentSide) startOverlay(ctx context.Context, log *slog.Logger, advertise string, localSubnet netip.Prefix) {
	vtep, uplink, why := underlay(advertise)
	cfg := overlay.Config{VTEP: vtep, Uplink: uplink, LocalSubnet: localSubnet,
		EnableForwarding: true, Logger: log, BridgeOnly: why != nil}
	m, err := overlay.New(cfg)
	if why == nil && err != nil {
		// The overlay cannot start here: bridge networks still can.
		why = err
		m, err = overlay.New(overlay.Config{LocalSubnet: localSubnet, Logger: log, BridgeOnly: true})
	}
	if why != nil {
		log.Warn("overlay networks disabled (bridge and host networks work)", "addr", advertise, "err", why)
	}
	if err != nil {
		log.Warn("bridge networks disabled too", "err", err)
		return
	}
	s.ovM, s.ov = m, overlay.NewNode(m)
	if !m.BridgeOnly() {
		s.vtep = vtep
	}
	s.localSubnet = localSubnet
	s.disc = overlay.NewDiscovery(dns.Forwarders{}, log)
	go s.ov.Run(ctx, overlayRepairPeriod, func(err error) { log.Warn("overlay repair", "err", err) })
}

// underlay returns the VTEP and the uplink of the node advertising
// advertise (host or host:port), or why VXLAN cannot run there.
func underlay(advertise string) (vtep netip.Addr, uplink string, why error) {
	host, _, err := net.SplitHostPort(advertise)
	if err != nil {
		host = advertise
	}
	vtep, err = netip.ParseAddr(host)
	if err != nil || !vtep.Is4() || vtep.IsLoopback() {
		return netip.Addr{}, "", errors.New("the advertise address is not a non-loopback IPv4 address")
	}
	if uplink, err = overlay.UplinkFor(vtep); err != nil {
		return netip.Addr{}, "", err
	}
	return vtep, uplink, nil
}

// networks returns what the session hands its Networks messages to: the
// overlay's kernel reconciliation, then the node's names and the VIPs of
// its tasks (after the kernel, so that a name answers once its address
// is reachable). nil without an overlay.
func (s *agentSide) networks() agent.NetworkReconciler {
	if s.ov == nil {
		return nil
	}
	return netReconciler{s}
}

type netReconciler struct{ s *agentSide }

// clearNetworks reconciles the node against no network at all (after its
// removal from the cluster, its tasks gone): overlay and bridge-network
// devices are deleted, and names, VIPs and published ports emptied.
func (s *agentSide) clearNetworks(ctx context.Context) error {
	if s.ov == nil {
		return nil
	}
	return netReconciler{s}.Reconcile(ctx, true, nil, nil)
}

func (r netReconciler) Reconcile(ctx context.Context, full bool, states []*shoalv1.NetworkState, removed []string) error {
	err := r.s.ov.Reconcile(ctx, full, states, removed)
	if perr := r.s.updateDiscovery(); perr != nil && err == nil {
		err = perr
	}
	return err
}

// updateDiscovery brings the tasks' DNS and VIPs and the published ports
// up to the node's newest network states (with what hints marked): it
// returns once a refresh that started after the call has finished, and
// the calls made during one refresh share the next.
func (s *agentSide) updateDiscovery() error {
	return s.discRun.Do()
}

// refreshDiscovery passes the node's newest network states to the tasks'
// DNS and VIPs and to the published ports (one at a time: discRun); then,
// the endpoints gone from them being in no VIP any more, it lets the
// kernel delete their FDB and neighbour entries (overlay.Node.Prune), and
// acknowledges the withdrawal of the stopping tasks' endpoints.
func (s *agentSide) refreshDiscovery() error {
	if s.refreshDelay > 0 {
		time.Sleep(s.refreshDelay) // test hook: a slow refresh
	}
	all := s.ov.States()
	err := s.disc.Update(all)
	if s.ports != nil {
		err = errors.Join(err, s.ports.program(all))
	}
	s.acknowledge(all, err)
	return errors.Join(err, s.ov.Prune(context.Background(), all))
}

// acknowledge records and gossips (once each) this node's withdrawal of
// the stopping tasks' endpoints in all, which its names, VIPs and ports
// now follow — unless the refresh failed (refreshErr): some of them may
// still list those tasks, and the next refresh acknowledges. It returns
// the tasks acknowledged.
func (s *agentSide) acknowledge(all []*shoalv1.NetworkState, refreshErr error) []string {
	if refreshErr != nil || !s.vtep.IsValid() {
		return nil
	}
	ids := s.withdrawn.acknowledge(overlay.WithdrawnTasks(all), s.vtep, time.Now())
	for _, id := range ids {
		s.log.Debug("endpoint withdrawal acknowledged", "task_id", id)
		if b, err := (overlay.Withdrawn{VTEP: s.vtep, TaskID: id}).Encode(); err == nil {
			s.gossip.broadcast(b)
		}
	}
	return ids
}

// WaitWithdrawn is the executor's EndpointWithdrawal: it waits until
// every node with endpoints on t's overlay networks (those gossip does
// not know as dead; this node included) has acknowledged that it sends t
// no new connection, or until ctx ends (false).
func (s *agentSide) WaitWithdrawn(ctx context.Context, t *shoalv1.Task) bool {
	ids := make([]string, 0, len(t.GetNetworks()))
	for _, a := range t.GetNetworks() {
		ids = append(ids, a.GetNetworkId())
	}
	need := withdrawalNodes(overlay.EndpointNodes(s.ov.States(), ids), s.vtep, s.gossip.alive())
	if s.withdrawn.wait(ctx, t.GetMeta().GetId(), need) {
		return true
	}
	s.log.Warn("endpoint drain: not every node confirmed the withdrawal in time", "task_id", t.GetMeta().GetId(),
		"missing", s.withdrawn.missing(t.GetMeta().GetId(), need))
	return false
}

// withdrawalNodes returns the nodes of eps whose acknowledgement a drain
// waits for: self, and the others gossip holds alive. Without gossip
// (alive nil: disabled, or it failed to start) no other node's
// acknowledgement can arrive, so only self's is waited for.
func withdrawalNodes(eps []netip.Addr, self netip.Addr, alive map[netip.Addr]bool) []netip.Addr {
	return slices.DeleteFunc(eps, func(a netip.Addr) bool { return a != self && !alive[a] })
}

// gossipHints is the executor's OnStatus: when a task on overlay networks
// becomes RUNNING or ends, the node gossips one hint per attachment so
// that peers program (or withdraw) its entries before the managers' next
// network state, which still decides (overlay.Node.ApplyHint).
func (s *agentSide) gossipHints(g *nodeGossip, t *shoalv1.Task, st *shoalv1.TaskStatus) {
	if !s.vtep.IsValid() || len(t.GetNetworks()) == 0 || st.GetState() < shoalv1.TaskState_TASK_STATE_RUNNING {
		return
	}
	state, ok := overlay.HintState(st)
	if !ok {
		return
	}
	for _, h := range overlay.HintsFor(t, state, s.vtep) {
		if b, err := h.Encode(); err == nil {
			g.broadcast(b)
		}
	}
}

// expireHints drops the hints held longer than overlay.HintTTL (no
// Networks message confirmed or replaced them) and refreshes names, VIPs
// and published ports when it dropped some, until ctx ends.
func (s *agentSide) expireHints(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(overlay.HintTTL / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			dropped, err := s.ov.ExpireHints(now)
			if err != nil {
				log.Warn("removing the entries of expired gossip hints", "err", err)
			}
			if dropped > 0 {
				if err := s.updateDiscovery(); err != nil {
					log.Warn("published ports after expired gossip hints", "err", err)
				}
			}
		}
	}
}

// applyHint merges a hint from another node (gossip) into the overlay and,
// when it changed something, into names and VIPs.
func (s *agentSide) applyHint(log *slog.Logger, b []byte) {
	h, err := overlay.DecodeHint(b)
	if err != nil {
		log.Debug("gossip hint ignored", "err", err)
		return
	}
	r, err := s.ov.ApplyHint(h)
	if err != nil {
		log.Warn("applying a gossip hint", "network_id", h.NetworkID, "task_id", h.TaskID, "err", err)
	}
	if r != overlay.HintIgnored {
		log.Debug("gossip hint applied", "network_id", h.NetworkID, "task_id", h.TaskID, "state", h.State, "result", r)
		if err := s.updateDiscovery(); err != nil {
			log.Warn("published ports after a gossip hint", "err", err)
		}
	}
}

// ovAdapter presents the overlay as the executor's Overlay.
type ovAdapter struct{ n *overlay.Node }

func (a ovAdapter) Attach(ctx context.Context, ns string, atts []*shoalv1.NetworkAttachment) (agent.OverlayAttachment, error) {
	r, err := a.n.Attach(ctx, ns, atts)
	return agent.OverlayAttachment{NoEgress: r.NoEgress}, err
}

func (a ovAdapter) Detach(ctx context.Context, ns string, atts []*shoalv1.NetworkAttachment) error {
	return a.n.Detach(ctx, ns, atts)
}

// NetworkDriver lets the executor confirm a host network from the
// delivered state (agent's driverChecker).
func (a ovAdapter) NetworkDriver(ctx context.Context, id string) (string, error) {
	return a.n.Driver(ctx, id)
}

// netAdapter presents the node network as the executor's Network.
type netAdapter struct{ m *network.Manager }

func (a netAdapter) Setup(ctx context.Context, id string) (agent.NetAttachment, error) {
	att, err := a.m.Setup(ctx, id)
	if err != nil {
		return agent.NetAttachment{}, err
	}
	return agent.NetAttachment{NetNSPath: att.NetNSPath, Addresses: att.Addresses}, nil
}

// NetNSPath lets the executor find a re-adopted task's namespace.
func (a netAdapter) NetNSPath(id string) string { return a.m.NetNSPath(id) }

func (a netAdapter) Teardown(ctx context.Context, id string) error { return a.m.Teardown(ctx, id) }

// Isolate lets the executor cut a task on overlay networks off from the
// other such tasks on the node bridge (agent's portIsolator).
func (a netAdapter) Isolate(id string) error { return a.m.Isolate(id) }

var _ interface{ Isolate(string) error } = netAdapter{}

// serveAgentAPI serves the agent API (task logs, images) until ctx ends.
func (n *node) serveAgentAPI(ctx context.Context, side *agentSide) error {
	st := n.state()
	current, ongoing := n.agentAPICheck()
	cfg := agentapi.Config{NodeID: st.NodeID, Tasks: side.ex.Tasks, LogPath: side.ex.LogPath,
		Images: side.images, Logger: n.o.Logger, Current: current, Ongoing: ongoing, Usage: side.usage(),
		CollectImages: func(ctx context.Context) error {
			_, _, err := side.images.GC(ctx, side.ex.ImageInUse)
			return err
		}}
	if side.lc != nil {
		cfg.Execer = execer{lc: side.lc, tasks: side.ex.Tasks}
	}
	srv := agentapi.New(cfg)
	if err := agentapi.Serve(ctx, st.AgentAddr, n.certs, srv); err != nil {
		return fmt.Errorf("agent API on %s: %w", st.AgentAddr, err)
	}
	return nil
}
