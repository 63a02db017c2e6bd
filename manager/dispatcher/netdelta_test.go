package dispatcher

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestNetworkDeltasOverSessions: over real sessions, an agent that takes
// deltas (n1, n3: newStateRig's even nodes) is sent one endpoint when one
// task of a network of 12 changes, leaves or comes, and an agent that
// does not (n2, n4: an earlier release) the whole state; both end up
// holding exactly the states computed afresh.
func TestNetworkDeltasOverSessions(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4"}
	var tasks []raftstore.Object
	for i := range 12 {
		tasks = append(tasks, mkNetTask(fmt.Sprintf("w%02d", i), "web", nodes[i%4], stRunning, fmt.Sprintf("a=10.1.0.%d/24", i+10)))
	}
	r := newWebRig(t, nodes, tasks...)
	mark := func() map[string]int {
		r.mu.Lock()
		defer r.mu.Unlock()
		m := map[string]int{}
		for _, n := range nodes {
			m[n] = len(r.got[n])
		}
		return m
	}
	// since returns what each node was sent after m.
	since := func(m map[string]int) map[string][]*shoalv1.Networks {
		r.mu.Lock()
		defer r.mu.Unlock()
		out := map[string][]*shoalv1.Networks{}
		for _, n := range nodes {
			out[n] = slices.Clone(r.got[n][m[n]:])
		}
		return out
	}
	// check says every node was sent what its kind of agent takes: one
	// delta naming upsert (or removed) for n1 and n3, the whole state of
	// want endpoints for n2 and n4.
	check := func(what string, m map[string]int, upsert, removed string, want int) {
		t.Helper()
		for n, msgs := range since(m) {
			var whole []*shoalv1.NetworkState
			var deltas []*shoalv1.NetworkDelta
			for _, msg := range msgs {
				whole = append(whole, msg.GetNetworks()...)
				deltas = append(deltas, msg.GetDeltas()...)
			}
			if n == "n1" || n == "n3" {
				if len(whole) != 0 || len(deltas) != 1 {
					t.Fatalf("%s: %s was sent %d whole states and %d deltas, want 1 delta", what, n, len(whole), len(deltas))
				}
				d := deltas[0]
				var ups []string
				for _, e := range d.GetUpsert() {
					ups = append(ups, e.GetTaskId())
				}
				if fmt.Sprint(ups) != fmt.Sprint(nonEmpty(upsert)) || fmt.Sprint(d.GetRemoved()) != fmt.Sprint(nonEmpty(removed)) ||
					len(d.GetVipsUpsert())+len(d.GetVipsRemoved()) != 0 || int(d.GetEndpoints()) != want {
					t.Fatalf("%s: %s was sent %v, want upsert %q removed %q, %d endpoints after", what, n, d, upsert, removed, want)
				}
				continue
			}
			if len(deltas) != 0 || len(whole) != 1 || len(whole[0].GetEndpoints()) != want {
				t.Fatalf("%s: %s (takes no deltas) was sent %d whole states, %d deltas, want 1 whole state of %d endpoints", what, n, len(whole), len(deltas), want)
			}
		}
	}

	m := mark()
	taskStatus(t, r.s, "w05", &shoalv1.TaskStatus{State: stRunning, Health: shoalv1.TaskHealth_TASK_HEALTH_HEALTHY})
	r.converge(t, "w05 healthy")
	check("w05 healthy", m, "w05", "", 12)

	m = mark()
	taskStatus(t, r.s, "w07", &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_COMPLETE})
	r.converge(t, "w07 ended")
	check("w07 ended", m, "", "w07", 11)

	m = mark()
	if _, err := r.s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		return tx.Create(mkNetTask("w99", "web", "n2", shoalv1.TaskState_TASK_STATE_ASSIGNED, "a=10.1.0.99/24"))
	}); err != nil {
		t.Fatal(err)
	}
	r.converge(t, "w99 assigned")
	check("w99 assigned", m, "w99", "", 12)
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// TestNetworkDeltaSharedBetweenSessions: the sessions that sent one state
// share the delta to the next, made once; a session that lags (it sent an
// older state) gets its own, which brings it to the same state.
func TestNetworkDeltaSharedBetweenSessions(t *testing.T) {
	os := []raftstore.Object{mkNet("a"), mkSvc("web", "", map[string]string{"a": "10.1.0.2/24"}, "a")}
	var nodes []string
	for i := range 6 {
		n := fmt.Sprintf("n%d", i)
		nodes = append(nodes, n)
		os = append(os, mkNode(n, fmt.Sprintf("192.168.250.%d:4243", i+1), ready),
			mkNetTask(fmt.Sprintf("w%d", i), "web", n, stRunning, fmt.Sprintf("a=10.1.0.%d/24", i+10)))
	}
	idx := uint64(1)
	cur := atIndex{objs(os...), idx}
	c := &netCache{latest: func() raftstore.Reader { return cur }}
	agents, trackers := map[string]fakeAgent{}, map[string]*networkTracker{}
	bring := func(n string, full bool) []*shoalv1.Networks {
		states, replaced := c.states(cur, n)
		msgs := trackers[n].diffKnown(states, full, replaced)
		if err := agents[n].apply(msgs); err != nil {
			t.Fatal(err)
		}
		if d := agents[n].agrees(AllNodeNetworks(cur)[n]); d != "" {
			t.Fatalf("%s: %s", n, d)
		}
		return msgs
	}
	for _, n := range nodes {
		agents[n], trackers[n] = fakeAgent{}, &networkTracker{delta: c.delta}
		bring(n, true)
	}
	// step makes task wi HEALTHY: its endpoint changes, every node keeps
	// taking part.
	step := func(i int) {
		os = slices.Clone(os)
		for j, o := range os {
			if tk, ok := o.(*shoalv1.Task); ok && tk.GetMeta().GetId() == fmt.Sprintf("w%d", i) {
				tk = proto.Clone(tk).(*shoalv1.Task)
				tk.Status.Health = shoalv1.TaskHealth_TASK_HEALTH_HEALTHY
				os[j] = tk
			}
		}
		idx++
		cur = atIndex{objs(os...), idx}
	}
	step(1)
	made := c.made
	for _, n := range nodes[:5] { // n5 lags
		msgs := bring(n, false)
		if len(msgs) != 1 || len(msgs[0].GetDeltas()) != 1 || len(msgs[0].GetNetworks()) != 0 {
			t.Fatalf("%s: sent %v, want one delta", n, msgs)
		}
	}
	if c.made != made+1 {
		t.Fatalf("5 sessions that sent one state made %d deltas, want 1", c.made-made)
	}
	step(2)
	made = c.made
	for _, n := range nodes {
		msgs := bring(n, false)
		if d := msgs[0].GetDeltas(); len(d) != 1 {
			t.Fatalf("%s: sent %v, want one delta", n, msgs)
		} else if want := map[bool]int{true: 2, false: 1}[n == "n5"]; len(d[0].GetUpsert()) != want {
			t.Fatalf("%s: delta upserts %v, want %d endpoints", n, d[0].GetUpsert(), want)
		}
	}
	if c.made != made+2 {
		t.Fatalf("sessions that sent two different states made %d deltas, want 2", c.made-made)
	}
}
