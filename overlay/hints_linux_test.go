package overlay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func kHint(n *shoalv1.Network, task, addr string, host int, st shoalv1.TaskState) Hint {
	mac, _ := net.ParseMAC(macOf(addr))
	return Hint{NetworkID: n.GetMeta().GetId(), TaskID: task, Address: netip.MustParsePrefix(addr + "/24"),
		MAC: mac, VTEP: vtep(host), State: st}
}

// A hint programs an endpoint the state does not have yet (and traffic
// flows through it at once); the next Reconcile keeps it when the state
// has it and removes it when not; a hint never moves or removes an entry
// the state has.
func TestHintProgramsThenStateDecides(t *testing.T) {
	h := newHarness(t)
	h1, h2 := h.host(1), h.host(2)
	node := NewNode(h.manager(h1, 1))
	m2 := h.manager(h2, 2)
	n := testNet("neth", 4600, "10.78.0.0/24", false)
	only1 := &shoalv1.NetworkState{Network: n, Endpoints: []*shoalv1.Endpoint{ep("t1", "10.78.0.2", 1)}}
	both := &shoalv1.NetworkState{Network: n, Endpoints: []*shoalv1.Endpoint{ep("t1", "10.78.0.2", 1), ep("t2", "10.78.0.3", 2)}}
	if err := node.Reconcile(bg, true, []*shoalv1.NetworkState{only1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := m2.Reconcile(bg, []*shoalv1.NetworkState{both}); err != nil {
		t.Fatal(err)
	}
	t1, p1 := h.task("h1")
	t2, p2 := h.task("h2")
	if _, err := node.Attach(bg, p1, []*shoalv1.NetworkAttachment{att(n, "10.78.0.2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Attach(bg, p2, att(n, "10.78.0.3"), n); err != nil {
		t.Fatal(err)
	}
	listenIn(t, t2, "10.78.0.3:7001")
	if fdb, _ := entries(t, h1, 4600); len(fdb) != 0 {
		t.Fatalf("host 1 knows t2 before any hint: %v", fdb)
	}

	// Hint: t2 RUNNING on host 2. Host 1 programs it and reaches it.
	if r, err := node.ApplyHint(kHint(n, "t2", "10.78.0.3", 2, running)); err != nil || r != HintProgrammed {
		t.Fatalf("hint t2 up: %v %v", r, err)
	}
	if r, err := node.ApplyHint(kHint(n, "t2", "10.78.0.3", 2, running)); err != nil || r != HintIgnored {
		t.Fatalf("repeated hint: %v %v", r, err)
	}
	fdb, neigh := entries(t, h1, 4600)
	if fdb[macOf("10.78.0.3")] != "192.168.250.2" || neigh["10.78.0.3"] != macOf("10.78.0.3") {
		t.Fatalf("after hint: fdb %v neigh %v", fdb, neigh)
	}
	// Host 2 is in no state host 1 holds: the hint let its VXLAN in.
	if v, err := node.m.AllowedVTEPs(); err != nil || len(v) != 1 || v[0] != vtep(2) {
		t.Fatalf("VTEPs allowed after the hint: %v %v, want [%s]", v, err, vtep(2))
	}
	c, err := dialFrom(t, t1, "10.78.0.3:7001", 5*time.Second)
	if err != nil {
		t.Fatalf("t2 not reachable through the hinted entries: %v", err)
	}
	defer c.Close()
	if err := echo(c, "via hint"); err != nil {
		t.Fatal(err)
	}
	// A hint of our own VTEP and one for a network not held are ignored.
	if r, _ := node.ApplyHint(kHint(n, "t9", "10.78.0.9", 1, running)); r != HintIgnored {
		t.Fatalf("own-VTEP hint: %v", r)
	}
	other := kHint(n, "t9", "10.78.0.9", 2, running)
	other.NetworkID = "nope"
	if r, _ := node.ApplyHint(other); r != HintIgnored {
		t.Fatalf("hint for a network not held: %v", r)
	}

	// The state arrives with t2: the entries stay (untouched), the
	// connection keeps working.
	if err := node.Reconcile(bg, true, []*shoalv1.NetworkState{both}, nil); err != nil {
		t.Fatal(err)
	}
	if node.HeldHints() != 0 {
		t.Fatal("hints held after a Reconcile")
	}
	if fdb, _ := entries(t, h1, 4600); fdb[macOf("10.78.0.3")] != "192.168.250.2" || len(fdb) != 1 {
		t.Fatalf("after state with t2: %v", fdb)
	}
	if err := echo(c, "after state"); err != nil {
		t.Fatal(err)
	}

	// A hint claiming t2's address from host 3 (another task, or t2 on the
	// wrong host) changes nothing: the state gives the address to t2 on 2.
	if r, _ := node.ApplyHint(kHint(n, "t7", "10.78.0.3", 3, running)); r != HintIgnored {
		t.Fatalf("hint for an address the state gives another task: %v", r)
	}
	if r, _ := node.ApplyHint(kHint(n, "t2", "10.78.0.3", 3, running)); r != HintIgnored {
		t.Fatalf("hint moving t2 to host 3: %v", r)
	}
	// t2 ends (hint): the state still has it, so its entries stay; only
	// the observed state (names, VIPs) is marked until the next state.
	if r, err := node.ApplyHint(kHint(n, "t2", "10.78.0.3", 2, complete)); err != nil || r != HintMarked {
		t.Fatalf("down hint for an endpoint of the state: %v %v", r, err)
	}
	if fdb, _ := entries(t, h1, 4600); fdb[macOf("10.78.0.3")] != "192.168.250.2" || len(fdb) != 1 {
		t.Fatalf("a hint removed an entry of the state: %v", fdb)
	}
	marked := false
	for _, st := range node.States() {
		for _, e := range st.GetEndpoints() {
			marked = marked || (e.GetTaskId() == "t2" && e.GetState() == complete)
		}
	}
	if !marked {
		t.Fatal("States() does not show the hinted state")
	}

	// A hint for an endpoint the state never gets: programmed, then
	// dropped by the next Reconcile.
	if r, err := node.ApplyHint(kHint(n, "t5", "10.78.0.5", 3, running)); err != nil || r != HintProgrammed {
		t.Fatalf("hint t5: %v %v", r, err)
	}
	if fdb, _ := entries(t, h1, 4600); fdb[macOf("10.78.0.5")] != "192.168.250.3" {
		t.Fatalf("t5 not programmed: %v", fdb)
	}
	// A second hint for the same address or MAC elsewhere (t5 "moved", or
	// another task claiming it) is ignored: appending it would copy t5's
	// traffic to that VTEP too.
	if r, _ := node.ApplyHint(kHint(n, "t5", "10.78.0.5", 4, running)); r != HintIgnored {
		t.Fatalf("hint moving a hinted endpoint to another VTEP: %v", r)
	}
	if r, _ := node.ApplyHint(kHint(n, "t6", "10.78.0.5", 4, running)); r != HintIgnored {
		t.Fatalf("hint for a hinted address from another task: %v", r)
	}
	if r, _ := node.ApplyHint(kHint(n, "t5", "10.78.0.5", 4, complete)); r != HintIgnored {
		t.Fatalf("down hint from another VTEP than the held one: %v", r)
	}
	if r, _ := node.ApplyHint(kHint(n, "t5", "10.78.0.5", 4, running)); r != HintIgnored {
		t.Fatalf("hint moving a hinted endpoint after a foreign down hint: %v", r)
	}
	if fdb, _ := entries(t, h1, 4600); fdb[macOf("10.78.0.5")] != "192.168.250.3" {
		t.Fatalf("t5 moved: %v", fdb)
	}
	// Expired without the state confirming it: t5's entries go at once
	// (the entries of t2, which the state has, stay).
	if n, err := node.ExpireHints(time.Now().Add(HintTTL)); err != nil || n != 2 { // t5 and the t2 mark
		t.Fatalf("expire: %d %v", n, err)
	}
	if fdb, neigh := entries(t, h1, 4600); fdb[macOf("10.78.0.5")] != "" || neigh["10.78.0.5"] != "" {
		t.Fatalf("expired hint left entries: fdb %v neigh %v", fdb, neigh)
	} else if fdb[macOf("10.78.0.3")] != "192.168.250.2" {
		t.Fatalf("expiry removed an entry of the state: %v", fdb)
	}
	if err := node.Reconcile(bg, true, []*shoalv1.NetworkState{both}, nil); err != nil {
		t.Fatal(err)
	}
	fdb, neigh = entries(t, h1, 4600)
	if _, ok := fdb[macOf("10.78.0.5")]; ok || neigh["10.78.0.5"] != "" || len(fdb) != 1 || len(neigh) != 1 {
		t.Fatalf("hint not in the state survived a Reconcile: fdb %v neigh %v", fdb, neigh)
	}
	for _, st := range node.States() {
		for _, e := range st.GetEndpoints() {
			if e.GetState() == complete {
				t.Fatal("mark survived a Reconcile")
			}
		}
	}
	// Up then down hints for an endpoint the state lacks: withdrawn at once.
	if r, _ := node.ApplyHint(kHint(n, "t6", "10.78.0.6", 3, running)); r != HintProgrammed {
		t.Fatalf("hint t6 up: %v", r)
	}
	if r, err := node.ApplyHint(kHint(n, "t6", "10.78.0.6", 3, complete)); err != nil || r != HintWithdrawn {
		t.Fatalf("hint t6 down: %v %v", r, err)
	}
	if fdb, neigh := entries(t, h1, 4600); len(fdb) != 1 || len(neigh) != 1 {
		t.Fatalf("t6 not withdrawn: fdb %v neigh %v", fdb, neigh)
	}
	if err := echo(c, "still"); err != nil {
		t.Fatal(err)
	}
}

// A held hint expires after HintTTL even when no Networks message comes:
// a hint marking a live endpoint ended (a peer that lost a race, or a
// hostile key holder) cannot hide it from names and VIPs for ever.
func TestHintsExpire(t *testing.T) {
	const v2 = "192.168.250.2"
	node := NewNode(&Manager{})
	node.states["net1"] = hintState(stEP("b", "10.91.0.3", v2, running))
	r, err := node.ApplyHint(mkHint("b", "10.91.0.3", v2, complete))
	if err != nil || r != HintMarked {
		t.Fatalf("%v %v", r, err)
	}
	if got := node.States()[0].GetEndpoints()[0].GetState(); got != complete {
		t.Fatalf("marked state %v", got)
	}
	if n, _ := node.ExpireHints(time.Now()); n != 0 || node.HeldHints() != 1 {
		t.Fatalf("a fresh hint expired: %d, held %d", n, node.HeldHints())
	}
	if n, _ := node.ExpireHints(time.Now().Add(HintTTL)); n != 1 || node.HeldHints() != 0 {
		t.Fatalf("expired %d, held %d", n, node.HeldHints())
	}
	if got := node.States()[0].GetEndpoints()[0].GetState(); got != running {
		t.Fatalf("state after expiry %v, want the managers' %v", got, running)
	}
}
