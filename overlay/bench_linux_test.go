package overlay

import (
	"fmt"
	"net/netip"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// bigState is a network 10.64.0.0/16 with n endpoints spread over 4
// remote hosts.
func bigState(vni uint32, n int) []*shoalv1.NetworkState {
	net1 := testNet(fmt.Sprintf("big%d", vni), vni, "10.64.0.0/16", false)
	st := &shoalv1.NetworkState{Network: net1}
	for i := 0; i < n; i++ {
		a := netip.AddrFrom4([4]byte{10, 64, byte((i + 2) >> 8), byte(i + 2)}).String()
		e := ep(fmt.Sprint("t", i), a, 2+i%4)
		e.Address = a + "/16"
		st.Endpoints = append(st.Endpoints, e)
	}
	return []*shoalv1.NetworkState{st}
}

// BenchmarkProgram1000 measures a host programming a network with 1,000
// remote endpoints from nothing (devices, 1,000 FDB + 1,000 neighbour
// entries, nftables). Aim: ≤ 1 s per op.
func BenchmarkProgram1000(b *testing.B) {
	h := newHarness(b)
	m := h.manager(h.host(1), 1)
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		st := bigState(uint32(5000+i), 1000)
		b.StartTimer()
		if err := m.Reconcile(bg, st); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if fdb, neigh := entries(b, h.prefix+"h1", uint32(5000+i)); len(fdb) != 1000 || len(neigh) != 1000 {
			b.Fatalf("programmed %d fdb, %d neighbours", len(fdb), len(neigh))
		}
		if err := m.Reconcile(bg, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReconcileSteady1000 measures a Reconcile that finds all of
// 1,000 endpoints already right (the agent's periodic/idle cost).
func BenchmarkReconcileSteady1000(b *testing.B) {
	h := newHarness(b)
	m := h.manager(h.host(1), 1)
	st := bigState(6000, 1000)
	if err := m.Reconcile(bg, st); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := m.Reconcile(bg, st); err != nil {
			b.Fatal(err)
		}
	}
}
