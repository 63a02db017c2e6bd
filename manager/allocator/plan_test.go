package allocator

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// fakeReader is a Reader over fixed objects (sorted by id as the store's).
type fakeReader struct {
	objs map[raftstore.Kind][]raftstore.Object
}

func (f *fakeReader) Get(k raftstore.Kind, id string) raftstore.Object {
	for _, o := range f.objs[k] {
		if o.GetMeta().GetId() == id {
			return o
		}
	}
	return nil
}
func (f *fakeReader) List(k raftstore.Kind) []raftstore.Object { return f.objs[k] }
func (f *fakeReader) Find(k raftstore.Kind, index, value string) []raftstore.Object {
	var out []raftstore.Object
	for _, o := range f.objs[k] {
		if t, ok := o.(*shoalv1.Task); ok && index == raftstore.IndexState && t.GetStatus().GetState().String() == value {
			out = append(out, o)
		}
	}
	return out
}
func (f *fakeReader) Index() uint64 { return 1 }

func reader(objs ...raftstore.Object) *fakeReader {
	f := &fakeReader{objs: map[raftstore.Kind][]raftstore.Object{}}
	for _, o := range objs {
		k := raftstore.KindOf(o)
		f.objs[k] = append(f.objs[k], o)
	}
	for _, l := range f.objs {
		slices.SortFunc(l, func(a, b raftstore.Object) int { return strings.Compare(a.GetMeta().GetId(), b.GetMeta().GetId()) })
	}
	return f
}

func net(id, subnet string) *shoalv1.Network {
	return &shoalv1.Network{Meta: &shoalv1.Meta{Id: id}, Spec: &shoalv1.NetworkSpec{Name: "net-" + id, Driver: "overlay"}, Subnet: subnet, Gateway: netip.MustParsePrefix(subnet).Addr().Next().String(), Vni: 4096}
}

func hostNet(id string) *shoalv1.Network {
	return &shoalv1.Network{Meta: &shoalv1.Meta{Id: id}, Spec: &shoalv1.NetworkSpec{Name: "net-" + id, Driver: "host"}}
}

func svc(id, mode string, nets ...string) *shoalv1.Service {
	s := &shoalv1.Service{Meta: &shoalv1.Meta{Id: id}, Spec: &shoalv1.ServiceSpec{Name: "svc-" + id, Task: &shoalv1.TaskSpec{}, Endpoint: &shoalv1.EndpointSpec{Mode: mode}}}
	for _, n := range nets {
		s.Spec.Task.Networks = append(s.Spec.Task.Networks, &shoalv1.NetworkAttachmentConfig{Target: n, Aliases: []string{"a-" + n}})
	}
	return s
}

func task(id string, state shoalv1.TaskState, nets ...string) *shoalv1.Task {
	t := &shoalv1.Task{Meta: &shoalv1.Meta{Id: id}, ServiceId: "s1", DesiredState: stateRunning,
		Status: &shoalv1.TaskStatus{State: state}, Spec: &shoalv1.TaskSpec{}}
	for _, n := range nets {
		t.Spec.Networks = append(t.Spec.Networks, &shoalv1.NetworkAttachmentConfig{Target: n, Aliases: []string{"a-" + n}})
	}
	return t
}

func withAtt(t *shoalv1.Task, netID, addr string) *shoalv1.Task {
	t.Networks = append(t.Networks, &shoalv1.NetworkAttachment{NetworkId: netID, Address: addr})
	return t
}

func attachments(ts []*shoalv1.Task) map[string]string {
	out := map[string]string{}
	for _, t := range ts {
		var s []string
		for _, a := range t.GetNetworks() {
			s = append(s, a.GetNetworkId()+"="+a.GetAddress()+"@"+a.GetMac()+"/"+strings.Join(a.GetAliases(), ","))
		}
		out[t.GetMeta().GetId()] = strings.Join(s, " ")
	}
	return out
}

func vips(ss []*shoalv1.Service) map[string]string {
	out := map[string]string{}
	for _, s := range ss {
		var l []string
		for _, v := range s.GetVips() {
			l = append(l, v.GetNetworkId()+"="+v.GetAddress())
		}
		out[s.GetMeta().GetId()] = strings.Join(l, " ")
	}
	return out
}

