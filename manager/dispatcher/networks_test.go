package dispatcher

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// memReader is a Reader over fixed objects.
type memReader map[raftstore.Kind][]raftstore.Object

func (m memReader) Get(k raftstore.Kind, id string) raftstore.Object {
	for _, o := range m[k] {
		if o.GetMeta().GetId() == id {
			return o
		}
	}
	return nil
}
func (m memReader) List(k raftstore.Kind) []raftstore.Object { return m[k] }
func (m memReader) Find(k raftstore.Kind, index, value string) []raftstore.Object {
	return nil
}
func (m memReader) Index() uint64 { return 1 }

func objs(os ...raftstore.Object) memReader {
	m := memReader{}
	for _, o := range os {
		m[raftstore.KindOf(o)] = append(m[raftstore.KindOf(o)], o)
	}
	return m
}

var (
	stAssigned = shoalv1.TaskState_TASK_STATE_ASSIGNED
	stRunning  = shoalv1.TaskState_TASK_STATE_RUNNING
	stFailed   = shoalv1.TaskState_TASK_STATE_FAILED
	stPending  = shoalv1.TaskState_TASK_STATE_PENDING
)

func mkNode(id, addr string, state shoalv1.NodeState) *shoalv1.Node {
	return &shoalv1.Node{Meta: &shoalv1.Meta{Id: id}, Spec: &shoalv1.NodeSpec{}, Status: &shoalv1.NodeStatus{State: state, Addr: addr}}
}

var ready = shoalv1.NodeState_NODE_STATE_READY

func mkNet(id string) *shoalv1.Network {
	return &shoalv1.Network{Meta: &shoalv1.Meta{Id: id}, Spec: &shoalv1.NetworkSpec{Name: "net-" + id, Driver: "overlay"}, Vni: 4096, Subnet: "10.1.0.0/24"}
}

func mkSvc(id, mode string, vips map[string]string, nets ...string) *shoalv1.Service {
	s := &shoalv1.Service{Meta: &shoalv1.Meta{Id: id}, Spec: &shoalv1.ServiceSpec{Name: "svc-" + id, Task: &shoalv1.TaskSpec{}, Endpoint: &shoalv1.EndpointSpec{Mode: mode}}}
	for _, n := range nets {
		s.Spec.Task.Networks = append(s.Spec.Task.Networks, &shoalv1.NetworkAttachmentConfig{Target: n, Aliases: []string{id + "-alias"}})
	}
	for n, a := range vips {
		s.Vips = append(s.Vips, &shoalv1.ServiceVIP{NetworkId: n, Address: a})
	}
	return s
}

// mkNetTask: a task of service svc on node with attachments "net=addr".
func mkNetTask(id, svc, node string, state shoalv1.TaskState, atts ...string) *shoalv1.Task {
	t := &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: svc, ServiceName: "svc-" + svc, NodeId: node,
		DesiredState: stRunning, Status: &shoalv1.TaskStatus{State: state}}
	for _, a := range atts {
		n, addr, _ := strings.Cut(a, "=")
		t.Networks = append(t.Networks, &shoalv1.NetworkAttachment{NetworkId: n, Address: addr, Mac: "m-" + id})
	}
	return t
}

func stopping(t *shoalv1.Task) *shoalv1.Task {
	t.DesiredState = shoalv1.TaskState_TASK_STATE_SHUTDOWN
	return t
}

// summary: "net: task=addr@nodeaddr/STATE ... | vip svc=addr(mode) ..." per network.
func summary(states []*shoalv1.NetworkState) []string {
	var out []string
	for _, s := range states {
		var parts []string
		for _, e := range s.GetEndpoints() {
			parts = append(parts, e.GetTaskId()+"="+e.GetAddress()+"@"+e.GetNodeAddr()+"/"+strings.TrimPrefix(e.GetState().String(), "TASK_STATE_"))
		}
		slices.Sort(parts)
		for _, v := range s.GetVips() {
			parts = append(parts, fmt.Sprintf("vip %s=%s(%s)", v.GetServiceName(), v.GetAddress(), v.GetEndpointMode()))
		}
		out = append(out, s.GetNetwork().GetMeta().GetId()+": "+strings.Join(parts, " "))
	}
	return out
}

