package overlay

import (
	"context"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Node: an attachment waits for its network's state; a network removed
// while a task still uses it keeps its devices until the task detaches.
func TestNodeAttachWaitsAndRemoval(t *testing.T) {
	h := newHarness(t)
	h1 := h.host(1)
	node := NewNode(h.manager(h1, 1))
	nw := testNet("netn", 4400, "10.90.0.0/24", false)
	_, p := h.task("n1")
	a := att(nw, "10.90.0.2")
	done := make(chan error, 1)
	go func() {
		_, err := node.Attach(bg, p, []*shoalv1.NetworkAttachment{a})
		done <- err
	}()
	st := &shoalv1.NetworkState{Network: nw, Endpoints: []*shoalv1.Endpoint{ep("n1", "10.90.0.2", 1), ep("r", "10.90.0.9", 2)}}
	if err := node.Reconcile(bg, true, []*shoalv1.NetworkState{st}, nil); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	hh := handleIn(t, h1)
	if fdb, _ := entries(t, h1, 4400); fdb[macOf("10.90.0.9")] != "192.168.250.2" || len(fdb) != 1 {
		t.Fatalf("fdb %v", fdb)
	}
	// Removed by a diff while attached: kept.
	if err := node.Reconcile(bg, false, nil, []string{"netn"}); err != nil {
		t.Fatal(err)
	}
	if _, err := hh.LinkByName(BridgeName(4400)); err != nil {
		t.Fatalf("bridge of a network in use removed: %v", err)
	}
	if fdb, neigh := entries(t, h1, 4400); len(fdb) != 0 || len(neigh) != 0 {
		t.Fatalf("remote entries of a removed network kept: %v %v", fdb, neigh)
	}
	if err := node.Detach(bg, p, []*shoalv1.NetworkAttachment{a}); err != nil {
		t.Fatal(err)
	}
	if err := node.Reconcile(bg, true, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := hh.LinkByName(BridgeName(4400)); err == nil {
		t.Fatal("bridge of an unused, removed network still there")
	}
	if _, err := hh.LinkByName(VXLANName(4400)); err == nil {
		t.Fatal("vxlan of an unused, removed network still there")
	}
}

// TestNodeReconcileOrder: the periodic repair (Run) and message-driven
// Reconciles race; the kernel must end at the newest held state. Run
// used to snapshot the held set, let go of the lock and apply it later,
// so an older snapshot could land after a newer message and leave, say,
// an FDB entry at the address's old VTEP until the next tick (30 s).
func TestNodeReconcileOrder(t *testing.T) {
	h := newHarness(t)
	h1 := h.host(1)
	node := NewNode(h.manager(h1, 1))
	nw := testNet("nord", 4401, "10.91.0.0/24", false)
	ctx, cancel := context.WithCancel(bg)
	runDone := make(chan struct{})
	go func() { node.Run(ctx, time.Microsecond, nil); close(runDone) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-runDone
		}
	}
	defer stop()
	last := 0
	for i := 0; i < 200; i++ {
		// The remote endpoint moves between hosts 2 and 3.
		last = 2 + i%2
		st := &shoalv1.NetworkState{Network: nw, Endpoints: []*shoalv1.Endpoint{ep("r", "10.91.0.9", last)}}
		if err := node.Reconcile(bg, true, []*shoalv1.NetworkState{st}, nil); err != nil {
			t.Fatal(err)
		}
		// Whatever Run applies from now on must be this state: a
		// stale apply landing after the return shows here.
		for k := 0; k < 3; k++ {
			if fdb, _ := entries(t, h1, 4401); len(fdb) == 1 && fdb[macOf("10.91.0.9")] != vtep(last).String() {
				t.Fatalf("round %d: fdb %v after Reconcile returned with VTEP %s", i, fdb, vtep(last))
			}
		}
	}
	stop()
	want := vtep(last).String()
	if fdb, _ := entries(t, h1, 4401); fdb[macOf("10.91.0.9")] != want || len(fdb) != 1 {
		t.Fatalf("fdb %v after the last state (VTEP %s)", fdb, want)
	}
}

// TestNodeKeepsServedEntriesUntilPrune: an endpoint that leaves the held
// set keeps its neighbour and FDB entries while names and VIPs may still
// list it (the states last passed to Prune), and loses them at the Prune
// that follows the refresh without it; an address now given to another
// endpoint is not kept. Without the served set the entries went with the
// Reconcile, before any VIP had dropped the backend ("no route to host").
func TestNodeKeepsServedEntriesUntilPrune(t *testing.T) {
	h := newHarness(t)
	h1 := h.host(1)
	node := NewNode(h.manager(h1, 1))
	nw := testNet("nprune", 4402, "10.92.0.0/24", false)
	both := []*shoalv1.NetworkState{{Network: nw, Endpoints: []*shoalv1.Endpoint{ep("a", "10.92.0.5", 2), ep("b", "10.92.0.6", 3)}}}
	if err := node.Reconcile(bg, true, both, nil); err != nil {
		t.Fatal(err)
	}
	if err := node.Prune(bg, node.States()); err != nil { // names and VIPs list a and b
		t.Fatal(err)
	}
	// b leaves the state; a's address goes to c (a reuse): a's entries
	// go at once, b's stay until names and VIPs dropped it.
	next := []*shoalv1.NetworkState{{Network: nw, Endpoints: []*shoalv1.Endpoint{ep("c", "10.92.0.5", 3)}}}
	next[0].Endpoints[0].Mac = "02:42:0a:5c:00:55"
	if err := node.Reconcile(bg, true, next, nil); err != nil {
		t.Fatal(err)
	}
	fdb, neigh := entries(t, h1, 4402)
	if neigh["10.92.0.6"] != macOf("10.92.0.6") || fdb[macOf("10.92.0.6")] != vtep(3).String() {
		t.Fatalf("b's entries deleted before a refresh without it: fdb %v neigh %v", fdb, neigh)
	}
	if neigh["10.92.0.5"] != "02:42:0a:5c:00:55" || fdb[macOf("10.92.0.5")] != "" {
		t.Fatalf("a's reused address not given to c: fdb %v neigh %v", fdb, neigh)
	}
	// The periodic repair keeps them too.
	if err := node.apply(bg); err != nil {
		t.Fatal(err)
	}
	if _, neigh := entries(t, h1, 4402); neigh["10.92.0.6"] == "" {
		t.Fatalf("the repair deleted b's entries before a refresh without it: %v", neigh)
	}
	if err := node.Prune(bg, node.States()); err != nil {
		t.Fatal(err)
	}
	fdb, neigh = entries(t, h1, 4402)
	if len(neigh) != 1 || neigh["10.92.0.5"] == "" || len(fdb) != 1 {
		t.Fatalf("after the refresh without b: fdb %v neigh %v, want c's only", fdb, neigh)
	}
}
