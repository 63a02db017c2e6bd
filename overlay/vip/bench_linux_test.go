package vip

import (
	"net"
	"sort"
	"testing"
	"time"
)

func p50(d []time.Duration) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2]
}

// BenchmarkProgram: one Program (a whole transaction) of 100 VIPs × 10
// backends in a task namespace.
func BenchmarkProgram(b *testing.B) {
	tp := newTopo(b, 0)
	var vs []VIP
	for v := 0; v < 100; v++ {
		x := VIP{Addr: net.IPv4(10, 9, 0, byte(v+1))}
		for i := 0; i < 10; i++ {
			x.Backends = append(x.Backends, net.IPv4(10, 9, byte(v+1), byte(i+1)))
		}
		vs = append(vs, x)
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := time.Now()
		if err := Program(tp.client, vs); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(s))
	}
	b.StopTimer()
	b.ReportMetric(float64(p50(lat).Microseconds()), "p50-µs")
}

// BenchmarkConnect: TCP connect + first byte through the VIP (DNAT),
// against the same to the backend address directly, in the same run.
func BenchmarkConnect(b *testing.B) {
	tp := newTopo(b, 1)
	if err := Program(tp.client, []VIP{{Addr: net.ParseIP(vipAddr), Backends: tp.addrs}}); err != nil {
		b.Fatal(err)
	}
	measure := func(addr string) time.Duration {
		var lat []time.Duration
		for i := 0; i < b.N; i++ {
			s := time.Now()
			c, err := tp.dial(b, addr)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(s))
			c.Close()
		}
		return p50(lat)
	}
	b.ResetTimer()
	viaVIP := measure(vipAddr + ":7000")
	direct := measure(tp.addrs[0].String() + ":7000")
	b.StopTimer()
	b.ReportMetric(float64(viaVIP.Microseconds()), "vip-p50-µs")
	b.ReportMetric(float64(direct.Microseconds()), "direct-p50-µs")
}
