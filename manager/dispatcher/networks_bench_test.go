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

// BenchmarkLabelWriteOverSessions: what one service write that changes
// nothing of the networks (a label) costs the sessions of 200 nodes that
// all take part in an overlay network of 1,000 endpoints: each session
// gets its states from the shared cache, computed once for the new index,
// and compares them with what it sent. One op is one write seen by all
// 200 sessions.
func BenchmarkLabelWriteOverSessions(b *testing.B) {
	const nodes = 200
	var os []raftstore.Object
	for i := range nodes {
		os = append(os, mkNode(fmt.Sprintf("n%03d", i), fmt.Sprintf("192.168.250.%d:4243", i%250+1), ready))
	}
	os = append(os, mkNet("a"), mkSvc("s1", "", map[string]string{"a": "10.1.0.2/16"}, "a"))
	for i := range 1000 {
		os = append(os, mkNetTask(fmt.Sprintf("t%04d", i), "s1", fmt.Sprintf("n%03d", i%nodes), stRunning, fmt.Sprintf("a=10.1.%d.%d/16", i/250, i%250+3)))
	}
	base := objs(os...)
	idx := uint64(1)
	c := &netCache{latest: func() raftstore.Reader { return atIndex{base, idx} }}
	trackers := make([]*networkTracker, nodes)
	for i := range trackers {
		trackers[i] = &networkTracker{}
		trackers[i].diff(c.get(atIndex{base, idx}, fmt.Sprintf("n%03d", i)), true)
	}
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("n%03d", i)
	}
	for b.Loop() {
		idx++
		for i, nt := range trackers {
			if m := nt.diff(c.get(atIndex{base, idx}, names[i]), false); len(m) != 0 {
				b.Fatalf("node %s: %d messages for a write that changed nothing", names[i], len(m))
			}
		}
	}
}

// BenchmarkLabelWriteAfterJoins: BenchmarkLabelWriteOverSessions where
// the 1,000 endpoints run on 100 of the 200 nodes and the other 100 take
// part through an ingress port, having become READY one at a time (each
// join a computation of its own), as after their agents restarted.
func BenchmarkLabelWriteAfterJoins(b *testing.B) {
	const nodes, withTasks = 200, 100
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("n%03d", i)
	}
	svc := mkSvc("s1", "", map[string]string{"a": "10.1.0.2/16"}, "a")
	svc.Spec.Endpoint.Ports = []*shoalv1.PortConfig{{PublishedPort: 8080}}
	os := []raftstore.Object{mkNet("a"), svc}
	for i := range withTasks {
		os = append(os, mkNode(names[i], fmt.Sprintf("192.168.250.%d:4243", i+1), ready))
	}
	for i := range 1000 {
		os = append(os, mkNetTask(fmt.Sprintf("t%04d", i), "s1", names[i%withTasks], stRunning, fmt.Sprintf("a=10.1.%d.%d/16", i/250, i%250+3)))
	}
	idx := uint64(1)
	cur := atIndex{objs(os...), idx}
	c := &netCache{latest: func() raftstore.Reader { return cur }}
	c.get(cur, names[0])
	for i := withTasks; i < nodes; i++ {
		os = append(os, mkNode(names[i], fmt.Sprintf("192.168.251.%d:4243", i-withTasks+1), ready))
		idx++
		cur = atIndex{objs(os...), idx}
		c.get(cur, names[0])
	}
	trackers := make([]*networkTracker, nodes)
	for i := range trackers {
		trackers[i] = &networkTracker{}
		trackers[i].diff(c.get(cur, names[i]), true)
	}
	for b.Loop() {
		idx++
		cur = atIndex{cur.memReader, idx}
		for i, nt := range trackers {
			states, replaced := c.states(cur, names[i])
			if m := nt.diffKnown(states, false, replaced); len(m) != 0 {
				b.Fatalf("node %s: %d messages for a write that changed nothing", names[i], len(m))
			}
		}
	}
}

// BenchmarkNetCache200x100: one computation of the cache after a task's
// state changed, at 200 nodes that each take part in 100 overlay networks
// (each network's service publishes an ingress port; 10 tasks per
// network, 1,000 endpoints in all): AllNodeNetworks, then keepUnchanged
// comparing the new states with the previous computation's.
func BenchmarkNetCache200x100(b *testing.B) {
	const nodes, networks = 200, 100
	names := make([]string, nodes)
	var os []raftstore.Object
	for i := range names {
		names[i] = fmt.Sprintf("n%03d", i)
		os = append(os, mkNode(names[i], fmt.Sprintf("192.168.250.%d:4243", i%250+1), ready))
	}
	var tasks []*shoalv1.Task
	for n := range networks {
		net, sid := fmt.Sprintf("net%03d", n), fmt.Sprintf("s%03d", n)
		svc := mkSvc(sid, "", map[string]string{net: fmt.Sprintf("10.%d.0.2/24", n)}, net)
		svc.Spec.Endpoint.Ports = []*shoalv1.PortConfig{{PublishedPort: uint32(8000 + n)}}
		os = append(os, mkNet(net), svc)
		for t := range 10 {
			tk := mkNetTask(fmt.Sprintf("t%03d-%d", n, t), sid, names[(n*10+t)%nodes], stRunning, fmt.Sprintf("%s=10.%d.0.%d/24", net, n, t+3))
			tasks = append(tasks, tk)
			os = append(os, tk)
		}
	}
	idx := uint64(1)
	cur := atIndex{objs(os...), idx}
	c := &netCache{latest: func() raftstore.Reader { return cur }}
	if got := len(c.get(cur, names[0])); got != networks {
		b.Fatalf("n000 takes part in %d networks, want %d", got, networks)
	}
	health := []shoalv1.TaskHealth{shoalv1.TaskHealth_TASK_HEALTH_HEALTHY, shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY}
	i := 0
	for b.Loop() {
		// A task's health flips: its network's state changes, the other
		// 99 do not.
		i++
		tk := proto.Clone(tasks[0]).(*shoalv1.Task)
		tk.Status.Health = health[i%2]
		tasks[0] = tk
		cur.memReader[raftstore.KindTask][0] = tk
		idx++
		cur = atIndex{cur.memReader, idx}
		c.get(cur, names[0])
	}
}
