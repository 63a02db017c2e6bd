package dispatcher

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/netdelta"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/specrules"
)

// Network delivery.
//
// A node takes part in a network when it holds a task attached to it that
// has not ended (ASSIGNED..RUNNING). For each such network the node gets a
// NetworkState: the network, every endpoint on it and the services' VIPs.
//
// An endpoint is a task with an attachment (and an address) on the
// network, assigned to a node, in state ASSIGNED..RUNNING — ASSIGNED to
// STARTING included, so that every peer has the address programmed before
// the task runs — whose node is not DOWN. node_addr is the host of the
// node's status.addr (its VXLAN underlay address). When a node goes DOWN
// its endpoints are withdrawn from every other node's state; tasks that
// ended drop out at once.
//
// Bridge and host networks are node-local: each node's state of such a
// network lists only the endpoints on that node, so its DNS names and VIPs
// answer local tasks only (a task on another node's bridge is not
// reachable), and an ingress port never widens them to other nodes.
//
// VIPs: every service attached to the network by its spec, or with a live
// task on it (an older spec), even with no live task, is listed with
// its aliases and mode; vip-mode services carry their VIP on that network,
// dnsrr ones an empty address.
//
// Published ports: ServiceVIPState.ports carries each service's ports.
// A network with a service publishing an ingress-mode port is sent to
// every node that is not DOWN (every node answers the port and needs the
// backends, see overlay.PlanPorts); host-mode ports need no more than the
// nodes running a task. A service without a network gets no state, so its
// ports reach no node (see the README's Limits).
//
// Messages: the session sends the full set (full=true) right after the
// assignments, then, after every burst of relevant changes (a task with
// networks, a node, a network, a service), the networks whose state
// changed and the ids of those the node no longer takes part in
// (full=false). To an agent that says it applies deltas (its hello's
// network_deltas), a network it holds whose new state differs in a few
// endpoints or VIPs goes as a delta (netdelta): one endpoint when one
// task moved, where the whole state lists every endpoint of the network
// and a rollout over N nodes sent O(N³) bytes. Each message holds networks up to maxNetworkBytes (1 MiB);
// a network whose own state is larger travels alone in one message (up to
// gRPC's 4 MiB, some 20,000 endpoints): splitting one network's endpoints
// would need a "more" flag on Networks so the agent does not apply half a
// list. A full set over 1 MiB goes as full=true with its first chunk and
// full=false for the rest; the agent should apply a full set's removals
// only once it is idle (or the proto should gain "more", see the report).
const maxNetworkBytes = 1 << 20

// endpointState reports whether a task's addresses are live: ASSIGNED to
// RUNNING.
func endpointState(t *shoalv1.Task) bool {
	s := t.GetStatus().GetState()
	return s >= shoalv1.TaskState_TASK_STATE_ASSIGNED && s <= shoalv1.TaskState_TASK_STATE_RUNNING && t.GetNodeId() != ""
}

// endpointTaskState is the state an endpoint is delivered with: the
// task's, except that a task the managers are stopping (desired state
// past RUNNING) is SHUTDOWN already: DNS and VIPs answer only RUNNING
// endpoints, so new connections stop going to it before it stops, while
// its FDB/neighbour entries stay until it has ended (established
// connections drain).
func endpointTaskState(t *shoalv1.Task) shoalv1.TaskState {
	if s := t.GetStatus().GetState(); s != shoalv1.TaskState_TASK_STATE_RUNNING || t.GetDesiredState() <= shoalv1.TaskState_TASK_STATE_RUNNING {
		return s
	}
	return shoalv1.TaskState_TASK_STATE_SHUTDOWN
}

// underlayAddr returns the host part of a node's status addr.
func underlayAddr(n *shoalv1.Node) string {
	a := n.GetStatus().GetAddr()
	if h, _, err := net.SplitHostPort(a); err == nil {
		return h
	}
	if ap, err := netip.ParseAddrPort(a); err == nil {
		return ap.Addr().String()
	}
	return a
}

// NodeNetworks computes the desired state of every network nodeID takes
// part in, sorted by network id.
func NodeNetworks(r raftstore.Reader, nodeID string) []*shoalv1.NetworkState {
	return AllNodeNetworks(r)[nodeID]
}

