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
