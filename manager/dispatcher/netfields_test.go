package dispatcher

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
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
	sameStates := func(a, b map[string][]*shoalv1.NetworkState) bool {
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
		if !sameStates(want, cluster(c)) {
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
