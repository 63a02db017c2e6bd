package dispatcher

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// atIndex is a memReader at a given raft index.
type atIndex struct {
	memReader
	index uint64
}

func (a atIndex) Index() uint64 { return a.index }

// TestNetCacheServesNewerViews: the cache computes once per newer index,
// from the store's latest view, and serves askers whose own view is older
// (sessions that queued behind the computation) without computing again.
func TestNetCacheServesNewerViews(t *testing.T) {
	base := objs(mkNode("n1", "192.168.250.1:4243", ready), mkNet("a"),
		mkSvc("s1", "", nil, "a"), mkNetTask("t1", "s1", "n1", stRunning, "a=10.1.0.3/24"))
	latest := atIndex{base, 10}
	c := &netCache{latest: func() raftstore.Reader { return latest }}
	if got := c.get(atIndex{base, 5}, "n1"); len(got) != 1 || c.computed != 1 || c.index != 10 {
		t.Fatalf("first get: %d states, %d computations, index %d; want 1, 1, 10 (the latest view)", len(got), c.computed, c.index)
	}
	for _, idx := range []uint64{5, 7, 10} {
		if got := c.get(atIndex{base, idx}, "n1"); len(got) != 1 || c.computed != 1 {
			t.Fatalf("get at index %d: %d states, %d computations; want 1 state from the cache", idx, len(got), c.computed)
		}
	}
	latest = atIndex{base, 12}
	if c.get(atIndex{base, 11}, "n1"); c.computed != 2 || c.index != 12 {
		t.Fatalf("get past the cache: %d computations, index %d; want 2, 12", c.computed, c.index)
	}
}

// TestAllNodeNetworksWithoutNetworks: no network, no state, whatever the
// tasks (the scan of every task is skipped).
func TestAllNodeNetworksWithoutNetworks(t *testing.T) {
	r := objs(mkNode("n1", "192.168.250.1:4243", ready), mkSvc("s1", "", nil, "a"),
		mkNetTask("t1", "s1", "n1", stRunning, "a=10.1.0.3/24"))
	if got := AllNodeNetworks(r); len(got) != 0 {
		t.Fatalf("got %v, want nothing", got)
	}
}

// TestNetCacheKeepsUnchangedStates: a computation for an entry that
// changed no network (a service's label) hands out the previous
// computation's states themselves, so sessions compare pointers; a
// network that did change (a task started on it) gets a new state,
// recorded as replacing the old one; a node-local network's state per
// node likewise.
func TestNetCacheKeepsUnchangedStates(t *testing.T) {
	bridge := mkNet("b")
	bridge.Spec.Driver = "bridge"
	svc := mkSvc("s1", "", map[string]string{"a": "10.1.0.2/24"}, "a")
	base := []raftstore.Object{mkNode("n1", "192.168.250.1:4243", ready), mkNode("n2", "192.168.250.2:4243", ready),
		mkNet("a"), bridge, svc, mkSvc("s2", "", nil, "b"),
		mkNetTask("t1", "s1", "n1", stRunning, "a=10.1.0.3/24"), mkNetTask("t2", "s1", "n2", stRunning, "a=10.1.0.4/24"),
		mkNetTask("b1", "s2", "n1", stRunning, "b=10.2.0.3/24"), mkNetTask("b2", "s2", "n2", stRunning, "b=10.2.0.4/24")}
	view := atIndex{objs(base...), 1}
	c := &netCache{latest: func() raftstore.Reader { return view }}
	first := map[string][]*shoalv1.NetworkState{}
	for _, n := range []string{"n1", "n2"} {
		first[n] = slices.Clone(c.get(view, n))
		if len(first[n]) != 2 {
			t.Fatalf("%s: %d states, want 2 (overlay a, bridge b)", n, len(first[n]))
		}
	}

	// A label: the same states, pointer for pointer, none replaced.
	labelled := proto.Clone(svc).(*shoalv1.Service)
	labelled.Spec.Labels = map[string]string{"tier": "front"}
	view = atIndex{objs(append(slices.Clone(base[:4]), append([]raftstore.Object{labelled}, base[5:]...)...)...), 2}
	for _, n := range []string{"n1", "n2"} {
		states, replaced := c.states(view, n)
		for i, s := range states {
			if s != first[n][i] {
				t.Errorf("%s: state %d of network %s is a new object after a label write", n, i, s.GetNetwork().GetMeta().GetId())
			}
		}
		if len(replaced) != 0 {
			t.Errorf("%s: %d states recorded as replaced after a label write", n, len(replaced))
		}
	}
	if c.computed != 2 {
		t.Fatalf("%d computations, want 2", c.computed)
	}

	// A third task on the overlay network: its state is new and replaces
	// the one before on both nodes; the bridge's states stay.
	view = atIndex{objs(append(slices.Clone(base), mkNetTask("t3", "s1", "n2", stRunning, "a=10.1.0.5/24"))...), 3}
	for _, n := range []string{"n1", "n2"} {
		states, replaced := c.states(view, n)
		for i, s := range states {
			switch s.GetNetwork().GetMeta().GetId() {
			case "a":
				if s == first[n][i] || replaced[s] != first[n][i] || len(s.GetEndpoints()) != 3 {
					t.Errorf("%s: overlay state kept %v, replaces the old one %v, %d endpoints; want new, replacing, 3",
						n, s == first[n][i], replaced[s] == first[n][i], len(s.GetEndpoints()))
				}
			case "b":
				if s != first[n][i] {
					t.Errorf("%s: the bridge's state is a new object though it did not change", n)
				}
			}
		}
	}
}

// TestDiffTrustsTheCache: a state that is the one sent is no change, one
// the cache recorded as replacing the one sent is a change (not compared:
// here it is equal in content, which only a comparison would see), and a
// state the cache knows nothing about is compared.
func TestDiffTrustsTheCache(t *testing.T) {
	r := objs(mkNode("n1", "192.168.250.1:4243", ready), mkNet("a"), mkSvc("s1", "", nil, "a"),
		mkNetTask("t1", "s1", "n1", stRunning, "a=10.1.0.3/24"))
	states := AllNodeNetworks(r)["n1"]
	nt := &networkTracker{}
	nt.diff(states, true)
	if m := nt.diffKnown(states, false, nil); len(m) != 0 {
		t.Fatalf("the state sent again: %d messages, want none", len(m))
	}
	again := AllNodeNetworks(r)["n1"] // equal, not the same objects
	if m := nt.diffKnown(again, false, nil); len(m) != 0 {
		t.Fatalf("an equal state the cache knows nothing of: %d messages, want none", len(m))
	}
	copied := proto.Clone(again[0]).(*shoalv1.NetworkState)
	m := nt.diffKnown([]*shoalv1.NetworkState{copied}, false, map[*shoalv1.NetworkState]*shoalv1.NetworkState{copied: again[0]})
	if len(m) != 1 || len(m[0].GetNetworks()) != 1 {
		t.Fatalf("a state recorded as replacing the one sent: %v, want it sent", m)
	}
}
