package overlay

import (
	"net"
	"slices"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// BenchmarkRTT measures the p50 round trip of a 1-byte TCP echo
// task→task over the overlay and host→host over the underlay, in the same
// run (alternating).
func BenchmarkRTT(b *testing.B) {
	h := newHarness(b)
	h1, h2 := h.host(1), h.host(2)
	m1, m2 := h.manager(h1, 1), h.manager(h2, 2)
	n := testNet("rtt", 4600, "10.77.0.0/24", false)
	st := []*shoalv1.NetworkState{{Network: n, Endpoints: []*shoalv1.Endpoint{ep("t1", "10.77.0.2", 1), ep("t2", "10.77.0.3", 2)}}}
	for _, m := range []*Manager{m1, m2} {
		if err := m.Reconcile(bg, st); err != nil {
			b.Fatal(err)
		}
	}
	t1, p1 := h.task("1")
	t2, p2 := h.task("2")
	if _, err := m1.Attach(bg, p1, att(n, "10.77.0.2"), n); err != nil {
		b.Fatal(err)
	}
	if _, err := m2.Attach(bg, p2, att(n, "10.77.0.3"), n); err != nil {
		b.Fatal(err)
	}
	listenIn(b, t2, "10.77.0.3:7200")
	listenIn(b, h2, "192.168.250.2:7200")
	over, err := dialFrom(b, t1, "10.77.0.3:7200", 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer over.Close()
	under, err := dialFrom(b, h1, "192.168.250.2:7200", 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer under.Close()
	rt := func(c net.Conn) time.Duration {
		buf := []byte{1}
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var ov, un []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ov = append(ov, rt(over))
		un = append(un, rt(under))
	}
	slices.Sort(ov)
	slices.Sort(un)
	b.ReportMetric(float64(ov[len(ov)/2].Nanoseconds())/1e3, "overlay-p50-µs")
	b.ReportMetric(float64(un[len(un)/2].Nanoseconds())/1e3, "underlay-p50-µs")
}