// AllNodeNetworks computes every node's network states in one scan of the
// tasks; nodes share the NetworkState of a network (read-only).
func AllNodeNetworks(r raftstore.Reader) map[string][]*shoalv1.NetworkState {
	if len(r.List(raftstore.KindNetwork)) == 0 {
		// No network, no state: skip the scan of every task and node.
		return map[string][]*shoalv1.NetworkState{}
	}
	nodes := map[string]*shoalv1.Node{}
	for _, n := range raftstore.List[*shoalv1.Node](r) {
		nodes[n.GetMeta().GetId()] = n
	}
	byNet := map[string]*shoalv1.NetworkState{}
	members := map[string]map[string]bool{}  // network id -> node ids taking part
	services := map[string]map[string]bool{} // network id -> service ids
	for _, t := range raftstore.List[*shoalv1.Task](r) {
		if len(t.GetNetworks()) == 0 || !endpointState(t) {
			continue
		}
		n := nodes[t.GetNodeId()]
		down := n == nil || n.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_DOWN
		for _, a := range t.GetNetworks() {
			id := a.GetNetworkId()
			if !down {
				if members[id] == nil {
					members[id] = map[string]bool{}
				}
				members[id][t.GetNodeId()] = true
			}
			if services[id] == nil {
				services[id] = map[string]bool{}
			}
			services[id][t.GetServiceId()] = true
			if down || a.GetAddress() == "" {
				continue
			}
			ns := byNet[id]
			if ns == nil {
				ns = &shoalv1.NetworkState{}
				byNet[id] = ns
			}
			ns.Endpoints = append(ns.Endpoints, &shoalv1.Endpoint{
				TaskId: t.GetMeta().GetId(), ServiceId: t.GetServiceId(), ServiceName: t.GetServiceName(),
				Aliases: a.GetAliases(), Address: a.GetAddress(), Mac: a.GetMac(),
				NodeId: t.GetNodeId(), NodeAddr: underlayAddr(n), State: endpointTaskState(t),
				Health: t.GetStatus().GetHealth(),
			})
		}
	}
	// Services attached by spec are listed even with no live task: a
	// service scaled to 0 (or whose tasks all failed) keeps its name and
	// its VIP, which then refuses new connections. Left out, its name
	// would be forwarded to the node's resolvers (and the search domains
	// could resolve it to some outside host) and its VIP would black-hole.
	for _, svc := range raftstore.List[*shoalv1.Service](r) {
		for _, cfg := range svc.GetSpec().GetTask().GetNetworks() {
			if id := cfg.GetTarget(); members[id] != nil {
				if services[id] == nil {
					services[id] = map[string]bool{}
				}
				services[id][svc.GetMeta().GetId()] = true
			}
		}
	}
	out := map[string][]*shoalv1.NetworkState{}
	ids := make([]string, 0, len(members))
	for id := range members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		nw, ok := raftstore.Get[*shoalv1.Network](r, id)
		if !ok {
			continue
		}
		ns := byNet[id]
		if ns == nil {
			ns = &shoalv1.NetworkState{}
		}
		ns.Network = nw
		ingress := false
		for sid := range services[id] {
			svc, ok := raftstore.Get[*shoalv1.Service](r, sid)
			if !ok {
				continue
			}
			ns.Vips = append(ns.Vips, vipState(svc, id))
			ingress = ingress || hasIngressPort(svc)
		}
		slices.SortFunc(ns.Vips, func(a, b *shoalv1.ServiceVIPState) int { return strings.Compare(a.GetServiceId(), b.GetServiceId()) })
		if d := nw.GetSpec().GetDriver(); d == specrules.DriverBridge || d == specrules.DriverHost {
			// Node-local networks: a node sees only its own endpoints
			// (names and VIPs answer local tasks only; a bridge is not
			// reachable from another node) and no ingress widening (an
			// ingress port needs an overlay network, which carries it).
			for node := range members[id] {
				out[node] = append(out[node], localState(ns, node))
			}
			continue
		}
		if ingress {
			// Every node answers an ingress port, so every node that is
			// not DOWN gets the state of the service's networks (its
			// backends), whether or not it runs one of its tasks (the
			// members are such nodes too: not added to members, 20,000
			// map writes at 200 nodes × 100 networks).
			for nid, n := range nodes {
				if n.GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_DOWN {
					out[nid] = append(out[nid], ns)
				}
			}
			continue
		}
		for node := range members[id] {
			out[node] = append(out[node], ns)
		}
	}
	return out
}

