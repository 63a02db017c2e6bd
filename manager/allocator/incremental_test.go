package allocator

import (
	"fmt"
	"maps"
	"math/rand"
	"net/netip"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func named(services, tasks []string) Work {
	var w Work
	for _, id := range services {
		w.addService(id)
	}
	for _, id := range tasks {
		w.addTask(id)
	}
	return w
}

// TestPlanNamedWork: a pass over named objects looks at those only (the
// others, even if they need something, wait for their own event), leaves
// what the budget stopped in Rest and what failed in Blocked.
func TestPlanNamedWork(t *testing.T) {
	objs := []raftstore.Object{net("n1", "10.1.0.0/29"), net("n2", "10.2.0.0/24"),
		svc("s1", "", "n1"), svc("s2", "", "n2"), svc("s3", "", "n2"),
		task("t1", statePending, "n2"), task("t2", statePending, "n2"), task("t3", statePending, "n2", "gone"),
		withAtt(task("t4", statePending, "n2"), "n2", "10.2.0.2/24")}
	for _, tt := range []struct {
		name            string
		work            Work
		maxOps          int
		services, tasks map[string]string
		rest, blocked   Work
		more            bool
		failed          []string
	}{
		{name: "one service", work: named([]string{"s2"}, nil),
			services: map[string]string{"s2": "n2=10.2.0.3/24"}, tasks: map[string]string{}},
		{name: "one task", work: named(nil, []string{"t2"}),
			services: map[string]string{}, tasks: map[string]string{"t2": "n2=10.2.0.3/24@02:42:0a:02:00:03/a-n2"}},
		{name: "gone, allocated or missing network", work: named([]string{"nope"}, []string{"t3", "t4", "t9"}),
			services: map[string]string{}, tasks: map[string]string{}, failed: []string{"t3"}, blocked: named(nil, []string{"t3"})},
		{name: "budget leaves the rest named", work: named([]string{"s1", "s2", "s3"}, []string{"t1", "t2"}), maxOps: 2,
			services: map[string]string{"s1": "n1=10.1.0.2/24", "s2": "n2=10.2.0.3/24"}, tasks: map[string]string{},
			more: true, rest: named([]string{"s3"}, []string{"t1", "t2"})},
		{name: "budget over everything asks for everything again", work: Work{All: true}, maxOps: 1,
			services: map[string]string{"s1": "n1=10.1.0.2/24"}, tasks: map[string]string{}, more: true, rest: Work{All: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := reader(objs...)
			st, _ := Rebuild(raftstore.List[*shoalv1.Network](r), raftstore.List[*shoalv1.Task](r), raftstore.List[*shoalv1.Service](r))
			maxOps := tt.maxOps
			if maxOps == 0 {
				maxOps = 1000
			}
			var undo Undo
			res := Plan(st, r, tt.work, maxOps, 1<<20, &undo)
			fixMasks(res.Tasks)
			for _, s := range res.Services {
				for _, v := range s.Vips {
					v.Address = fmt.Sprint(v.Address[:len(v.Address)-3], "/24")
				}
			}
			if got := attachments(res.Tasks); !mapsEqual(got, tt.tasks) {
				t.Errorf("tasks:\n got %v\nwant %v", got, tt.tasks)
			}
			if got := vips(res.Services); !mapsEqual(got, tt.services) {
				t.Errorf("services:\n got %v\nwant %v", got, tt.services)
			}
			if got := slices.Sorted(maps.Keys(res.Failed)); !slices.Equal(got, tt.failed) {
				t.Errorf("failed %v, want %v", got, tt.failed)
			}
			if res.More != tt.more || !workEqual(res.Rest, tt.rest) || !workEqual(res.Blocked, tt.blocked) {
				t.Errorf("more %v rest %v blocked %v, want %v %v %v", res.More, res.Rest, res.Blocked, tt.more, tt.rest, tt.blocked)
			}
		})
	}
}

func workEqual(a, b Work) bool {
	return a.All == b.All && slices.Equal(slices.Sorted(maps.Keys(a.Services)), slices.Sorted(maps.Keys(b.Services))) && slices.Equal(slices.Sorted(maps.Keys(a.Tasks)), slices.Sorted(maps.Keys(b.Tasks)))
}

// held is every address a state holds, by network, with its holder.
func held(st *State) map[string]string {
	out := map[string]string{}
	for id, p := range st.pools {
		for a, owner := range p.owner {
			out[id+"/"+a.String()] = owner
		}
	}
	return out
}

// TestIncrementalRandomEventOrders: services, tasks and networks change in
// random orders; the allocator sees the events late (a pass reads a store
// ahead of what it observed) and passes are cut by small budgets. Once
// every event is observed and no pass is due, its state must equal a
// rebuild from the store, and a pass over everything on that rebuild must
// find nothing the incremental passes missed.
func TestIncrementalRandomEventOrders(t *testing.T) {
	for seed := int64(1); seed <= 300; seed++ {
		rng := rand.New(rand.NewSource(seed))
		store := map[string]raftstore.Object{}
		var queue []*shoalv1.WatchEvent
		var version uint64
		put := func(o raftstore.Object) {
			version++
			o.GetMeta().Version = version
			store[string(raftstore.KindOf(o))+"/"+o.GetMeta().GetId()] = o
			queue = append(queue, &shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_UPDATE, Object: raftstore.Wrap(o)})
		}
		remove := func(o raftstore.Object) {
			delete(store, string(raftstore.KindOf(o))+"/"+o.GetMeta().GetId())
			queue = append(queue, &shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_DELETE, Object: raftstore.Wrap(o)})
		}
		view := func() *fakeReader { return reader(slices.Collect(maps.Values(store))...) }
		pick := func(kind raftstore.Kind) raftstore.Object {
			l := view().List(kind)
			if len(l) == 0 {
				return nil
			}
			return proto.Clone(l[rng.Intn(len(l))]).(raftstore.Object)
		}
		networks := []string{"n1", "n2", "h"}
		someNets := func() []string {
			var out []string
			for _, n := range networks {
				if rng.Intn(3) == 0 {
					out = append(out, n)
				}
			}
			if rng.Intn(10) == 0 {
				out = append(out, "gone")
			}
			return out
		}
		put(net("n1", "10.1.0.0/29")) // 5 addresses: runs out
		put(net("n2", "10.2.0.0/26"))
		put(hostNet("h"))
		a := newAllocator(nil, nil)
		a.rebuild(view())
		queue = nil // the rebuild saw them
		deliver := func(n int) {
			for ; n > 0 && len(queue) > 0; n-- {
				ev := queue[0]
				queue = queue[1:]
				a.observe(ev)
			}
		}
		pass := func() {
			work := a.work
			if work.empty() {
				return
			}
			var undo Undo
			res := Plan(a.state, view(), work, 1+rng.Intn(4), 1<<20, &undo)
			for _, s := range res.Services {
				put(s)
			}
			for _, tk := range res.Tasks {
				put(tk)
			}
			a.done(work, res)
		}
		nextID := 0
		for range 120 {
			nextID++
			switch rng.Intn(12) {
			case 0, 1:
				mode := ""
				if rng.Intn(4) == 0 {
					mode = "dnsrr"
				}
				put(svc(fmt.Sprintf("s%d", nextID), mode, someNets()...))
			case 2:
				if s, _ := pick(raftstore.KindService).(*shoalv1.Service); s != nil {
					if rng.Intn(2) == 0 {
						// A label or the replica count only (PatchService).
						s.Spec.Labels = map[string]string{"l": fmt.Sprint(nextID)}
						s.Spec.Replicas = int64(rng.Intn(3))
					} else {
						s.Spec = svc("x", "", someNets()...).Spec
					}
					put(s)
				}
			case 3:
				if s := pick(raftstore.KindService); s != nil {
					remove(s)
				}
			case 4, 5, 6:
				put(task(fmt.Sprintf("t%d", nextID), statePending, someNets()...))
			case 7:
				if tk, _ := pick(raftstore.KindTask).(*shoalv1.Task); tk != nil && !Ended(tk) {
					tk.Status.State = []shoalv1.TaskState{stateRunning, stateComplete, shoalv1.TaskState_TASK_STATE_FAILED}[rng.Intn(3)]
					put(tk)
				}
			case 8:
				if tk := pick(raftstore.KindTask); tk != nil {
					remove(tk)
				}
			case 9:
				if rng.Intn(4) == 0 {
					id := fmt.Sprintf("net%d", nextID)
					put(net(id, fmt.Sprintf("10.%d.0.0/28", 10+nextID)))
					networks = append(networks, id)
				} else if n := pick(raftstore.KindNetwork); n != nil && rng.Intn(3) == 0 {
					remove(n)
				}
			case 10:
				deliver(rng.Intn(len(queue) + 1))
			case 11:
				pass()
			}
		}
		for i := 0; len(queue) > 0 || !a.work.empty(); i++ {
			if i > 1000 {
				t.Fatalf("seed %d: passes do not settle", seed)
			}
			deliver(len(queue))
			pass()
		}
		r := view()
		fresh, errs := Rebuild(raftstore.List[*shoalv1.Network](r), raftstore.List[*shoalv1.Task](r), raftstore.List[*shoalv1.Service](r))
		if len(errs) > 0 {
			t.Fatalf("seed %d: the store holds conflicting addresses: %v", seed, errs)
		}
		if got, want := held(a.state), held(fresh); !maps.Equal(got, want) {
			t.Fatalf("seed %d: incremental state\n%v\nrebuild\n%v", seed, got, want)
		}
		var undo Undo
		res := Plan(fresh, r, Work{All: true}, 1<<20, 1<<30, &undo)
		if len(res.Tasks) > 0 || len(res.Services) > 0 {
			t.Fatalf("seed %d: a full pass still finds work: tasks %v services %v", seed, attachments(res.Tasks), vips(res.Services))
		}
		for id := range res.Failed {
			if _, ok := a.blocked.Tasks[id]; !ok {
				if _, ok := a.blocked.Services[id]; !ok {
					t.Fatalf("seed %d: %s fails a full pass but is not blocked", seed, id)
				}
			}
		}
	}
}

