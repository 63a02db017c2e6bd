package dispatcher

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestServiceNetworksSame changes every field of a service, one at a
// time, at every depth (each scalar set to another value, each list cut
// and grown, each map given a key, each unset message set), and checks
// that serviceNetworksSame calls the two versions different whenever the
// network states of the cluster differ: a session skips the update it
// calls the same (sessionEvents), so a field the states read and the
// comparison misses would leave every agent with a stale state. It also
// checks that the writes it is for (labels, replicas, the image) are
// called the same.
func TestServiceNetworksSame(t *testing.T) {
	base := &shoalv1.Service{
		Meta: &shoalv1.Meta{Id: "s1", Version: 7},
		Spec: &shoalv1.ServiceSpec{
			Name: "web", Labels: map[string]string{"tier": "front"}, Replicas: 3,
			Task: &shoalv1.TaskSpec{
				Container: &shoalv1.ContainerSpec{Image: "demo", Command: []string{"/demo"}},
				Networks: []*shoalv1.NetworkAttachmentConfig{
					{Target: "a", Aliases: []string{"www", "w"}},
					{Target: "b", Aliases: []string{"local"}},
				},
			},
			Update:   &shoalv1.UpdateConfig{Parallelism: 2},
			Endpoint: &shoalv1.EndpointSpec{Mode: "vip", Ports: []*shoalv1.PortConfig{{Name: "http", Protocol: "tcp", TargetPort: 80, PublishedPort: 8080}}},
		},
		Vips:        []*shoalv1.ServiceVIP{{NetworkId: "a", Address: "10.1.0.2/24"}, {NetworkId: "b", Address: "10.2.0.2/24"}},
		SpecVersion: 2,
	}
	bridge := mkNet("b")
	bridge.Spec.Driver = "bridge"
	cluster := func(svc *shoalv1.Service) map[string][]*shoalv1.NetworkState {
		return AllNodeNetworks(objs(
			mkNode("n1", "192.168.250.1:4243", ready), mkNode("n2", "192.168.250.2:4243", ready), mkNode("n3", "192.168.250.3:4243", ready),
			mkNet("a"), bridge, svc,
			mkNetTask("t1", "s1", "n1", stRunning, "a=10.1.0.3/24", "b=10.2.0.3/24"),
			mkNetTask("t2", "s1", "n2", stRunning, "a=10.1.0.4/24"),
		))
	}
	want := cluster(base)
	if len(want) != 3 || len(want["n1"]) != 2 {
		t.Fatalf("the base cluster's states: %d nodes, n1 on %d networks; want 3 nodes (n3 by the ingress port), n1 on 2", len(want), len(want["n1"]))
	}
	mutations, statesMoved := 0, 0
	calledSame := map[string]bool{}
	for n := 0; ; n++ {
		c := proto.Clone(base).(*shoalv1.Service)
		k := n
		path, ok := mutateNth(c.ProtoReflect(), &k, "service", 0)
		if !ok {
			break
		}
		if path == "service.meta.id" {
			continue // another service, not another version of this one
		}
		mutations++
		same := serviceNetworksSame(base, c)
		if !statesEqual(want, cluster(c)) {
			statesMoved++
			if same {
				t.Errorf("%s changed: the network states changed, but serviceNetworksSame says the same", path)
			}
		}
		if same {
			calledSame[path] = true
		}
	}
	if mutations < 40 || statesMoved < 10 {
		t.Fatalf("%d mutations, %d of them moving the states: the walk missed most of the service", mutations, statesMoved)
	}
	for _, p := range []string{"service.spec.labels", "service.spec.replicas", "service.spec.task.container.image", "service.meta.version", "service.spec.update.parallelism"} {
		if !calledSame[p] {
			t.Errorf("%s changed: called different (a write that changes no network state would wake every session)", p)
		}
	}
	// The pointer shortcut: one spec shared, different VIPs.
	c := proto.Clone(base).(*shoalv1.Service)
	c.Spec = base.Spec
	c.Vips[0].Address = "10.1.0.9/24"
	if serviceNetworksSame(base, c) {
		t.Error("the spec shared and a VIP moved: called the same")
	}
}