// localState is ns with only the endpoints on node (a copy when some are
// left out; ns is shared between nodes).
func localState(ns *shoalv1.NetworkState, node string) *shoalv1.NetworkState {
	var eps []*shoalv1.Endpoint
	for _, ep := range ns.GetEndpoints() {
		if ep.GetNodeId() == node {
			eps = append(eps, ep)
		}
	}
	if len(eps) == len(ns.GetEndpoints()) {
		return ns
	}
	return &shoalv1.NetworkState{Network: ns.GetNetwork(), Endpoints: eps, Vips: ns.GetVips()}
}

// netCache shares one AllNodeNetworks computation between the sessions
// that handle the same burst: each asks for the view it reads, and the
// first one past the cached raft index computes for all, from the
// newest view (latest), so that those that queued behind it meanwhile
// find it new enough. A state newer than the asker's view is as good to
// send: its later events only lead to the same state again. (Computing
// for each asker's own index, as the index moved on with every entry,
// had a thousand sessions queue behind one scan of every task each.)
//
// A computation keeps the previous one's state of a network (the same
// pointer) wherever it is equal, compared once per network, not once per
// session: most entries (a label written, a task without networks, a
// heartbeat) change no network, and every session of a node on an overlay
// network of 1,000 endpoints compared its 67 KB state in full (proto.Equal)
// per entry — 80 ms of the leader's CPU for one label write seen by 200
// such sessions (BenchmarkLabelWriteOverSessions). A state that did change
// is recorded as replacing the one before (replaced), so a session that
// sent that one knows without comparing either.
type netCache struct {
	mu     sync.Mutex
	index  uint64
	byNode map[string][]*shoalv1.NetworkState
	// replaced maps a state of this computation to the previous
	// computation's state of the same network and node, found different.
	// Read-only once made: sessions read it without the lock.
	replaced map[*shoalv1.NetworkState]*shoalv1.NetworkState
	// latest returns the store's current view (nil: the asker's view).
	latest func() raftstore.Reader
	// computed counts computations (tests).
	computed int

	// deltas holds the deltas made since the last computation, by the
	// pair of states (sent, next): the sessions that sent one state of an
	// overlay network (most of them) share one delta to the next, made
	// once (dmu, not mu: sessions ask while others compute).
	dmu    sync.Mutex
	deltas map[[2]*shoalv1.NetworkState]*shoalv1.NetworkDelta
	// made counts deltas made (tests).
	made int
}

// delta is netdelta.Diff(prev, next), made once per pair of states.
func (c *netCache) delta(prev, next *shoalv1.NetworkState) *shoalv1.NetworkDelta {
	k := [2]*shoalv1.NetworkState{prev, next}
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if d, ok := c.deltas[k]; ok {
		return d
	}
	d := netdelta.Diff(prev, next)
	if c.deltas == nil {
		c.deltas = map[[2]*shoalv1.NetworkState]*shoalv1.NetworkDelta{}
	}
	c.deltas[k] = d
	c.made++
	return d
}

func (c *netCache) get(r raftstore.Reader, nodeID string) []*shoalv1.NetworkState {
	states, _ := c.states(r, nodeID)
	return states
}

// states is nodeID's network states as of r's index or later, and the
// replaced map of the computation they come from.
func (c *netCache) states(r raftstore.Reader, nodeID string) ([]*shoalv1.NetworkState, map[*shoalv1.NetworkState]*shoalv1.NetworkState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byNode == nil || c.index < r.Index() {
		if c.latest != nil {
			if v := c.latest(); v.Index() > r.Index() {
				r = v
			}
		}
		next := AllNodeNetworks(r)
		c.replaced = keepUnchanged(c.byNode, next)
		c.byNode, c.index = next, r.Index()
		c.computed++
		// The pairs made so far hold states of earlier computations,
		// which sessions move past: start over rather than keep them.
		c.dmu.Lock()
		c.deltas = nil
		c.dmu.Unlock()
	}
	return c.byNode[nodeID], c.replaced
}

