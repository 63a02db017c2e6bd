package dispatcher

import (
	"testing"

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