func TestNodeNetworks(t *testing.T) {
	base := []raftstore.Object{
		mkNode("n1", "192.168.250.1:4243", ready), mkNode("n2", "192.168.250.2", ready),
		mkNode("n3", "192.168.250.3:4243", shoalv1.NodeState_NODE_STATE_DOWN),
		mkNet("a"), mkNet("b"),
		mkSvc("s1", "", map[string]string{"a": "10.1.0.2/24"}, "a"),
		mkSvc("s2", "dnsrr", nil, "a", "b"),
	}
	for _, tt := range []struct {
		name string
		more []raftstore.Object
		node string
		want []string
	}{
		{"no task on the node: no network", []raftstore.Object{mkNetTask("t1", "s1", "n2", stRunning, "a=10.1.0.3/24")}, "n1", nil},
		{"peers of a network the node takes part in, with VIPs",
			[]raftstore.Object{mkNetTask("t1", "s1", "n1", stRunning, "a=10.1.0.3/24"), mkNetTask("t2", "s2", "n2", stAssigned, "a=10.1.0.4/24", "b=10.1.0.5/24")}, "n1",
			[]string{"a: t1=10.1.0.3/24@192.168.250.1/RUNNING t2=10.1.0.4/24@192.168.250.2/ASSIGNED vip svc-s1=10.1.0.2/24(vip) vip svc-s2=(dnsrr)"}},
		{"the other node takes part in both",
			[]raftstore.Object{mkNetTask("t1", "s1", "n1", stRunning, "a=10.1.0.3/24"), mkNetTask("t2", "s2", "n2", stAssigned, "a=10.1.0.4/24", "b=10.1.0.5/24")}, "n2",
			[]string{"a: t1=10.1.0.3/24@192.168.250.1/RUNNING t2=10.1.0.4/24@192.168.250.2/ASSIGNED vip svc-s1=10.1.0.2/24(vip) vip svc-s2=(dnsrr)",
				"b: t2=10.1.0.5/24@192.168.250.2/ASSIGNED vip svc-s2=(dnsrr)"}},
		{"ended, pending and DOWN-node tasks are no endpoints",
			[]raftstore.Object{mkNetTask("t1", "s1", "n1", stRunning, "a=10.1.0.3/24"), mkNetTask("old", "s1", "n2", stFailed, "a=10.1.0.9/24"),
				mkNetTask("p", "s1", "", stPending, "a=10.1.0.8/24"), mkNetTask("dead", "s1", "n3", stRunning, "a=10.1.0.7/24")}, "n1",
			[]string{"a: t1=10.1.0.3/24@192.168.250.1/RUNNING vip svc-s1=10.1.0.2/24(vip) vip svc-s2=(dnsrr)"}},
		{"a service with no live task is still listed (its name known, its VIP refusing)",
			[]raftstore.Object{mkNetTask("t1", "s1", "n1", stRunning, "a=10.1.0.3/24"), mkSvc("s0", "", map[string]string{"a": "10.1.0.20/24"}, "a")}, "n1",
			[]string{"a: t1=10.1.0.3/24@192.168.250.1/RUNNING vip svc-s0=10.1.0.20/24(vip) vip svc-s1=10.1.0.2/24(vip) vip svc-s2=(dnsrr)"}},
		{"a task being stopped is delivered SHUTDOWN (no DNS/VIP answer) but still programmed",
			[]raftstore.Object{mkNetTask("t1", "s1", "n1", stRunning, "a=10.1.0.3/24"), stopping(mkNetTask("t9", "s1", "n2", stRunning, "a=10.1.0.9/24"))}, "n1",
			[]string{"a: t1=10.1.0.3/24@192.168.250.1/RUNNING t9=10.1.0.9/24@192.168.250.2/SHUTDOWN vip svc-s1=10.1.0.2/24(vip) vip svc-s2=(dnsrr)"}},
		{"a DOWN node takes part in nothing", []raftstore.Object{mkNetTask("dead", "s1", "n3", stRunning, "a=10.1.0.7/24")}, "n3", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := summary(NodeNetworks(objs(append(slices.Clone(base), tt.more...)...), tt.node))
			if !slices.Equal(got, tt.want) {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
		})
	}
}