// keepUnchanged puts prev's state of a network and node in next wherever
// the two are equal, comparing each distinct pair of states once (nodes
// share an overlay network's state), and returns the states of next that
// differ from the one they follow. A node that had no state of the
// network (it just came to take part) gets the previous state another
// node kept, if any: given a copy of its own, each joiner would add one
// more distinct state, one more full comparison for every computation
// after (BenchmarkLabelWriteAfterJoins).
func keepUnchanged(prev, next map[string][]*shoalv1.NetworkState) map[*shoalv1.NetworkState]*shoalv1.NetworkState {
	type slot struct {
		states []*shoalv1.NetworkState
		i      int
	}
	// verdict is what n was found against p; most nodes share both (an
	// overlay network's state), so one entry per distinct new state
	// answers them without a lookup per pair.
	type verdict struct {
		p  *shoalv1.NetworkState
		eq bool
	}
	seen := map[*shoalv1.NetworkState]verdict{}
	kept := map[*shoalv1.NetworkState]*shoalv1.NetworkState{} // state of next -> an equal one of prev
	replaced := map[*shoalv1.NetworkState]*shoalv1.NetworkState{}
	var joined []slot
	for node, states := range next {
		// Both lists are in network id order (AllNodeNetworks; a kept
		// state takes its successor's place), so one walk pairs them.
		before := prev[node]
		j := 0
		for i, n := range states {
			id := n.GetNetwork().GetMeta().GetId()
			for j < len(before) && before[j].GetNetwork().GetMeta().GetId() < id {
				j++
			}
			if j == len(before) || before[j].GetNetwork().GetMeta().GetId() != id {
				joined = append(joined, slot{states, i})
				continue
			}
			p := before[j]
			v, ok := seen[n]
			if !ok || v.p != p {
				v = verdict{p, netdelta.Equal(p, n)}
				if !ok {
					seen[n] = v
				}
			}
			if v.eq {
				states[i] = p
				kept[n] = p
			} else {
				replaced[n] = p
			}
		}
	}
	for _, j := range joined {
		if p := kept[j.states[j.i]]; p != nil {
			j.states[j.i] = p
		}
	}
	return replaced
}

func vipState(svc *shoalv1.Service, networkID string) *shoalv1.ServiceVIPState {
	mode := svc.GetSpec().GetEndpoint().GetMode()
	if mode == "" {
		mode = "vip"
	}
	v := &shoalv1.ServiceVIPState{ServiceId: svc.GetMeta().GetId(), ServiceName: svc.GetSpec().GetName(),
		EndpointMode: mode, Ports: svc.GetSpec().GetEndpoint().GetPorts()}
	for _, cfg := range svc.GetSpec().GetTask().GetNetworks() {
		if cfg.GetTarget() == networkID {
			v.Aliases = cfg.GetAliases()
		}
	}
	if mode == "vip" {
		for _, x := range svc.GetVips() {
			if x.GetNetworkId() == networkID {
				v.Address = x.GetAddress()
			}
		}
	}
	return v
}

// networkTracker remembers what a session sent, to send only changes.
type networkTracker struct {
	sent map[string]*shoalv1.NetworkState // by network id
	// delta makes the delta from a state sent to the next (nil: the agent
	// takes whole states only); netCache.delta shares them between the
	// sessions that sent the same state.
	delta func(prev, next *shoalv1.NetworkState) *shoalv1.NetworkDelta
}

// hasEndpoint says whether a state sent lists task id as an endpoint.
func (nt *networkTracker) hasEndpoint(id string) bool {
	for _, ns := range nt.sent {
		for _, ep := range ns.GetEndpoints() {
			if ep.GetTaskId() == id {
				return true
			}
		}
	}
	return false
}

// diff returns the messages that bring the agent from what was sent to
// states (full: everything, replacing what it has), and records states as
// sent.
func (nt *networkTracker) diff(states []*shoalv1.NetworkState, full bool) []*shoalv1.Networks {
	return nt.diffKnown(states, full, nil)
}