// BenchmarkPassOneServiceOf1000: the pass after one service's event, with
// 1,000 services stored (before: every service listed and compared).
func BenchmarkPassOneServiceOf1000(b *testing.B) {
	os := []raftstore.Object{net("n1", "10.1.0.0/16")}
	for i := 0; i < 1000; i++ {
		os = append(os, svc(fmt.Sprintf("s%04d", i), "", "n1"))
	}
	r := reader(os...)
	st, _ := Rebuild(raftstore.List[*shoalv1.Network](r), nil, nil)
	var undo Undo
	res := Plan(st, r, Work{All: true}, 2000, 1<<30, &undo)
	r = reader(append([]raftstore.Object{os[0]}, func() []raftstore.Object {
		var l []raftstore.Object
		for _, s := range res.Services {
			l = append(l, s)
		}
		return l
	}()...)...)
	for _, work := range []struct {
		name string
		w    Work
	}{{"all", Work{All: true}}, {"named", named([]string{"s0500"}, nil)}} {
		b.Run(work.name, func(b *testing.B) {
			for b.Loop() {
				var undo Undo
				if res := Plan(st, r, work.w, 2000, 1<<30, &undo); len(res.Services) != 0 {
					b.Fatal(len(res.Services))
				}
			}
		})
	}
}