func TestNetworkTrackerDiff(t *testing.T) {
	a := &shoalv1.NetworkState{Network: mkNet("a")}
	b := &shoalv1.NetworkState{Network: mkNet("b")}
	var nt networkTracker
	msgs := nt.diff([]*shoalv1.NetworkState{a, b}, true)
	if len(msgs) != 1 || !msgs[0].GetFull() || len(msgs[0].GetNetworks()) != 2 {
		t.Fatalf("full: %v", msgs)
	}
	if msgs := nt.diff([]*shoalv1.NetworkState{a, b}, false); msgs != nil {
		t.Fatalf("no change sent %v", msgs)
	}
	b2 := proto.Clone(b).(*shoalv1.NetworkState)
	b2.Endpoints = []*shoalv1.Endpoint{{TaskId: "t"}}
	msgs = nt.diff([]*shoalv1.NetworkState{b2}, false)
	if len(msgs) != 1 || msgs[0].GetFull() || len(msgs[0].GetNetworks()) != 1 || msgs[0].GetNetworks()[0] != b2 || !slices.Equal(msgs[0].GetRemoved(), []string{"a"}) {
		t.Fatalf("diff: %v", msgs)
	}
}

func TestChunkNetworks(t *testing.T) {
	var states []*shoalv1.NetworkState
	for i := 0; i < 10; i++ {
		s := &shoalv1.NetworkState{Network: mkNet(fmt.Sprint(i))}
		for j := 0; j < 100; j++ {
			s.Endpoints = append(s.Endpoints, &shoalv1.Endpoint{TaskId: fmt.Sprintf("task-%03d-%03d", i, j), Address: "10.1.0.1/24", NodeAddr: "192.168.250.1"})
		}
		states = append(states, s)
	}
	one := proto.Size(states[0])
	msgs := chunkNetworks(true, states, []string{"x"}, nil, 3*one)
	n := 0
	for i, m := range msgs {
		if m.GetFull() != (i == 0) {
			t.Fatalf("chunk %d full=%v", i, m.GetFull())
		}
		if m.GetMore() != (i < len(msgs)-1) {
			t.Fatalf("chunk %d of %d: more=%v", i, len(msgs), m.GetMore())
		}
		if sz := proto.Size(m); sz > 3*one+64 {
			t.Fatalf("chunk %d: %d bytes > %d", i, sz, 3*one)
		}
		n += len(m.GetNetworks())
	}
	if n != 10 || len(msgs) < 4 || !slices.Equal(msgs[0].GetRemoved(), []string{"x"}) {
		t.Fatalf("%d networks in %d chunks", n, len(msgs))
	}
	// A network bigger than the limit goes alone.
	msgs = chunkNetworks(false, states[:2], nil, nil, one/2)
	if len(msgs) != 2 || len(msgs[0].GetNetworks()) != 1 {
		t.Fatalf("oversized: %d chunks", len(msgs))
	}
}