// diffKnown is diff with the cache's replaced map: a state the same as the
// one sent (the cache kept it) or known to replace it needs no comparison.
func (nt *networkTracker) diffKnown(states []*shoalv1.NetworkState, full bool, replaced map[*shoalv1.NetworkState]*shoalv1.NetworkState) []*shoalv1.Networks {
	next := make(map[string]*shoalv1.NetworkState, len(states))
	var changed []*shoalv1.NetworkState
	var deltas []*shoalv1.NetworkDelta
	for _, s := range states {
		id := s.GetNetwork().GetMeta().GetId()
		next[id] = s
		sent := nt.sent[id]
		switch {
		case full:
		case sent == s:
			continue
		case sent == nil:
		case nt.delta != nil:
			// A state the agent holds changes by a delta (an empty one:
			// equal), unless it is better sent whole.
			if d := nt.delta(sent, s); d != nil {
				if !netdelta.Empty(d) {
					deltas = append(deltas, d)
				}
				continue
			}
			if replaced[s] != sent && netdelta.Equal(sent, s) {
				continue
			}
		case replaced[s] == sent:
		case netdelta.Equal(sent, s):
			continue
		}
		changed = append(changed, s)
	}
	var removed []string
	if !full {
		for id := range nt.sent {
			if next[id] == nil {
				removed = append(removed, id)
			}
		}
		slices.Sort(removed)
	}
	nt.sent = next
	if !full && len(changed) == 0 && len(removed) == 0 && len(deltas) == 0 {
		return nil
	}
	return chunkNetworks(full, changed, removed, deltas, maxNetworkBytes)
}

// chunkNetworks splits networks and deltas over messages of at most limit
// bytes; a network (or delta) larger than limit goes alone. Only the first
// carries full; every message but the last has more set, so the agent
// applies them as one.
func chunkNetworks(full bool, states []*shoalv1.NetworkState, removed []string, deltas []*shoalv1.NetworkDelta, limit int) []*shoalv1.Networks {
	cur := &shoalv1.Networks{Full: full, Removed: removed}
	out := []*shoalv1.Networks{cur}
	size := 0
	for _, id := range removed {
		size += len(id) + 3
	}
	room := func(n int) {
		if size > 0 && size+n > limit {
			cur = &shoalv1.Networks{}
			out = append(out, cur)
			size = 0
		}
		size += n
	}
	for _, s := range states {
		room(proto.Size(s) + 6)
		cur.Networks = append(cur.Networks, s)
	}
	for _, d := range deltas {
		room(proto.Size(d) + 6)
		cur.Deltas = append(cur.Deltas, d)
	}
	for _, m := range out[:len(out)-1] {
		m.More = true
	}
	return out
}

// networkRelevant reports whether an event may change some node's network
// state.
func networkRelevant(ev *shoalv1.WatchEvent) bool {
	switch o := raftstore.Unwrap(ev.GetObject()).(type) {
	case *shoalv1.Task:
		return len(o.GetNetworks()) > 0
	case *shoalv1.Node, *shoalv1.Network, *shoalv1.Service:
		return true
	}
	return false
}

// sendNetworks computes nodeID's network state from the store's current
// view and sends what changed.
func (d *Dispatcher) sendNetworks(stream shoalv1.Dispatcher_SessionServer, r raftstore.Reader, nodeID string, nt *networkTracker, full bool) error {
	states, replaced := d.nets.states(r, nodeID)
	for _, m := range nt.diffKnown(states, full, replaced) {
		if err := stream.Send(&shoalv1.SessionMessage{Msg: &shoalv1.SessionMessage_Networks{Networks: m}}); err != nil {
			return err
		}
	}
	return nil
}

// serviceNetworksSame says whether services a and b (two versions of one
// service) are alike in all that the network states read of a service
// (AllNodeNetworks, vipState, hasIngressPort): the spec's name, endpoint
// and task networks, and the VIPs. A field read there and not compared
// here would leave agents with a stale state (TestServiceNetworksSame
// changes every field of a service and checks this against
// AllNodeNetworks). Pointers are compared first: a patched spec shares
// its task and endpoint with the stored one.
func serviceNetworksSame(a, b *shoalv1.Service) bool {
	same := func(x, y proto.Message) bool { return x == y || proto.Equal(x, y) }
	if !slices.EqualFunc(a.GetVips(), b.GetVips(), func(x, y *shoalv1.ServiceVIP) bool { return same(x, y) }) {
		return false
	}
	as, bs := a.GetSpec(), b.GetSpec()
	if as == bs {
		return true
	}
	if as.GetName() != bs.GetName() || !same(as.GetEndpoint(), bs.GetEndpoint()) {
		return false
	}
	at, bt := as.GetTask(), bs.GetTask()
	return at == bt || slices.EqualFunc(at.GetNetworks(), bt.GetNetworks(), func(x, y *shoalv1.NetworkAttachmentConfig) bool { return same(x, y) })
}

