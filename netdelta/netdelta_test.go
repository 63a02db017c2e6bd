package netdelta

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

var testNet = &shoalv1.Network{Meta: &shoalv1.Meta{Id: "net1"}, Vni: 4096, Subnet: "10.0.0.0/16"}

func ep(task, addr string, state shoalv1.TaskState) *shoalv1.Endpoint {
	return &shoalv1.Endpoint{TaskId: task, ServiceId: "svc", ServiceName: "web", Address: addr, NodeId: "n-" + task,
		NodeAddr: "192.168.250.1", State: state}
}

// randomState is a state of testNet with endpoints and VIPs drawn from a
// small key space, each id once, sorted as the manager sorts them.
func randomState(r *rand.Rand) *shoalv1.NetworkState {
	ns := &shoalv1.NetworkState{Network: testNet}
	for i := range 40 {
		if r.IntN(3) == 0 {
			continue
		}
		e := ep(fmt.Sprintf("t%02d", i), fmt.Sprintf("10.0.0.%d/16", r.IntN(4)+2), shoalv1.TaskState(r.IntN(3)+3))
		if r.IntN(4) == 0 {
			e.Health = shoalv1.TaskHealth(r.IntN(3))
		}
		if r.IntN(5) == 0 {
			e.Aliases = []string{"a", fmt.Sprint(r.IntN(2))}
		}
		ns.Endpoints = append(ns.Endpoints, e)
	}
	for i := range 6 {
		if r.IntN(2) == 0 {
			continue
		}
		ns.Vips = append(ns.Vips, &shoalv1.ServiceVIPState{ServiceId: fmt.Sprintf("s%d", i), ServiceName: "web",
			Address: fmt.Sprintf("10.0.1.%d/16", r.IntN(3)+1), EndpointMode: "vip"})
	}
	return ns
}

// mutate is next of a small change to prev (what a task's event does):
// an endpoint added, changed or gone, a VIP changed, added or gone.
func mutate(r *rand.Rand, prev *shoalv1.NetworkState) *shoalv1.NetworkState {
	next := &shoalv1.NetworkState{Network: prev.GetNetwork(), Endpoints: slices.Clone(prev.GetEndpoints()), Vips: slices.Clone(prev.GetVips())}
	for range r.IntN(3) + 1 {
		switch k := r.IntN(6); {
		case k == 0 && len(next.Endpoints) > 0:
			i := r.IntN(len(next.Endpoints))
			next.Endpoints = slices.Delete(next.Endpoints, i, i+1)
		case k <= 2 && len(next.Endpoints) > 0:
			i := r.IntN(len(next.Endpoints))
			c := proto.Clone(next.Endpoints[i]).(*shoalv1.Endpoint)
			c.State, c.Health = shoalv1.TaskState(r.IntN(3)+3), shoalv1.TaskHealth(r.IntN(3))
			next.Endpoints[i] = c
		case k == 3:
			e := ep(fmt.Sprintf("t%02d", r.IntN(40)), "10.0.0.9/16", shoalv1.TaskState_TASK_STATE_RUNNING)
			i, found := slices.BinarySearchFunc(next.Endpoints, e.TaskId, func(x *shoalv1.Endpoint, id string) int { return strings.Compare(x.TaskId, id) })
			if found {
				next.Endpoints[i] = e
			} else {
				next.Endpoints = slices.Insert(next.Endpoints, i, e)
			}
		case k == 4 && len(next.Vips) > 0:
			i := r.IntN(len(next.Vips))
			c := proto.Clone(next.Vips[i]).(*shoalv1.ServiceVIPState)
			c.Aliases = append(c.Aliases, "x")
			next.Vips[i] = c
		case len(next.Vips) > 0:
			next.Vips = slices.Delete(next.Vips, 0, 1)
		}
	}
	return next
}