// TestSessionDeliversNetworks: over real gRPC, a node gets its networks'
// full state after its assignments, then updates when a peer task starts
// on another node, and the peer's endpoints withdrawn when that node goes
// DOWN; and the network removed once its own task ended.
func TestSessionDeliversNetworks(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	update := func(fn func(tx raftstore.WriteTx) error) {
		t.Helper()
		if _, err := s.Update(ctx, fn); err != nil {
			t.Fatal(err)
		}
	}
	update(func(tx raftstore.WriteTx) error {
		for _, o := range []raftstore.Object{mkNode("n1", "192.168.250.1:4243", ready), mkNode("n2", "192.168.250.2:4243", ready),
			mkNet("a"), mkSvc("s1", "", map[string]string{"a": "10.1.0.2/24"}, "a"),
			mkNetTask("t1", "s1", "n1", stRunning, "a=10.1.0.3/24")} {
			if err := tx.Create(o); err != nil {
				return err
			}
		}
		return nil
	})
	logger := slog.New(slog.DiscardHandler)
	d := New(Config{Store: s, Logger: logger, Managers: func() []string { return []string{"solo:4242"} }})
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(runCtx) }()
	t.Cleanup(func() { stopRun(); <-runDone })
	conn := serveDispatcher(t, d, asNode1)
	var stream shoalv1.Dispatcher_SessionClient
	var err error
	for {
		stream, err = shoalv1.NewDispatcherClient(conn).Session(ctx)
		if err == nil {
			err = stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Hello{Hello: &shoalv1.AgentHello{Addr: "192.168.250.1:4243"}}})
		}
		var first *shoalv1.SessionMessage
		if err == nil {
			first, err = stream.Recv()
		}
		if err == nil && first.GetWelcome() != nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no session: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval while Run starts
	}
	// Keep the session alive: heartbeats from a goroutine.
	go heartbeat(ctx, stream, 100*time.Millisecond)
	// next returns the next Networks message, checking order: the first
	// after the full assignments.
	sawAssignments := false
	next := func() *shoalv1.Networks {
		t.Helper()
		for {
			msg, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if msg.GetAssignments() != nil {
				sawAssignments = true
			}
			if n := msg.GetNetworks(); n != nil {
				if !sawAssignments {
					t.Fatal("networks before the assignments")
				}
				return n
			}
		}
	}
	// nextMatching skips messages until want holds (several commits may
	// each give a message).
	nextMatching := func(what string, want func(*shoalv1.Networks) bool) *shoalv1.Networks {
		t.Helper()
		for {
			n := next()
			if want(n) {
				return n
			}
			t.Logf("%s: skipping %v", what, summary(n.GetNetworks()))
		}
	}
	full := next()
	if !full.GetFull() || !slices.Equal(summary(full.GetNetworks()), []string{"a: t1=10.1.0.3/24@192.168.250.1/RUNNING vip svc-s1=10.1.0.2/24(vip)"}) {
		t.Fatalf("full set: %v %v", full.GetFull(), summary(full.GetNetworks()))
	}
	// A peer task is assigned on n2: n1 gets it.
	update(func(tx raftstore.WriteTx) error {
		return tx.Create(mkNetTask("t2", "s1", "n2", stAssigned, "a=10.1.0.4/24"))
	})
	nextMatching("peer added", func(n *shoalv1.Networks) bool {
		return !n.GetFull() && slices.Equal(summary(n.GetNetworks()), []string{"a: t1=10.1.0.3/24@192.168.250.1/RUNNING t2=10.1.0.4/24@192.168.250.2/ASSIGNED vip svc-s1=10.1.0.2/24(vip)"})
	})
	// n2 goes DOWN: its endpoint is withdrawn.
	update(func(tx raftstore.WriteTx) error {
		n, _ := raftstore.Get[*shoalv1.Node](tx, "n2")
		n = proto.Clone(n).(*shoalv1.Node)
		n.Status.State = shoalv1.NodeState_NODE_STATE_DOWN
		return tx.Update(n)
	})
	nextMatching("peer withdrawn", func(n *shoalv1.Networks) bool {
		return slices.Equal(summary(n.GetNetworks()), []string{"a: t1=10.1.0.3/24@192.168.250.1/RUNNING vip svc-s1=10.1.0.2/24(vip)"})
	})
	// n1's own task ends: the network is removed.
	update(func(tx raftstore.WriteTx) error {
		tk, _ := raftstore.Get[*shoalv1.Task](tx, "t1")
		tk = proto.Clone(tk).(*shoalv1.Task)
		tk.Status.State = stFailed
		return tx.Update(tk)
	})
	nextMatching("network removed", func(n *shoalv1.Networks) bool {
		return len(n.GetNetworks()) == 0 && slices.Equal(n.GetRemoved(), []string{"a"})
	})
	stream.CloseSend()
}