// mutateNth applies the n-th change of mutateNth's walk to m (fields in
// descriptor order, depth first) and returns its path; false when the
// walk has fewer than n+1 changes. n counts down as changes are passed.
func mutateNth(m protoreflect.Message, n *int, path string, depth int) (string, bool) {
	fds := m.Descriptor().Fields()
	for j := range fds.Len() {
		fd := fds.Get(j)
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsMap():
			if *n == 0 {
				m.Mutable(fd).Map().Set(protoreflect.ValueOfString("zz").MapKey(), otherScalar(fd.MapValue(), protoreflect.Value{}))
				return p, true
			}
			*n--
			if mp := m.Get(fd).Map(); mp.Len() > 0 {
				if *n == 0 {
					mm := m.Mutable(fd).Map()
					mm.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
						mm.Set(k, otherScalar(fd.MapValue(), v))
						return false
					})
					return p, true
				}
				*n--
			}
		case fd.IsList():
			l := m.Get(fd).List()
			if l.Len() > 0 {
				if *n == 0 {
					m.Mutable(fd).List().Truncate(l.Len() - 1)
					return p, true
				}
				*n--
			}
			if *n == 0 {
				ml := m.Mutable(fd).List()
				if fd.Message() != nil {
					e := ml.NewElement()
					if ml.Len() > 0 {
						e = protoreflect.ValueOfMessage(proto.Clone(ml.Get(0).Message().Interface()).ProtoReflect())
					}
					ml.Append(e)
				} else {
					ml.Append(otherScalar(fd, protoreflect.Value{}))
				}
				return p, true
			}
			*n--
			if fd.Message() != nil && depth < 6 {
				ml := m.Mutable(fd).List()
				for i := range ml.Len() {
					if q, ok := mutateNth(ml.Get(i).Message(), n, fmt.Sprintf("%s[%d]", p, i), depth+1); ok {
						return q, true
					}
				}
			}
		case fd.Message() != nil:
			if !m.Has(fd) {
				if *n == 0 {
					m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message()))
					return p, true
				}
				*n--
				continue
			}
			if depth < 6 {
				if q, ok := mutateNth(m.Mutable(fd).Message(), n, p, depth+1); ok {
					return q, true
				}
			}
		default:
			if *n == 0 {
				m.Set(fd, otherScalar(fd, m.Get(fd)))
				return p, true
			}
			*n--
		}
	}
	return "", false
}

// otherScalar is a value of fd's kind other than v.
func otherScalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		s := ""
		if v.IsValid() {
			s = v.String()
		}
		return protoreflect.ValueOfString(s + "x")
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte("x"))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(!(v.IsValid() && v.Bool()))
	case protoreflect.EnumKind:
		var e protoreflect.EnumNumber
		if v.IsValid() {
			e = v.Enum()
		}
		return protoreflect.ValueOfEnum(e + 1)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(intOf(v)) + 1)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(intOf(v) + 1)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(intOf(v)) + 1)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(intOf(v)) + 1)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(1.5)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(1.5)
	}
	panic(fmt.Sprintf("otherScalar: kind %v", fd.Kind()))
}

func intOf(v protoreflect.Value) int64 {
	if !v.IsValid() {
		return 0
	}
	switch x := v.Interface().(type) {
	case int32:
		return int64(x)
	case int64:
		return x
	case uint32:
		return int64(x)
	case uint64:
		return int64(x)
	}
	return 0
}

// statesEqual says whether two clusters' network states (AllNodeNetworks)
// are equal.
func statesEqual(a, b map[string][]*shoalv1.NetworkState) bool {
	if len(a) != len(b) {
		return false
	}
	for node, s := range a {
		if !slices.EqualFunc(s, b[node], func(x, y *shoalv1.NetworkState) bool { return proto.Equal(x, y) }) {
			return false
		}
	}
	return true
}

