package netdelta

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// bigPair is two states of one network of n endpoints where one endpoint
// changed, every endpoint a separate object in each (as two computations
// of dispatcher.AllNodeNetworks make them).
func bigPair(n int) (prev, next *shoalv1.NetworkState) {
	mk := func(health shoalv1.TaskHealth) *shoalv1.NetworkState {
		ns := &shoalv1.NetworkState{Network: testNet}
		for i := range n {
			e := ep(fmt.Sprintf("t%05d", i), fmt.Sprintf("10.0.%d.%d/16", i/250, i%250+2), shoalv1.TaskState_TASK_STATE_RUNNING)
			e.Aliases = []string{"web-alias"}
			if i == n/2 {
				e.Health = health
			}
			ns.Endpoints = append(ns.Endpoints, e)
		}
		ns.Vips = []*shoalv1.ServiceVIPState{{ServiceId: "svc", ServiceName: "web", Address: "10.0.255.1/16", EndpointMode: "vip"}}
		return ns
	}
	return mk(shoalv1.TaskHealth_TASK_HEALTH_HEALTHY), mk(shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY)
}

// BenchmarkReviewDiffVsWhole: what a delta costs the manager (Diff, once
// per pair of states, then its marshalling per session) against a whole
// state (marshalled per session), for one endpoint changed in a network
// of n endpoints.
func BenchmarkReviewDiffVsWhole(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		prev, next := bigPair(n)
		b.Run(fmt.Sprintf("endpoints=%d/diff", n), func(b *testing.B) {
			for b.Loop() {
				if d := Diff(prev, next); d == nil || len(d.GetUpsert()) != 1 {
					b.Fatalf("delta %v", d)
				}
			}
		})
		b.Run(fmt.Sprintf("endpoints=%d/marshal-delta", n), func(b *testing.B) {
			d := Diff(prev, next)
			for b.Loop() {
				if _, err := proto.Marshal(d); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("endpoints=%d/marshal-whole", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := proto.Marshal(next); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// realState is a state of n endpoints with ids and fields as long as a
// cluster's (25-character ids, a MAC, a node address), and one VIP.
func realState(n int) *shoalv1.NetworkState {
	ns := &shoalv1.NetworkState{Network: testNet}
	for i := range n {
		ns.Endpoints = append(ns.Endpoints, &shoalv1.Endpoint{
			TaskId: fmt.Sprintf("task%021d", i), ServiceId: "svcaaaaaaaaaaaaaaaaaaaaaa", ServiceName: "web",
			Address: fmt.Sprintf("10.0.%d.%d/16", i/250, i%250+2), Mac: "02:42:0a:00:00:02",
			NodeId: fmt.Sprintf("node%021d", i%50), NodeAddr: "192.168.250.1", State: shoalv1.TaskState_TASK_STATE_RUNNING})
	}
	ns.Vips = []*shoalv1.ServiceVIPState{{ServiceId: "svcaaaaaaaaaaaaaaaaaaaaaa", ServiceName: "web", Address: "10.0.255.1/16", EndpointMode: "vip"}}
	return ns
}

// TestDiffNeverLargerThanWhole: Diff refuses a pair "whose changes are as
// large as the state itself" (the package's contract): a delta is never
// sent where the whole state is no larger. Counting only upserts let a
// scale-down (1,000 endpoints to 10, or to none) be sent as a delta of
// 990 or 1,000 removed ids, tens of times the size of the state it stands
// for, to every session that held the network.
func TestDiffNeverLargerThanWhole(t *testing.T) {
	prev := realState(1000)
	for _, keep := range []int{0, 10, 100, 150, 500, 999} {
		next := realState(keep)
		d := Diff(prev, next)
		if d != nil && proto.Size(d) >= proto.Size(next) {
			t.Errorf("1,000 endpoints to %d: a delta of %d bytes for a state of %d", keep, proto.Size(d), proto.Size(next))
		}
		if keep == 999 && d == nil {
			t.Errorf("1,000 endpoints to 999: no delta, want one removal")
		}
	}
	// Many upserts and removals together, fewer upserts than endpoints.
	next := realState(1000)
	next.Endpoints = next.Endpoints[900:]
	for i, e := range next.Endpoints[:50] {
		c := proto.Clone(e).(*shoalv1.Endpoint)
		c.Health = shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY
		next.Endpoints[i] = c
	}
	if d := Diff(prev, next); d != nil && proto.Size(d) >= proto.Size(next) {
		t.Errorf("900 removed, 50 changed: a delta of %d bytes for a state of %d", proto.Size(d), proto.Size(next))
	}
}
