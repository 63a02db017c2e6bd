package allocator

import (
	"net/netip"
	"testing"
)

func mustPool(t *testing.T, subnet, gw string) *Pool {
	t.Helper()
	p, err := NewPool(subnet, gw)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPoolSkipsReservedAndReusesLate: /29 has 6 host addresses, minus the
// gateway: 5. A freed address comes back only after the never-used ones,
// and the least recently freed first.
func TestPoolSkipsReservedAndReusesLate(t *testing.T) {
	p := mustPool(t, "10.0.0.0/29", "10.0.0.1")
	var got []string
	for i := 0; i < 3; i++ {
		a, err := p.Allocate("t")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.String())
	}
	if want := "[10.0.0.2 10.0.0.3 10.0.0.4]"; fmtList(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	if !p.Release(netip.MustParseAddr("10.0.0.3"), "t") {
		t.Fatal("release")
	}
	if p.Release(netip.MustParseAddr("10.0.0.4"), "other") {
		t.Fatal("a release by another owner freed the address")
	}
	p.Release(netip.MustParseAddr("10.0.0.2"), "t")
	got = nil
	for i := 0; i < 4; i++ {
		a, err := p.Allocate("u")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.String())
	}
	// .5 and .6 never used; then .3 (freed first), then .2. .7 is broadcast.
	if want := "[10.0.0.5 10.0.0.6 10.0.0.3 10.0.0.2]"; fmtList(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	if _, err := p.Allocate("u"); err == nil {
		t.Fatal("want exhausted")
	}
}

// TestPoolReserveRebuild: rebuilding from the store reserves what tasks
// hold; new addresses come from above the highest, the gaps below after.
func TestPoolReserveRebuild(t *testing.T) {
	p := mustPool(t, "10.0.0.0/24", "10.0.0.1")
	for _, a := range []string{"10.0.0.5", "10.0.0.3"} {
		if err := p.Reserve(netip.MustParseAddr(a), "x"+a); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Reserve(netip.MustParseAddr("10.0.0.5"), "other"); err == nil {
		t.Fatal("double reserve accepted")
	}
	if err := p.Reserve(netip.MustParseAddr("10.0.0.255"), "b"); err == nil {
		t.Fatal("broadcast reserved")
	}
	a, _ := p.Allocate("n")
	if a.String() != "10.0.0.6" {
		t.Fatalf("got %s, want 10.0.0.6", a)
	}
	if p.InUse() != 3 || p.Owner(netip.MustParseAddr("10.0.0.3")) != "x10.0.0.3" {
		t.Fatal("bookkeeping")
	}
}

func TestMAC(t *testing.T) {
	if got := MAC(netip.MustParseAddr("10.220.3.7")); got != "02:42:0a:dc:03:07" {
		t.Fatal(got)
	}
}

func fmtList(s []string) string {
	out := "["
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out + "]"
}