// TestServiceVIPsFailureKeepsHeld: a service moved to a full network fails
// and is not written, so the VIP it still has in the store stays held
// (before, the VIP was freed and could be handed out twice; found by
// TestIncrementalRandomEventOrders).
func TestServiceVIPsFailureKeepsHeld(t *testing.T) {
	s := svc("s1", "", "n1")
	s.Vips = []*shoalv1.ServiceVIP{{NetworkId: "n2", Address: "10.2.0.7/24"}}
	r := reader(net("n1", "10.1.0.0/29"), net("n2", "10.2.0.0/24"), s,
		withAtt(task("a", stateRunning), "n1", "10.1.0.2/29"), withAtt(task("b", stateRunning), "n1", "10.1.0.3/29"),
		withAtt(task("c", stateRunning), "n1", "10.1.0.4/29"), withAtt(task("d", stateRunning), "n1", "10.1.0.5/29"),
		withAtt(task("e", stateRunning), "n1", "10.1.0.6/29"))
	st, errs := Rebuild(raftstore.List[*shoalv1.Network](r), raftstore.List[*shoalv1.Task](r), raftstore.List[*shoalv1.Service](r))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var undo Undo
	res := Plan(st, r, Work{All: true}, 1000, 1<<20, &undo)
	if _, ok := res.Failed["s1"]; !ok || len(res.Services) != 0 {
		t.Fatalf("failed %v services %v", res.Failed, vips(res.Services))
	}
	if got := st.Pool("n2").Owner(netip.MustParseAddr("10.2.0.7")); got != "vip:s1" {
		t.Errorf("10.2.0.7 held by %q, want vip:s1", got)
	}
	if res.Freed {
		t.Error("a failed service reported freeing addresses")
	}
}
