package dispatcher

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/netdelta"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// fakeAgent applies Networks messages as the agent does, to copies (what
// it gets has been serialized).
type fakeAgent map[string]*shoalv1.NetworkState

// apply applies msgs as an agent does (agent.holdNetworks): whole states
// replace, removed ones go, deltas apply to the state held (an error if
// one does not: the agent would end its session).
func (a fakeAgent) apply(msgs []*shoalv1.Networks) error {
	for _, m := range msgs {
		if m.GetFull() {
			clear(a)
		}
		for _, s := range m.GetNetworks() {
			a[s.GetNetwork().GetMeta().GetId()] = proto.Clone(s).(*shoalv1.NetworkState)
		}
		for _, id := range m.GetRemoved() {
			delete(a, id)
		}
		for _, d := range m.GetDeltas() {
			base := a[d.GetNetworkId()]
			if base == nil {
				return fmt.Errorf("a delta of network %s, not held", d.GetNetworkId())
			}
			next, err := netdelta.Apply(base, proto.Clone(d).(*shoalv1.NetworkDelta))
			if err != nil {
				return err
			}
			a[d.GetNetworkId()] = next
		}
	}
	return nil
}

// agrees reports how the agent's states differ from want ("" if not).
func (a fakeAgent) agrees(want []*shoalv1.NetworkState) string {
	if len(a) != len(want) {
		return fmt.Sprintf("agent has %d networks, want %d", len(a), len(want))
	}
	for _, w := range want {
		id := w.GetNetwork().GetMeta().GetId()
		if !proto.Equal(a[id], w) {
			return fmt.Sprintf("network %s: agent has %v, want %v", id, summary([]*shoalv1.NetworkState{a[id]}), summary([]*shoalv1.NetworkState{w}))
		}
	}
	return ""
}

// TestNetCacheSessionsAtAnyIndexConverge: whatever changes the store goes
// through (tasks starting, stopping and ending, nodes going DOWN and
// coming back or changing address, label writes, an ingress port toggled
// (every node takes part), a network removed and re-created with the same
// id, node-local bridge networks) and whichever computations each session
// skips (sessions of the same node at different indexes, sessions
// restarting with a full set), every agent that a session just brought up
// to date holds exactly the states computed afresh for the store's
// current view; and no state the cache handed out is ever changed after.
func TestNetCacheSessionsAtAnyIndexConverge(t *testing.T) {
	for seed := range uint64(60) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { convergeRun(t, seed, 150) })
	}
}

