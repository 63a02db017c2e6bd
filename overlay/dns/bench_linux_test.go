package dns

import (
	"context"
	"fmt"
	"net"
	"sort"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func percentile(d []time.Duration, p float64) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[int(float64(len(d)-1)*p)]
}

// benchServer starts a server in a fresh netns and returns a UDP client
// connection made inside that namespace.
func benchServer(b *testing.B, view *View) *mdns.Conn {
	ns := newNetNS(b)
	srv, err := Serve(context.Background(), ns, []string{"n1"}, view, Forwarders{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	var conn net.Conn
	if err := inNetNS(ns, func() (err error) { conn, err = net.Dial("udp", Address); return }); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return &mdns.Conn{Conn: conn}
}

func ask(b *testing.B, c *mdns.Conn, name string) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), mdns.TypeA)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMsg(m); err != nil {
		b.Fatal(err)
	}
	r, err := c.ReadMsg()
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkQuery: A query for a vip-mode service from inside the task
// namespace over UDP; reports p50 and p99.
func BenchmarkQuery(b *testing.B) {
	view := NewView()
	view.Update(testStates())
	c := benchServer(b, view)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := time.Now()
		r := ask(b, c, "web")
		lat = append(lat, time.Since(s))
		if len(r.Answer) != 1 {
			b.Fatalf("answer %v", r)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(lat, 0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-µs")
}

// BenchmarkUpdateToAnswer: from view.Update (a network of 1,000
// endpoints over 100 services) returning to a query from the task
// namespace seeing the new endpoint. Reports Update's own cost too.
func BenchmarkUpdateToAnswer(b *testing.B) {
	view := NewView()
	states := func(extra int) []*shoalv1.NetworkState {
		var eps []*shoalv1.Endpoint
		var vips []*shoalv1.ServiceVIPState
		for s := 0; s < 100; s++ {
			vips = append(vips, &shoalv1.ServiceVIPState{ServiceName: fmt.Sprintf("svc%d", s), EndpointMode: "dnsrr"})
			for e := 0; e < 10; e++ {
				eps = append(eps, ep(fmt.Sprintf("svc%d", s), fmt.Sprintf("10.1.%d.%d/16", s, e+1)))
			}
		}
		eps = append(eps, ep("svc0", fmt.Sprintf("10.1.200.%d/16", extra%250+1)))
		return []*shoalv1.NetworkState{netState("n1", vips, eps...)}
	}
	c := benchServer(b, view)
	var upd, total []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st := states(i)
		want := fmt.Sprintf("10.1.200.%d", i%250+1)
		s := time.Now()
		view.Update(st)
		upd = append(upd, time.Since(s))
		for {
			r := ask(b, c, "tasks.svc0")
			found := false
			for _, rr := range r.Answer {
				if rr.(*mdns.A).A.String() == want {
					found = true
				}
			}
			if found {
				break
			}
		}
		total = append(total, time.Since(s))
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(upd, 0.5).Microseconds()), "update-p50-µs")
	b.ReportMetric(float64(percentile(total, 0.5).Microseconds()), "update-to-answer-p50-µs")
	b.ReportMetric(float64(percentile(total, 1).Microseconds()), "update-to-answer-max-µs")
}
