package allocator

import (
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// A service event that changes only what ServiceVIPs does not read (labels,
// replicas, the task's image) is no work: the pass for the service's
// earlier event decided its VIPs, and a pass over the changed service
// decides the same. A change of the mode, a network or the VIPs is work.
func TestLabelsOnlyServiceChangeIsNoWork(t *testing.T) {
	n1 := net("n1", "10.1.0.0/24")
	a := newAllocator(nil, nil)
	a.rebuild(reader(n1))
	a.work = Work{}
	ev := func(s *shoalv1.Service) *shoalv1.WatchEvent {
		return &shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_UPDATE, Object: raftstore.Wrap(s)}
	}
	s1 := svc("s1", "", "n1")
	if !a.observe(ev(s1)) {
		t.Fatal("a new service is no work")
	}
	var undo Undo
	res := Plan(a.state, reader(n1, s1), a.work, 100, 1<<20, &undo)
	if len(res.Services) != 1 {
		t.Fatalf("the first pass wrote %v", vips(res.Services))
	}
	a.done(a.work, res)
	allocated := res.Services[0]
	if !a.observe(ev(allocated)) {
		t.Fatal("the VIPs written are no work")
	}
	a.work = Work{}

	change := func(f func(s *shoalv1.Service)) *shoalv1.Service {
		s := proto.Clone(allocated).(*shoalv1.Service)
		f(s)
		return s
	}
	for _, tc := range []struct {
		name string
		svc  *shoalv1.Service
		work bool
	}{
		{"labels", change(func(s *shoalv1.Service) { s.Spec.Labels = map[string]string{"a": "b"} }), false},
		{"replicas and image", change(func(s *shoalv1.Service) {
			s.Spec.Replicas = 3
			s.Spec.Task.Container = &shoalv1.ContainerSpec{Image: "other"}
		}), false},
		{"mode", change(func(s *shoalv1.Service) { s.Spec.Endpoint.Mode = "dnsrr" }), true},
		{"network", change(func(s *shoalv1.Service) { s.Spec.Task.Networks[0].Target = "n2" }), true},
		{"another network", change(func(s *shoalv1.Service) {
			s.Spec.Task.Networks = append(s.Spec.Task.Networks, &shoalv1.NetworkAttachmentConfig{Target: "n1"})
		}), true},
		{"vip", change(func(s *shoalv1.Service) { s.Vips[0].Address = "10.1.0.9/24" }), true},
		{"no vip", change(func(s *shoalv1.Service) { s.Vips = nil }), true},
	} {
		a.seen["s1"] = allocated
		a.work = Work{}
		if got := a.observe(ev(tc.svc)); got != tc.work || a.work.empty() == tc.work {
			t.Errorf("%s: work %v (%v), want %v", tc.name, got, a.work, tc.work)
		}
		if tc.work {
			continue
		}
		// The decision the filter skips: a pass over the changed service
		// changes nothing, as over the one before.
		var undo Undo
		for _, s := range []*shoalv1.Service{allocated, tc.svc} {
			if res := Plan(a.state, reader(n1, s), named([]string{"s1"}, nil), 100, 1<<20, &undo); len(res.Services) != 0 || len(res.Failed) != 0 {
				t.Errorf("%s: a pass over %v writes %v, fails %v", tc.name, s, vips(res.Services), res.Failed)
			}
		}
	}
}

// A rebuild forgets the services seen: the events it missed may have
// changed a service away from what was seen and back.
func TestRebuildForgetsServicesSeen(t *testing.T) {
	n1 := net("n1", "10.1.0.0/24")
	a := newAllocator(nil, nil)
	a.rebuild(reader(n1))
	s1 := svc("s1", "", "n1")
	a.observe(&shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_UPDATE, Object: raftstore.Wrap(s1)})
	other := proto.Clone(s1).(*shoalv1.Service)
	other.Spec.Endpoint.Mode = "dnsrr"
	a.rebuild(reader(n1, other))
	a.work = Work{} // its pass over everything done
	if !a.observe(&shoalv1.WatchEvent{Action: shoalv1.WatchAction_WATCH_ACTION_UPDATE, Object: raftstore.Wrap(s1)}) || a.work.empty() {
		t.Fatal("a service as seen before the rebuild is no work after it")
	}
}

// A service whose VIP could not be allocated (its pool full) stays
// blocked through a labels-only change, which is no work, and gets its
// VIP once an address is freed (review).
func TestBlockedServiceLabelsChangeKeepsItBlocked(t *testing.T) {
	n1 := net("n1", "10.1.0.0/30") // one address to hand out: .2
	a := newAllocator(nil, nil)
	a.rebuild(reader(n1))
	a.work = Work{}
	ev := func(action shoalv1.WatchAction, s *shoalv1.Service) *shoalv1.WatchEvent {
		return &shoalv1.WatchEvent{Action: action, Object: raftstore.Wrap(s)}
	}
	update := shoalv1.WatchAction_WATCH_ACTION_UPDATE
	s1, s2 := svc("s1", "", "n1"), svc("s2", "", "n1")
	a.observe(ev(update, s1))
	a.observe(ev(update, s2))
	var undo Undo
	res := Plan(a.state, reader(n1, s1, s2), a.work, 100, 1<<20, &undo)
	if len(res.Services) != 1 || res.Services[0].GetMeta().GetId() != "s1" || len(res.Failed) != 1 {
		t.Fatalf("first pass: wrote %v, failed %v", vips(res.Services), res.Failed)
	}
	a.done(a.work, res)
	s1 = res.Services[0]
	a.observe(ev(update, s1)) // its own write: a pass that finds nothing
	a.work = Work{}

	relabeled := proto.Clone(s2).(*shoalv1.Service)
	relabeled.Spec.Labels = map[string]string{"a": "b"}
	if a.observe(ev(update, relabeled)) || !a.work.empty() {
		t.Fatalf("a labels change of a blocked service is work: %v", a.work)
	}
	if _, ok := a.blocked.Services["s2"]; !ok {
		t.Fatalf("s2 no longer blocked: %v", a.blocked)
	}
	if !a.observe(ev(shoalv1.WatchAction_WATCH_ACTION_DELETE, s1)) {
		t.Fatal("freeing s1's VIP made no pass due")
	}
	res = Plan(a.state, reader(n1, relabeled), a.work, 100, 1<<20, &undo)
	if got := vips(res.Services); got["s2"] != "n1=10.1.0.2/30" {
		t.Fatalf("after s1's VIP was freed: wrote %v, failed %v", got, res.Failed)
	}
}