// TestApplyOfDiffIsNext: for random pairs of states (unrelated ones, and
// small changes as a task's event makes), Apply(prev, Diff(prev, next))
// is next, in next's order, and shares base's unchanged entries.
func TestApplyOfDiffIsNext(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	deltas, wholes := 0, 0
	for i := range 4000 {
		prev := randomState(r)
		var next *shoalv1.NetworkState
		if i%2 == 0 {
			next = randomState(r)
		} else {
			next = mutate(r, prev)
		}
		d := Diff(prev, next)
		if d == nil {
			wholes++
			continue
		}
		deltas++
		got, err := Apply(prev, d)
		if err != nil {
			t.Fatalf("case %d: Apply: %v\nprev %v\nnext %v\ndelta %v", i, err, prev, next, d)
		}
		if !proto.Equal(got, next) {
			t.Fatalf("case %d: Apply(prev, Diff(prev, next)) != next\nprev %v\nnext %v\ndelta %v\ngot  %v", i, prev, next, d, got)
		}
		if Equal(prev, next) != proto.Equal(prev, next) || Equal(prev, got) != proto.Equal(prev, got) {
			t.Fatalf("case %d: Equal differs from proto.Equal", i)
		}
		if Empty(d) != proto.Equal(prev, next) {
			t.Fatalf("case %d: Empty(delta) = %v for states equal = %v", i, Empty(d), proto.Equal(prev, next))
		}
		// Diff lists only what differs.
		for _, u := range d.GetUpsert() {
			for _, p := range prev.GetEndpoints() {
				if p.GetTaskId() == u.GetTaskId() && proto.Equal(p, u) {
					t.Fatalf("case %d: endpoint %s upserted unchanged", i, u.GetTaskId())
				}
			}
		}
		// A small change is sent as a delta of that size.
		if i%2 == 1 && len(d.GetUpsert())+len(d.GetRemoved()) > 3 {
			t.Fatalf("case %d: a change of at most 3 endpoints gave a delta of %d", i, len(d.GetUpsert())+len(d.GetRemoved()))
		}
	}
	if deltas < 1500 || wholes == 0 {
		t.Fatalf("deltas %d, wholes %d: the cases did not cover both outcomes", deltas, wholes)
	}
}

func TestDiffRefuses(t *testing.T) {
	base := &shoalv1.NetworkState{Network: testNet, Endpoints: []*shoalv1.Endpoint{
		ep("a", "10.0.0.2/16", 5), ep("b", "10.0.0.3/16", 5), ep("c", "10.0.0.4/16", 5)}}
	changedNet := proto.Clone(testNet).(*shoalv1.Network)
	changedNet.Subnet = "10.1.0.0/16"
	cases := map[string]*shoalv1.NetworkState{
		"network changed": {Network: changedNet, Endpoints: base.Endpoints},
		"unsorted":        {Network: testNet, Endpoints: []*shoalv1.Endpoint{base.Endpoints[1], base.Endpoints[0]}},
		"an id twice":     {Network: testNet, Endpoints: []*shoalv1.Endpoint{base.Endpoints[0], base.Endpoints[0]}},
		"all changed":     {Network: testNet, Endpoints: []*shoalv1.Endpoint{ep("a", "10.0.0.2/16", 4), ep("b", "10.0.0.3/16", 4), ep("c", "10.0.0.4/16", 4)}},
	}
	for name, next := range cases {
		if d := Diff(base, next); d != nil {
			t.Errorf("%s: Diff gave %v, want nil (send whole)", name, d)
		}
	}
	if d := Diff(base, base); d == nil || !Empty(d) {
		t.Errorf("equal states: Diff = %v, want an empty delta", d)
	}
	// Equal but not the same network pointer: still a delta.
	same := &shoalv1.NetworkState{Network: proto.Clone(testNet).(*shoalv1.Network), Endpoints: base.Endpoints[:2]}
	if d := Diff(base, same); d == nil || len(d.GetRemoved()) != 1 || d.GetRemoved()[0] != "c" {
		t.Errorf("one endpoint gone: Diff = %v, want removed [c]", d)
	}
}