func convergeRun(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	nodeIDs := []string{"n1", "n2", "n3", "n4"}
	store := map[string]raftstore.Object{} // by kind/id
	put := func(o raftstore.Object) { store[string(raftstore.KindOf(o))+"/"+o.GetMeta().GetId()] = o }
	del := func(o raftstore.Object) { delete(store, string(raftstore.KindOf(o))+"/"+o.GetMeta().GetId()) }
	for i, n := range nodeIDs {
		put(mkNode(n, fmt.Sprintf("192.168.250.%d:4243", i+1), ready))
	}
	bridge := mkNet("c")
	bridge.Spec.Driver = "bridge"
	put(mkNet("a"))
	put(mkNet("b"))
	put(bridge)
	put(mkSvc("s1", "", map[string]string{"a": "10.1.0.2/24"}, "a"))
	put(mkSvc("s2", "", map[string]string{"b": "10.2.0.2/24"}, "b", "a"))
	put(mkSvc("s3", "dnsrr", nil, "c"))
	var index uint64 = 1
	view := func() atIndex {
		var os []raftstore.Object
		keys := make([]string, 0, len(store))
		for k := range store {
			keys = append(keys, k)
		}
		slices.Sort(keys) // the store lists by id
		for _, k := range keys {
			os = append(os, store[k])
		}
		return atIndex{objs(os...), index}
	}
	cur := view()
	c := &netCache{latest: func() raftstore.Reader { return cur }}

	type session struct {
		node  string
		nt    *networkTracker
		agent fakeAgent
	}
	var sessions []*session
	for _, n := range nodeIDs {
		for k := range 2 { // two sessions per node: they lag differently
			nt := &networkTracker{}
			if k == 0 { // one takes deltas, one whole states only
				nt.delta = c.delta
			}
			sessions = append(sessions, &session{node: n, nt: nt, agent: fakeAgent{}})
		}
	}
	handed := map[*shoalv1.NetworkState]*shoalv1.NetworkState{} // state -> copy when handed out
	bring := func(s *session, full bool) {
		states, replaced := c.states(cur, s.node)
		for _, st := range states {
			if _, ok := handed[st]; !ok {
				handed[st] = proto.Clone(st).(*shoalv1.NetworkState)
			}
		}
		if err := s.agent.apply(s.nt.diffKnown(states, full, replaced)); err != nil {
			t.Fatalf("index %d, node %s (full %v): %v", index, s.node, full, err)
		}
		if d := s.agent.agrees(AllNodeNetworks(cur)[s.node]); d != "" {
			t.Fatalf("index %d, node %s (full %v): %s", index, s.node, full, d)
		}
	}
	for _, s := range sessions {
		bring(s, true)
	}

	tasks := 0
	services := []string{"s1", "s2", "s3"}
	for step := range steps {
		switch op := rng.IntN(11); op {
		case 0, 1: // a task starts (or is assigned) on some networks
			tasks++
			svc := services[rng.IntN(len(services))]
			var atts []string
			for _, n := range []string{"a", "b", "c"} {
				if rng.IntN(2) == 0 {
					addr := fmt.Sprintf("10.9.%d.%d/16", tasks/200, tasks%200+3)
					if rng.IntN(6) == 0 {
						addr = "" // attached, no address yet: a member without an endpoint
					}
					atts = append(atts, n+"="+addr)
				}
			}
			st := stRunning
			if rng.IntN(3) == 0 {
				st = stAssigned
			}
			put(mkNetTask(fmt.Sprintf("t%03d", tasks), svc, nodeIDs[rng.IntN(len(nodeIDs))], st, atts...))
		case 2, 3: // a task ends, is being stopped, or moves to RUNNING
			var ts []*shoalv1.Task
			for _, o := range store {
				if tk, ok := o.(*shoalv1.Task); ok {
					ts = append(ts, tk)
				}
			}
			if len(ts) == 0 {
				continue
			}
			slices.SortFunc(ts, func(x, y *shoalv1.Task) int { return strings.Compare(x.GetMeta().GetId(), y.GetMeta().GetId()) })
			tk := proto.Clone(ts[rng.IntN(len(ts))]).(*shoalv1.Task)
			switch rng.IntN(3) {
			case 0:
				tk.Status.State = stFailed
			case 1:
				tk.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN
			case 2:
				tk.Status.State = stRunning
			}
			put(tk)
		case 4: // a node goes DOWN or comes back
			n := proto.Clone(store["node/"+nodeIDs[rng.IntN(len(nodeIDs))]]).(*shoalv1.Node)
			if n.Status.State == ready {
				n.Status.State = shoalv1.NodeState_NODE_STATE_DOWN
			} else {
				n.Status.State = ready
			}
			put(n)
		case 5: // a node's underlay address changes
			i := rng.IntN(len(nodeIDs))
			n := proto.Clone(store["node/"+nodeIDs[i]]).(*shoalv1.Node)
			n.Status.Addr = fmt.Sprintf("192.168.251.%d:4243", rng.IntN(250)+1)
			put(n)
		case 6: // a label: no network changes
			sv := proto.Clone(store["service/"+services[rng.IntN(len(services))]]).(*shoalv1.Service)
			sv.Spec.Labels = map[string]string{"step": fmt.Sprint(step)}
			put(sv)
		case 7: // s2's ingress port toggled: every node takes part in a and b, or not
			sv := proto.Clone(store["service/s2"]).(*shoalv1.Service)
			if len(sv.Spec.Endpoint.Ports) == 0 {
				sv.Spec.Endpoint.Ports = []*shoalv1.PortConfig{{PublishedPort: 8080}}
			} else {
				sv.Spec.Endpoint.Ports = nil
			}
			put(sv)
		case 8: // network a removed, or re-created with the same id (same or other content)
			if o, ok := store["network/a"]; ok {
				del(o)
			} else {
				nw := mkNet("a")
				if rng.IntN(2) == 0 {
					nw.Meta.Version = uint64(step)
				}
				put(nw)
			}
		case 9: // the bridge network changes (a node-local network's states per node)
			nw := proto.Clone(store["network/c"]).(*shoalv1.Network)
			nw.Meta.Version++
			put(nw)
		case 10: // an entry that touches nothing of the networks
		}
		index++
		cur = view()
		for _, s := range sessions {
			switch r := rng.IntN(10); {
			case r < 4: // this session has its burst now
				bring(s, false)
			case r == 4 && rng.IntN(4) == 0: // a new session of the node: full set
				s.nt = &networkTracker{}
				bring(s, true)
			}
		}
	}
	for _, s := range sessions { // everyone catches up
		bring(s, false)
	}
	for st, was := range handed {
		if !proto.Equal(st, was) {
			t.Fatalf("state of network %s changed after it was handed out: %v, was %v", st.GetNetwork().GetMeta().GetId(),
				summary([]*shoalv1.NetworkState{st}), summary([]*shoalv1.NetworkState{was}))
		}
	}
}