// taskOnNetworks reports whether task t takes part in the network states
// (AllNodeNetworks reads only such tasks): attached to a network, with
// live addresses (endpointState).
func taskOnNetworks(t *shoalv1.Task) bool {
	return len(t.GetNetworks()) > 0 && endpointState(t)
}

// taskNetworksSame says whether tasks a and b (two versions of one task)
// are alike in all that the network states read of a task
// (AllNodeNetworks): whether it takes part (taskOnNetworks) and, if it
// does, its node, service, attachments, endpoint state and health. A
// status message, a failing streak, a task's updates after it ended:
// none of them changes a node's network state. A field read there and
// not compared here would leave agents with a stale state
// (TestTaskNetworksSame changes every field of a task and checks this
// against AllNodeNetworks). The attachments are compared by pointer
// first: a status update shares them with the stored task.
func taskNetworksSame(a, b *shoalv1.Task) bool {
	on := taskOnNetworks(a)
	if on != taskOnNetworks(b) {
		return false
	}
	if !on {
		return true
	}
	if a.GetMeta().GetId() != b.GetMeta().GetId() || a.GetNodeId() != b.GetNodeId() ||
		a.GetServiceId() != b.GetServiceId() || a.GetServiceName() != b.GetServiceName() ||
		endpointTaskState(a) != endpointTaskState(b) || a.GetStatus().GetHealth() != b.GetStatus().GetHealth() {
		return false
	}
	return slices.EqualFunc(a.GetNetworks(), b.GetNetworks(), func(x, y *shoalv1.NetworkAttachment) bool { return x == y || proto.Equal(x, y) })
}

// nodeNetworksSame says whether nodes a and b (two versions of one node)
// are alike in all that the network states read of a node
// (AllNodeNetworks): its underlay address and whether it is DOWN. Its
// labels, availability, heartbeats' bookkeeping and gossip state change
// no network state (TestNodeNetworksSame, as TestTaskNetworksSame).
func nodeNetworksSame(a, b *shoalv1.Node) bool {
	down := func(n *shoalv1.Node) bool { return n.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_DOWN }
	return a.GetMeta().GetId() == b.GetMeta().GetId() && underlayAddr(a) == underlayAddr(b) && down(a) == down(b)
}

// eventChangesNetworks says whether ev may change some node's network
// state, given prev, the object an update replaced (the store gives it
// for updates only; nil when unknown): an update of a task, a node or a
// service only if it changed what the states read of it
// (taskNetworksSame, nodeNetworksSame, serviceNetworksSame); a creation
// or deletion of a task only if the task takes part (before, or after,
// it was not there); the rest always.
func eventChangesNetworks(ev *shoalv1.WatchEvent, prev raftstore.Object) bool {
	switch o := ev.GetObject().GetObject().(type) {
	case *shoalv1.StoreObject_Task:
		if old, ok := prev.(*shoalv1.Task); ok {
			return !taskNetworksSame(old, o.Task)
		}
		switch ev.GetAction() {
		case shoalv1.WatchAction_WATCH_ACTION_CREATE, shoalv1.WatchAction_WATCH_ACTION_DELETE:
			return taskOnNetworks(o.Task)
		}
	case *shoalv1.StoreObject_Node:
		if old, ok := prev.(*shoalv1.Node); ok {
			return !nodeNetworksSame(old, o.Node)
		}
	case *shoalv1.StoreObject_Service:
		if old, ok := prev.(*shoalv1.Service); ok {
			return !serviceNetworksSame(old, o.Service)
		}
	}
	return true
}

// hasIngressPort reports whether a service publishes a port in ingress
// mode (the default).
func hasIngressPort(svc *shoalv1.Service) bool {
	for _, p := range svc.GetSpec().GetEndpoint().GetPorts() {
		if p.GetPublishedPort() != 0 && (p.GetPublishMode() == "" || p.GetPublishMode() == "ingress") {
			return true
		}
	}
	return false
}