func TestApplyRejectsAStateNotTheManagers(t *testing.T) {
	base := &shoalv1.NetworkState{Network: testNet, Endpoints: []*shoalv1.Endpoint{
		ep("a", "10.0.0.2/16", 5), ep("b", "10.0.0.3/16", 5)}}
	cases := []struct {
		name string
		d    *shoalv1.NetworkDelta
		want string
	}{
		{"another network", &shoalv1.NetworkDelta{NetworkId: "net2", Endpoints: 2}, "applied to network"},
		{"removal not held", &shoalv1.NetworkDelta{NetworkId: "net1", Removed: []string{"z"}, Endpoints: 1}, "not held"},
		{"removed twice", &shoalv1.NetworkDelta{NetworkId: "net1", Removed: []string{"a", "a"}, Endpoints: 1}, "removed twice"},
		{"count differs", &shoalv1.NetworkDelta{NetworkId: "net1", Upsert: []*shoalv1.Endpoint{ep("c", "10.0.0.4/16", 5)}, Endpoints: 2}, "the manager has 2"},
		{"vip count differs", &shoalv1.NetworkDelta{NetworkId: "net1", Endpoints: 2, Vips: 1}, "the manager has 2 and 1"},
		{"upserts out of order", &shoalv1.NetworkDelta{NetworkId: "net1", Upsert: []*shoalv1.Endpoint{ep("d", "", 5), ep("c", "", 5)}, Endpoints: 4}, "order"},
		{"upserted and removed", &shoalv1.NetworkDelta{NetworkId: "net1", Upsert: []*shoalv1.Endpoint{ep("a", "", 5)}, Removed: []string{"a"}, Endpoints: 1}, "both upserted and removed"},
		{"upserted and removed, past the end", &shoalv1.NetworkDelta{NetworkId: "net1", Upsert: []*shoalv1.Endpoint{ep("c", "", 5)}, Removed: []string{"c"}, Endpoints: 2}, ""},
	}
	for _, c := range cases {
		got, err := Apply(base, c.d)
		if err == nil {
			t.Errorf("%s: Apply gave %v, want an error", c.name, got)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want it to say %q", c.name, err, c.want)
		}
	}
	// base itself is untouched by a delta that applies.
	before := proto.Clone(base)
	got, err := Apply(base, &shoalv1.NetworkDelta{NetworkId: "net1", Upsert: []*shoalv1.Endpoint{ep("a", "10.0.0.9/16", 5)}, Removed: []string{"b"}, Endpoints: 1})
	if err != nil || len(got.GetEndpoints()) != 1 || got.GetEndpoints()[0].GetAddress() != "10.0.0.9/16" {
		t.Fatalf("Apply = %v, %v", got, err)
	}
	if !proto.Equal(base, before) {
		t.Fatalf("Apply changed its base: %v", base)
	}
}

// TestEqualComparesEveryField: endpointEqual and vipEqual find two values
// that differ in any one field (every field the descriptor lists, set to
// a value of its kind) unequal, and equal copies equal: a field added to
// Endpoint or ServiceVIPState and not compared fails here.
func TestEqualComparesEveryField(t *testing.T) {
	check := func(name string, base proto.Message, equal func(a, b proto.Message) bool) {
		if !equal(base, proto.Clone(base)) {
			t.Errorf("%s: a copy is not equal", name)
		}
		fields := base.ProtoReflect().Descriptor().Fields()
		for i := range fields.Len() {
			f := fields.Get(i)
			other := proto.Clone(base)
			m := other.ProtoReflect()
			switch {
			case f.IsList() && f.Kind() == protoreflect.StringKind:
				m.Clear(f)
				m.Mutable(f).List().Append(protoreflect.ValueOfString("another"))
			case f.IsList() && f.Kind() == protoreflect.MessageKind:
				l := m.Mutable(f).List()
				e := l.NewElement()
				e.Message().Set(e.Message().Descriptor().Fields().Get(0), protoreflect.ValueOfString("another"))
				l.Append(e)
			case f.Kind() == protoreflect.StringKind:
				m.Set(f, protoreflect.ValueOfString("another"))
			case f.Kind() == protoreflect.EnumKind:
				m.Set(f, protoreflect.ValueOfEnum(m.Get(f).Enum()+1))
			default:
				t.Fatalf("%s.%s: kind %v not covered by this test", name, f.Name(), f.Kind())
			}
			if equal(base, other) || equal(other, base) {
				t.Errorf("%s: values that differ in %s compare equal", name, f.Name())
			}
		}
	}
	check("Endpoint", &shoalv1.Endpoint{TaskId: "t", ServiceId: "s", ServiceName: "n", Aliases: []string{"a"}, Address: "10.0.0.2/24",
		Mac: "m", NodeId: "n1", NodeAddr: "192.168.250.1", State: shoalv1.TaskState_TASK_STATE_RUNNING, Health: shoalv1.TaskHealth_TASK_HEALTH_HEALTHY},
		func(a, b proto.Message) bool { return endpointEqual(a.(*shoalv1.Endpoint), b.(*shoalv1.Endpoint)) })
	check("ServiceVIPState", &shoalv1.ServiceVIPState{ServiceId: "s", ServiceName: "n", Aliases: []string{"a"}, Address: "10.0.0.3/24", EndpointMode: "vip",
		Ports: []*shoalv1.PortConfig{{Name: "web", Protocol: "tcp", TargetPort: 80, PublishedPort: 8080}}},
		func(a, b proto.Message) bool {
			return vipEqual(a.(*shoalv1.ServiceVIPState), b.(*shoalv1.ServiceVIPState))
		})
	// A port that differs in a field of its own.
	a := &shoalv1.ServiceVIPState{Ports: []*shoalv1.PortConfig{{PublishedPort: 8080}}}
	b := &shoalv1.ServiceVIPState{Ports: []*shoalv1.PortConfig{{PublishedPort: 8081}}}
	if vipEqual(a, b) {
		t.Error("VIPs whose ports differ compare equal")
	}
}