// TestNetCacheJoinersShareTheKeptState: nodes that come to take part in a
// network whose state does not change (an ingress port widens it to every
// READY node; a node without an endpoint on it comes back from DOWN) get
// the state the others kept, not a copy of their own: each distinct
// previous state of a network costs keepUnchanged a full comparison per
// computation, so 100 such joiners made one label write compare a
// 1,000-endpoint state 101 times under the cache's lock (see
// BenchmarkLabelWriteAfterJoins).
func TestNetCacheJoinersShareTheKeptState(t *testing.T) {
	svc := mkSvc("s1", "", map[string]string{"a": "10.1.0.2/24"}, "a")
	svc.Spec.Endpoint.Ports = []*shoalv1.PortConfig{{PublishedPort: 8080}}
	os := []raftstore.Object{mkNode("n0", "192.168.250.1:4243", ready), mkNet("a"), svc,
		mkNetTask("t1", "s1", "n0", stRunning, "a=10.1.0.3/24")}
	var index uint64 = 1
	cur := atIndex{objs(os...), index}
	c := &netCache{latest: func() raftstore.Reader { return cur }}
	c.get(cur, "n0")
	for i := 1; i <= 5; i++ { // nodes join one by one
		os = append(os, mkNode(fmt.Sprintf("n%d", i), fmt.Sprintf("192.168.250.%d:4243", i+1), ready))
		index++
		cur = atIndex{objs(os...), index}
		c.get(cur, "n0")
	}
	distinct := map[*shoalv1.NetworkState]bool{}
	for node, states := range c.byNode {
		if len(states) != 1 {
			t.Fatalf("%s: %d states, want 1 (ingress)", node, len(states))
		}
		distinct[states[0]] = true
	}
	if len(c.byNode) != 6 || len(distinct) != 1 {
		t.Fatalf("%d nodes hold %d distinct states of an unchanged network, want 6 nodes, 1 state", len(c.byNode), len(distinct))
	}
}

// TestNetCacheConcurrentSessions: sessions take states and the replaced
// map from the cache and diff them while other sessions make the cache
// move on (run with -race: nothing handed out is written after); once
// the store stops changing, every agent holds the current states.
func TestNetCacheConcurrentSessions(t *testing.T) {
	nodeIDs := []string{"n1", "n2", "n3"}
	svc := mkSvc("s1", "", map[string]string{"a": "10.1.0.2/24"}, "a")
	bridge := mkNet("c")
	bridge.Spec.Driver = "bridge"
	os := []raftstore.Object{mkNet("a"), bridge, svc, mkSvc("s3", "dnsrr", nil, "c")}
	for i, n := range nodeIDs {
		os = append(os, mkNode(n, fmt.Sprintf("192.168.250.%d:4243", i+1), ready))
	}
	var cur atomic.Pointer[atIndex]
	cur.Store(&atIndex{objs(os...), 1})
	c := &netCache{latest: func() raftstore.Reader { return *cur.Load() }}
	done := make(chan struct{})
	var wg sync.WaitGroup
	agents := make([]fakeAgent, 2*len(nodeIDs))
	trackers := make([]*networkTracker, len(agents))
	for i := range agents {
		agents[i], trackers[i] = fakeAgent{}, &networkTracker{}
		if i%2 == 0 {
			trackers[i].delta = c.delta
		}
		node := nodeIDs[i%len(nodeIDs)]
		states, replaced := c.states(*cur.Load(), node)
		if err := agents[i].apply(trackers[i].diffKnown(states, true, replaced)); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				states, replaced := c.states(*cur.Load(), node)
				if err := agents[i].apply(trackers[i].diffKnown(states, false, replaced)); err != nil {
					t.Errorf("session %d of %s: %v", i, node, err)
					return
				}
			}
		}()
	}
	for step := range 300 {
		v := cur.Load()
		switch step % 4 {
		case 0, 1:
			os = append(os, mkNetTask(fmt.Sprintf("t%03d", step), "s1", nodeIDs[step%len(nodeIDs)], stRunning,
				fmt.Sprintf("a=10.1.%d.%d/16", step/200, step%200+3), fmt.Sprintf("c=10.3.%d.%d/16", step/200, step%200+3)))
		case 2:
			l := proto.Clone(svc).(*shoalv1.Service)
			l.Spec.Labels = map[string]string{"step": fmt.Sprint(step)}
			os = slices.Clone(os) // the views handed out are not changed
			os[2] = l
		case 3:
			os = append(os, mkSvc(fmt.Sprintf("x%03d", step), "", nil, "a"))
		}
		cur.Store(&atIndex{objs(os...), v.index + 1})
	}
	close(done)
	wg.Wait()
	for i := range agents {
		node := nodeIDs[i%len(nodeIDs)]
		states, replaced := c.states(*cur.Load(), node)
		if err := agents[i].apply(trackers[i].diffKnown(states, false, replaced)); err != nil {
			t.Fatalf("session %d of %s: %v", i, node, err)
		}
		if d := agents[i].agrees(AllNodeNetworks(*cur.Load())[node]); d != "" {
			t.Fatalf("session %d of %s: %s", i, node, d)
		}
	}
}