// TestNodeNetworksIngress: a network carrying a service with an ingress
// port reaches every node that is not DOWN, with the ports in its VIP
// state; a host-mode port only reaches the nodes running a task.
func TestNodeNetworksIngress(t *testing.T) {
	withPorts := func(s *shoalv1.Service, mode string) *shoalv1.Service {
		s.Spec.Endpoint.Ports = []*shoalv1.PortConfig{{PublishedPort: 8080, TargetPort: 80, PublishMode: mode}}
		return s
	}
	nodes := []raftstore.Object{
		mkNode("n1", "192.168.250.1", ready), mkNode("n2", "192.168.250.2", ready),
		mkNode("n3", "192.168.250.3", shoalv1.NodeState_NODE_STATE_DOWN), mkNet("a"),
	}
	task := mkNetTask("t1", "s1", "n2", stRunning, "a=10.1.0.3/24")
	for _, mode := range []string{"", "ingress"} {
		r := objs(append(slices.Clone(nodes), withPorts(mkSvc("s1", "", map[string]string{"a": "10.1.0.2/24"}, "a"), mode), task)...)
		all := AllNodeNetworks(r)
		if len(all["n1"]) != 1 || len(all["n2"]) != 1 || len(all["n3"]) != 0 {
			t.Fatalf("mode %q: n1 %d, n2 %d, n3 %d networks; want 1, 1, 0", mode, len(all["n1"]), len(all["n2"]), len(all["n3"]))
		}
		v := all["n1"][0].GetVips()
		if len(v) != 1 || len(v[0].GetPorts()) != 1 || v[0].GetPorts()[0].GetPublishedPort() != 8080 {
			t.Errorf("mode %q: n1's VIP state lacks the port: %v", mode, v)
		}
		if eps := all["n1"][0].GetEndpoints(); len(eps) != 1 || eps[0].GetNodeAddr() != "192.168.250.2" {
			t.Errorf("mode %q: n1's endpoints %v", mode, eps)
		}
	}
	r := objs(append(slices.Clone(nodes), withPorts(mkSvc("s1", "", map[string]string{"a": "10.1.0.2/24"}, "a"), "host"), task)...)
	if all := AllNodeNetworks(r); len(all["n1"]) != 0 || len(all["n2"]) != 1 {
		t.Errorf("host mode: n1 %d, n2 %d networks; want 0, 1", len(all["n1"]), len(all["n2"]))
	}
}

// TestNodeNetworksBridgeLocal: a bridge network's state on a node lists
// only that node's endpoints (its names and VIPs answer local tasks only);
// an overlay network in the same cluster still lists every node's; an
// ingress port does not widen a bridge network to nodes without a task.
func TestNodeNetworksBridgeLocal(t *testing.T) {
	br := &shoalv1.Network{Meta: &shoalv1.Meta{Id: "br"}, Spec: &shoalv1.NetworkSpec{Name: "net-br", Driver: "bridge"}, Subnet: "10.2.0.0/24"}
	svc := mkSvc("s1", "", map[string]string{"br": "10.2.0.2/24", "a": "10.1.0.2/24"}, "br", "a")
	svc.Spec.Endpoint.Ports = []*shoalv1.PortConfig{{PublishedPort: 8080, TargetPort: 80}}
	r := objs(mkNode("n1", "192.168.250.1", ready), mkNode("n2", "192.168.250.2", ready), mkNode("n3", "192.168.250.3", ready),
		mkNet("a"), br, svc,
		mkNetTask("t1", "s1", "n1", stRunning, "br=10.2.0.3/24", "a=10.1.0.3/24"),
		mkNetTask("t2", "s1", "n2", stRunning, "br=10.2.0.4/24", "a=10.1.0.4/24"),
		mkNetTask("t3", "s1", "n2", stRunning, "br=10.2.0.5/24", "a=10.1.0.5/24"))
	all := AllNodeNetworks(r)
	for node, want := range map[string][]string{
		"n1": {"a: t1=10.1.0.3/24@192.168.250.1/RUNNING t2=10.1.0.4/24@192.168.250.2/RUNNING t3=10.1.0.5/24@192.168.250.2/RUNNING vip svc-s1=10.1.0.2/24(vip)",
			"br: t1=10.2.0.3/24@192.168.250.1/RUNNING vip svc-s1=10.2.0.2/24(vip)"},
		"n2": {"a: t1=10.1.0.3/24@192.168.250.1/RUNNING t2=10.1.0.4/24@192.168.250.2/RUNNING t3=10.1.0.5/24@192.168.250.2/RUNNING vip svc-s1=10.1.0.2/24(vip)",
			"br: t2=10.2.0.4/24@192.168.250.2/RUNNING t3=10.2.0.5/24@192.168.250.2/RUNNING vip svc-s1=10.2.0.2/24(vip)"},
		// n3 runs no task: the overlay for the ingress port, no bridge.
		"n3": {"a: t1=10.1.0.3/24@192.168.250.1/RUNNING t2=10.1.0.4/24@192.168.250.2/RUNNING t3=10.1.0.5/24@192.168.250.2/RUNNING vip svc-s1=10.1.0.2/24(vip)"},
	} {
		if got := summary(all[node]); !slices.Equal(got, want) {
			t.Errorf("%s: got\n  %s\nwant\n  %s", node, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	}
}
