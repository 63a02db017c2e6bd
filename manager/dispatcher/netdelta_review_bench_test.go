package dispatcher

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// BenchmarkReviewDeltaFewSessions: the leader's side of one endpoint
// changing (a task's health flips) on an overlay network of 1,000
// endpoints spread over the nodes of `sessions` sessions: the cache's
// computation, then per session its diff and the marshalling of what it
// sends (what Send does), for agents that take deltas or whole states.
// A delta is made once per pair of states, however few sessions share it.
func BenchmarkReviewDeltaFewSessions(b *testing.B) {
	for _, n := range []int{1, 2, 4, 50} {
		for _, deltas := range []bool{false, true} {
			b.Run(fmt.Sprintf("sessions=%d/deltas=%v", n, deltas), func(b *testing.B) {
				names := make([]string, n)
				os := []raftstore.Object{mkNet("a"), mkSvc("s1", "", map[string]string{"a": "10.1.0.2/16"}, "a")}
				for i := range names {
					names[i] = fmt.Sprintf("n%03d", i)
					os = append(os, mkNode(names[i], fmt.Sprintf("192.168.250.%d:4243", i+1), ready))
				}
				var tasks []int // indexes in os
				for i := range 1000 {
					tasks = append(tasks, len(os))
					os = append(os, mkNetTask(fmt.Sprintf("t%04d", i), "s1", names[i%n], stRunning, fmt.Sprintf("a=10.1.%d.%d/16", i/250, i%250+3)))
				}
				idx := uint64(1)
				cur := atIndex{objs(os...), idx}
				c := &netCache{latest: func() raftstore.Reader { return cur }}
				trackers := make([]*networkTracker, n)
				for i := range trackers {
					trackers[i] = &networkTracker{}
					if deltas {
						trackers[i].delta = c.delta
					}
					states, replaced := c.states(cur, names[i])
					trackers[i].diffKnown(states, true, replaced)
				}
				health := []shoalv1.TaskHealth{shoalv1.TaskHealth_TASK_HEALTH_HEALTHY, shoalv1.TaskHealth_TASK_HEALTH_UNHEALTHY}
				bytes, k := 0, 0
				for b.Loop() {
					k++
					j := tasks[(k*7)%len(tasks)]
					tk := proto.Clone(os[j]).(*shoalv1.Task)
					tk.Status.Health = health[k%2]
					os[j] = tk
					idx++
					cur = atIndex{objs(os...), idx}
					for i, nt := range trackers {
						states, replaced := c.states(cur, names[i])
						for _, m := range nt.diffKnown(states, false, replaced) {
							out, err := proto.Marshal(m)
							if err != nil {
								b.Fatal(err)
							}
							bytes += len(out)
						}
					}
				}
				b.ReportMetric(float64(bytes)/float64(k), "netbytes/op")
			})
		}
	}
}