// checkSameAgainstStates walks every change of one field of base (any
// depth: mutateNth) plus the given variants, and fails where the
// cluster's network states (states(variant)) differ from base's while
// same(base, variant) says the same. It returns the paths called the
// same and how many changes moved the states.
func checkSameAgainstStates[T proto.Message](t *testing.T, name string, base T, variants map[string]func(T), states func(T) map[string][]*shoalv1.NetworkState, same func(a, b T) bool) (map[string]bool, int) {
	t.Helper()
	want := states(base)
	calledSame := map[string]bool{}
	moved := 0
	check := func(path string, c T) {
		s := same(base, c)
		if !statesEqual(want, states(c)) {
			moved++
			if s {
				t.Errorf("%s changed: the network states changed, but it is called the same", path)
			}
		}
		if s {
			calledSame[path] = true
		}
	}
	mutations := 0
	for n := 0; ; n++ {
		c := proto.Clone(base).(T)
		k := n
		path, ok := mutateNth(c.ProtoReflect(), &k, name, 0)
		if !ok {
			break
		}
		if path == name+".meta.id" {
			continue // another object, not another version of this one
		}
		mutations++
		check(path, c)
	}
	for path, change := range variants {
		c := proto.Clone(base).(T)
		change(c)
		check(path, c)
	}
	if mutations < 20 {
		t.Fatalf("%d mutations: the walk missed most of the %s", mutations, name)
	}
	return calledSame, moved
}

// TestTaskNetworksSame: no change of a task that taskNetworksSame calls
// the same changes the cluster's network states (a session skips such an
// update, so a field the states read and the comparison misses would
// leave every agent with a stale state); every task state and health,
// both desired states, are tried on a running task and on one that ended;
// and the updates it is for (a status message, a failing streak, an
// ended task's desired state) are called the same.
func TestTaskNetworksSame(t *testing.T) {
	bridge := mkNet("b")
	bridge.Spec.Driver = "bridge"
	svc := mkSvc("s1", "vip", map[string]string{"a": "10.1.0.2/24"}, "a", "b")
	states := func(task *shoalv1.Task) map[string][]*shoalv1.NetworkState {
		return AllNodeNetworks(objs(
			mkNode("n1", "192.168.250.1:4243", ready), mkNode("n2", "192.168.250.2:4243", ready),
			mkNet("a"), bridge, svc, task,
			mkNetTask("t2", "s1", "n2", stRunning, "a=10.1.0.4/24"),
		))
	}
	running := mkNetTask("t1", "s1", "n1", stRunning, "a=10.1.0.3/24", "b=10.2.0.3/24")
	running.Meta.Version = 9
	running.Slot = 1
	running.Networks[0].Aliases = []string{"www"}
	running.Status.Message = "started"
	running.Status.Health = shoalv1.TaskHealth_TASK_HEALTH_HEALTHY
	running.Status.HealthFailingStreak = 1
	running.Spec = &shoalv1.TaskSpec{Container: &shoalv1.ContainerSpec{Image: "demo"}}
	ended := proto.Clone(running).(*shoalv1.Task)
	ended.Status.State = stFailed
	variants := map[string]func(*shoalv1.Task){}
	for v := range shoalv1.TaskState_name {
		st := shoalv1.TaskState(v)
		variants["status.state="+st.String()] = func(t *shoalv1.Task) { t.Status.State = st }
		variants["desired_state="+st.String()] = func(t *shoalv1.Task) { t.DesiredState = st }
	}
	for v := range shoalv1.TaskHealth_name {
		h := shoalv1.TaskHealth(v)
		variants["status.health="+h.String()] = func(t *shoalv1.Task) { t.Status.Health = h }
	}
	variants["node_id="] = func(t *shoalv1.Task) { t.NodeId = "" }
	variants["node_id=n2"] = func(t *shoalv1.Task) { t.NodeId = "n2" }
	variants["networks=nil"] = func(t *shoalv1.Task) { t.Networks = nil }
	variants["networks[0].address="] = func(t *shoalv1.Task) { t.Networks[0].Address = "" }

	calledSame, moved := checkSameAgainstStates(t, "task", running, variants, states, taskNetworksSame)
	if moved < 10 {
		t.Fatalf("only %d changes of a running task moved the states", moved)
	}
	for _, p := range []string{"task.status.message", "task.status.health_failing_streak", "task.status.timestamp", "task.meta.version", "task.slot", "task.spec.container.image"} {
		if !calledSame[p] {
			t.Errorf("running task: %s changed: called different (a write that changes no network state would wake every session)", p)
		}
	}
	calledSame, _ = checkSameAgainstStates(t, "task", ended, variants, states, taskNetworksSame)
	for _, p := range []string{"task.status.message", "desired_state=TASK_STATE_SHUTDOWN", "task.networks[0].address", "node_id="} {
		if !calledSame[p] {
			t.Errorf("ended task: %s changed: called different", p)
		}
	}
	// The pointer shortcut: attachments shared, state moved.
	c := proto.Clone(running).(*shoalv1.Task)
	c.Networks = running.Networks
	c.Status.State = shoalv1.TaskState_TASK_STATE_STARTING
	if taskNetworksSame(running, c) {
		t.Error("attachments shared and the state moved: called the same")
	}
}