func TestPlan(t *testing.T) {
	for _, tt := range []struct {
		name     string
		objs     []raftstore.Object
		maxOps   int
		tasks    map[string]string
		services map[string]string
		failed   []string
		more     bool
	}{
		{name: "nothing to do", objs: []raftstore.Object{net("n1", "10.1.0.0/24"), task("t1", stateRunning)},
			tasks: map[string]string{}, services: map[string]string{}},
		{name: "pending task gets an address per network, VIP first",
			objs:     []raftstore.Object{net("n1", "10.1.0.0/24"), net("n2", "10.2.0.0/24"), svc("s1", "", "n1", "n2"), task("t1", statePending, "n1", "n2")},
			services: map[string]string{"s1": "n1=10.1.0.2/24 n2=10.2.0.2/24"},
			tasks:    map[string]string{"t1": "n1=10.1.0.3/24@02:42:0a:01:00:03/a-n1 n2=10.2.0.3/24@02:42:0a:02:00:03/a-n2"}},
		{name: "dnsrr has no VIP", objs: []raftstore.Object{net("n1", "10.1.0.0/24"), svc("s1", "dnsrr", "n1"), task("t1", statePending, "n1")},
			services: map[string]string{}, tasks: map[string]string{"t1": "n1=10.1.0.2/24@02:42:0a:01:00:02/a-n1"}},
		{name: "host network: attachment without address",
			objs:     []raftstore.Object{hostNet("h"), svc("s1", "", "h"), task("t1", statePending, "h")},
			services: map[string]string{}, tasks: map[string]string{"t1": "h=@/a-h"}},
		{name: "addresses held by live tasks are skipped, ended ones are free again only after new ones",
			objs: []raftstore.Object{net("n1", "10.1.0.0/24"),
				withAtt(task("old", shoalv1.TaskState_TASK_STATE_FAILED, "n1"), "n1", "10.1.0.2/24"),
				withAtt(task("live", stateRunning, "n1"), "n1", "10.1.0.3/24"),
				task("t1", statePending, "n1")},
			services: map[string]string{}, tasks: map[string]string{"t1": "n1=10.1.0.4/24@02:42:0a:01:00:04/a-n1"}},
		{name: "already allocated or not pending: untouched",
			objs: []raftstore.Object{net("n1", "10.1.0.0/24"),
				withAtt(task("t1", statePending, "n1"), "n1", "10.1.0.9/24"),
				task("t2", shoalv1.TaskState_TASK_STATE_ASSIGNED, "n1")},
			services: map[string]string{}, tasks: map[string]string{}},
		{name: "unknown network fails the task", objs: []raftstore.Object{net("n1", "10.1.0.0/24"), task("t1", statePending, "n1", "gone")},
			services: map[string]string{}, tasks: map[string]string{}, failed: []string{"t1"}},
		{name: "pool exhausted fails the task, others go on",
			objs: []raftstore.Object{net("n1", "10.1.0.0/29"), net("n2", "10.2.0.0/24"),
				task("t1", statePending, "n1"), task("t2", statePending, "n1"), task("t3", statePending, "n1"), task("t4", statePending, "n1"),
				task("t5", statePending, "n1"), task("t6", statePending, "n1"), task("t7", statePending, "n2")},
			services: map[string]string{},
			tasks: map[string]string{"t1": "n1=10.1.0.2/24@02:42:0a:01:00:02/a-n1", "t2": "n1=10.1.0.3/24@02:42:0a:01:00:03/a-n1",
				"t3": "n1=10.1.0.4/24@02:42:0a:01:00:04/a-n1", "t4": "n1=10.1.0.5/24@02:42:0a:01:00:05/a-n1", "t5": "n1=10.1.0.6/24@02:42:0a:01:00:06/a-n1",
				"t7": "n2=10.2.0.2/24@02:42:0a:02:00:02/a-n2"},
			failed: []string{"t6"}},
		{name: "VIP of a network no longer in the spec is dropped, a kept one stays",
			objs: []raftstore.Object{net("n1", "10.1.0.0/24"), net("n2", "10.2.0.0/24"),
				func() *shoalv1.Service {
					s := svc("s1", "", "n2")
					s.Vips = []*shoalv1.ServiceVIP{{NetworkId: "n1", Address: "10.1.0.2/24"}, {NetworkId: "n2", Address: "10.2.0.7/24"}}
					return s
				}()},
			services: map[string]string{"s1": "n2=10.2.0.7/24"}, tasks: map[string]string{}},
		{name: "budget stops the pass", maxOps: 2,
			objs:     []raftstore.Object{net("n1", "10.1.0.0/24"), task("t1", statePending, "n1"), task("t2", statePending, "n1"), task("t3", statePending, "n1")},
			services: map[string]string{},
			tasks:    map[string]string{"t1": "n1=10.1.0.2/24@02:42:0a:01:00:02/a-n1", "t2": "n1=10.1.0.3/24@02:42:0a:01:00:03/a-n1"}, more: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := reader(tt.objs...)
			st, errs := Rebuild(raftstore.List[*shoalv1.Network](r), raftstore.List[*shoalv1.Task](r), raftstore.List[*shoalv1.Service](r))
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			maxOps := tt.maxOps
			if maxOps == 0 {
				maxOps = 1000
			}
			var undo Undo
			res := Plan(st, r, Work{All: true}, maxOps, 1<<20, &undo)
			fixMasks(res.Tasks)
			if got := attachments(res.Tasks); !mapsEqual(got, tt.tasks) {
				t.Errorf("tasks:\n got %v\nwant %v", got, tt.tasks)
			}
			if got := vips(res.Services); !mapsEqual(got, tt.services) {
				t.Errorf("services:\n got %v\nwant %v", got, tt.services)
			}
			var failed []string
			for id := range res.Failed {
				failed = append(failed, id)
			}
			slices.Sort(failed)
			if !slices.Equal(failed, tt.failed) {
				t.Errorf("failed %v, want %v", failed, tt.failed)
			}
			if res.More != tt.more {
				t.Errorf("more = %v", res.More)
			}
			// Undo gives everything back.
			before := inUse(st)
			undo.Run()
			st0, _ := Rebuild(raftstore.List[*shoalv1.Network](r), raftstore.List[*shoalv1.Task](r), raftstore.List[*shoalv1.Service](r))
			if got, want := inUse(st), inUse(st0); got != want {
				t.Errorf("after undo %d addresses held (%d before), want %d", got, before, want)
			}
		})
	}
}

// fixMasks shows /29 test addresses as /24 so the table stays readable.
func fixMasks(ts []*shoalv1.Task) {
	for _, t := range ts {
		for _, a := range t.Networks {
			a.Address = strings.Replace(a.Address, "/29", "/24", 1)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func inUse(st *State) int {
	n := 0
	for _, p := range st.pools {
		n += p.InUse()
	}
	return n
}
