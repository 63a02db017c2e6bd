package overlay

import (
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestPruneKeepsHintedEntries: the refresh a programmed hint causes ends
// with a Prune; it (and the periodic repair) keeps the hint's FDB and
// neighbour entries and the VXLAN of its VTEP, which only the managers'
// next state or the hint's expiry take away. Without that, every
// programmed hint was undone by the refresh it caused.
func TestPruneKeepsHintedEntries(t *testing.T) {
	h := newHarness(t)
	h1 := h.host(1)
	node := NewNode(h.manager(h1, 1))
	n := testNet("nph", 4610, "10.79.0.0/24", false)
	only1 := &shoalv1.NetworkState{Network: n, Endpoints: []*shoalv1.Endpoint{ep("t1", "10.79.0.2", 1)}}
	if err := node.Reconcile(bg, true, []*shoalv1.NetworkState{only1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := node.Prune(bg, node.States()); err != nil {
		t.Fatal(err)
	}
	if r, err := node.ApplyHint(kHint(n, "t2", "10.79.0.3", 2, running)); err != nil || r != HintProgrammed {
		t.Fatalf("hint t2 up: %v %v", r, err)
	}
	check := func(after string) {
		t.Helper()
		fdb, neigh := entries(t, h1, 4610)
		if fdb[macOf("10.79.0.3")] != vtep(2).String() || neigh["10.79.0.3"] != macOf("10.79.0.3") {
			t.Fatalf("after %s: the hinted entries are gone: fdb %v neigh %v", after, fdb, neigh)
		}
		if v, err := node.m.AllowedVTEPs(); err != nil || len(v) != 1 || v[0] != vtep(2) {
			t.Fatalf("after %s: VTEPs allowed %v %v, want [%s]", after, v, err, vtep(2))
		}
	}
	check("the hint")
	if err := node.Prune(bg, node.States()); err != nil {
		t.Fatal(err)
	}
	check("the refresh's Prune")
	if err := node.apply(bg); err != nil {
		t.Fatal(err)
	}
	check("the periodic repair")
	// The managers' state without t2 still removes them.
	if err := node.Reconcile(bg, true, []*shoalv1.NetworkState{only1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := node.Prune(bg, node.States()); err != nil {
		t.Fatal(err)
	}
	if fdb, neigh := entries(t, h1, 4610); fdb[macOf("10.79.0.3")] != "" || neigh["10.79.0.3"] != "" {
		t.Fatalf("hinted entries kept after the state without them: fdb %v neigh %v", fdb, neigh)
	}
}
