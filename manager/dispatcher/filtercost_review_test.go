package dispatcher

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// reviewService is a service as an operator's would be: two networks
// with aliases, two published ports, two VIPs.
func reviewService() *shoalv1.Service {
	return &shoalv1.Service{
		Meta: &shoalv1.Meta{Id: "s1", Version: 7},
		Spec: &shoalv1.ServiceSpec{
			Name: "web", Labels: map[string]string{"tier": "front"}, Replicas: 3,
			Task: &shoalv1.TaskSpec{
				Container: &shoalv1.ContainerSpec{Image: "demo", Command: []string{"/demo"}, Env: []string{"A=1", "B=2"}},
				Networks: []*shoalv1.NetworkAttachmentConfig{
					{Target: "a", Aliases: []string{"www", "w"}},
					{Target: "b", Aliases: []string{"local"}},
				},
			},
			Endpoint: &shoalv1.EndpointSpec{Mode: "vip", Ports: []*shoalv1.PortConfig{
				{Name: "http", Protocol: "tcp", TargetPort: 80, PublishedPort: 8080},
				{Name: "https", Protocol: "tcp", TargetPort: 443, PublishedPort: 8443},
			}},
		},
		Vips:        []*shoalv1.ServiceVIP{{NetworkId: "a", Address: "10.1.0.2/24"}, {NetworkId: "b", Address: "10.2.0.2/24"}},
		SpecVersion: 2,
	}
}

// BenchmarkServiceFilterOverSessions: what the session filters cost the
// store's publish (the FSM goroutine, under the hub's lock) for one
// service update seen by N sessions, by the kind of write: a patch (the
// spec's task and endpoint shared with the stored one: pointers
// compared) and a whole update (UpdateService, the orchestrator's
// update-status writes: clones, compared with proto.Equal).
func BenchmarkServiceFilterOverSessions(b *testing.B) {
	stored := reviewService()
	patched := proto.Clone(stored).(*shoalv1.Service)
	patched.Spec = raftstore.PatchSpec(stored.Spec, &shoalv1.ServicePatch{LabelsAdd: map[string]string{"tier": "back"}})
	cloned := proto.Clone(stored).(*shoalv1.Service)
	cloned.UpdateStatus = &shoalv1.UpdateStatus{State: shoalv1.UpdateState_UPDATE_STATE_UPDATING}
	for _, w := range []struct {
		name string
		svc  *shoalv1.Service
	}{{"patch", patched}, {"whole", cloned}} {
		for _, n := range []int{200, 5000} {
			b.Run(fmt.Sprintf("%s/sessions=%d", w.name, n), func(b *testing.B) {
				var shared filterShared
				shared.nets.Store(true)
				keeps := make([]raftstore.KeepFunc, n)
				for i := range keeps {
					keeps[i] = sessionEvents(fmt.Sprintf("n%d", i), &shared)
				}
				ev := svcEvent(w.svc)
				for b.Loop() {
					for _, keep := range keeps {
						if keep(ev, stored) {
							b.Fatal("kept")
						}
					}
				}
			})
		}
	}
}

// BenchmarkVIPServiceWriteOverSessions is BenchmarkServiceWriteOverSessions
// with the label written on service web, which is on the overlay network
// and has a VIP (a service on a network has one): the patch's VIPs are
// the entry's copy, so every session's filter compares them in full.
func BenchmarkVIPServiceWriteOverSessions(b *testing.B) {
	for _, n := range []int{0, 200} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) { benchLabelWrites(b, n, "web") })
	}
}

// TestServiceUpdateComparedOncePerEvent: the store offers one event to
// every session's filter in turn (under its hub's lock, on the FSM's
// goroutine), and whether a service update changes the network states
// reads no node: a whole update (UpdateService, the orchestrator's update
// status) seen by 200 sessions' filters costs what it costs one, not 200
// comparisons of the endpoint, networks and VIPs (proto.Equal, which
// allocates: counted by its allocations). A patch's VIPs are the entry's
// copy, so a label written on a service with a VIP is compared in full
// too (BenchmarkVIPServiceWriteOverSessions).
func TestServiceUpdateComparedOncePerEvent(t *testing.T) {
	stored := reviewService()
	var shared filterShared
	shared.nets.Store(true)
	filters := func(n int) []raftstore.KeepFunc {
		keeps := make([]raftstore.KeepFunc, n)
		for i := range keeps {
			keeps[i] = sessionEvents(fmt.Sprintf("n%d", i), &shared)
		}
		return keeps
	}
	one, many := filters(1), filters(200)
	allocs := func(keeps []raftstore.KeepFunc) float64 {
		return testing.AllocsPerRun(20, func() {
			c := proto.Clone(stored).(*shoalv1.Service) // counted alike for one and 200
			ev := svcEvent(c)
			for _, keep := range keeps {
				if keep(ev, stored) {
					t.Fatal("an update that changes no network state was kept")
				}
			}
		})
	}
	a1, a200 := allocs(one), allocs(many)
	if a200 > a1+2 {
		t.Errorf("one update through 200 sessions' filters: %.0f allocations, through one: %.0f (compared once per session, not once)", a200, a1)
	}
	// Still exact per event: an update that moves a VIP is kept by every
	// session, the event after it (the same content again) by none.
	moved := proto.Clone(stored).(*shoalv1.Service)
	moved.Vips[0].Address = "10.1.0.9/24"
	ev := svcEvent(moved)
	for i, keep := range many {
		if !keep(ev, stored) {
			t.Fatalf("session %d skipped a moved VIP", i)
		}
	}
	again := svcEvent(proto.Clone(moved).(*shoalv1.Service))
	for i, keep := range many {
		if keep(again, moved) {
			t.Fatalf("session %d kept an update that changes nothing", i)
		}
		if !keep(again, stored) { // the same event, another prev
			t.Fatalf("session %d: a verdict for another prev reused", i)
		}
	}
}