// TestNodeNetworksSame: as TestTaskNetworksSame for a node that has a
// task on an overlay network, and one that has none while a service
// publishes an ingress port (every node not DOWN takes part); every node
// state is tried; a node's labels, availability and gossip state are
// called the same.
func TestNodeNetworksSame(t *testing.T) {
	ingress := mkSvc("s2", "vip", map[string]string{"a": "10.1.0.9/24"}, "a")
	ingress.Spec.Endpoint.Ports = []*shoalv1.PortConfig{{Protocol: "tcp", TargetPort: 80, PublishedPort: 8080}}
	for _, withIngress := range []bool{false, true} {
		states := func(n *shoalv1.Node) map[string][]*shoalv1.NetworkState {
			os := []raftstore.Object{n, mkNode("n2", "192.168.250.2:4243", ready), mkNet("a"),
				mkSvc("s1", "vip", map[string]string{"a": "10.1.0.2/24"}, "a"),
				mkNetTask("t1", "s1", "n1", stRunning, "a=10.1.0.3/24"), mkNetTask("t2", "s1", "n2", stRunning, "a=10.1.0.4/24")}
			if withIngress {
				// n1 runs nothing of s2, yet answers its port.
				os = append(os, ingress, mkNetTask("t3", "s2", "n2", stRunning, "a=10.1.0.5/24"))
			}
			return AllNodeNetworks(objs(os...))
		}
		base := mkNode("n1", "192.168.250.1:4243", ready)
		base.Meta.Version = 4
		base.Spec.Labels = map[string]string{"zone": "a"}
		base.Status.GossipState = "alive"
		base.Status.GossipAddr = "192.168.250.1:7946"
		variants := map[string]func(*shoalv1.Node){}
		for v := range shoalv1.NodeState_name {
			st := shoalv1.NodeState(v)
			variants["status.state="+st.String()] = func(n *shoalv1.Node) { n.Status.State = st }
		}
		variants["status.addr=port"] = func(n *shoalv1.Node) { n.Status.Addr = "192.168.250.1:5000" }
		variants["status.addr=host"] = func(n *shoalv1.Node) { n.Status.Addr = "192.168.250.7:4243" }
		calledSame, moved := checkSameAgainstStates(t, "node", base, variants, states, nodeNetworksSame)
		if moved < 2 {
			t.Fatalf("ingress %v: only %d changes of the node moved the states", withIngress, moved)
		}
		for _, p := range []string{"node.spec.labels", "node.status.gossip_state", "node.status.last_heartbeat", "node.meta.version", "status.addr=port"} {
			if !calledSame[p] {
				t.Errorf("ingress %v: %s changed: called different", withIngress, p)
			}
		}
	}
}
