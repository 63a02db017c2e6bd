package dispatcher

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// BenchmarkNodeNetworks1000: one node's state of a network with 1,000
// endpoints on 50 nodes (plus 10,000 tasks without networks to skip).
func BenchmarkNodeNetworks1000(b *testing.B) {
	var os []raftstore.Object
	for i := 0; i < 50; i++ {
		os = append(os, mkNode(fmt.Sprintf("n%02d", i), fmt.Sprintf("192.168.250.%d:4243", i+1), ready))
	}
	os = append(os, mkNet("a"), mkSvc("s1", "", map[string]string{"a": "10.1.0.2/16"}, "a"))
	for i := 0; i < 1000; i++ {
		os = append(os, mkNetTask(fmt.Sprintf("t%04d", i), "s1", fmt.Sprintf("n%02d", i%50), stRunning, fmt.Sprintf("a=10.1.%d.%d/16", i/250, i%250+3)))
	}
	for i := 0; i < 10000; i++ {
		os = append(os, mkNetTask(fmt.Sprintf("x%05d", i), "s2", "n01", stRunning))
	}
	r := objs(os...)
	var st []*shoalv1.NetworkState
	for b.Loop() {
		st = NodeNetworks(r, "n00")
	}
	if len(st) != 1 || len(st[0].GetEndpoints()) != 1000 {
		b.Fatalf("%d networks", len(st))
	}
	b.ReportMetric(float64(proto.Size(st[0])), "bytes/network")
}
