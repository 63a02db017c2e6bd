package overlay

import (
	"encoding/json"
	"os/exec"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// iperf runs an iperf3 client in namespace ns against server for secs
// seconds and returns the received rate in Gbit/s. The server may take a
// moment to listen: retried until a deadline.
func iperf(b *testing.B, ns, server string, secs string) float64 {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("ip", "netns", "exec", ns, "iperf3", "-c", server, "-t", secs, "-J").Output()
		if err == nil {
			var r struct {
				End struct {
					SumReceived struct {
						BitsPerSecond float64 `json:"bits_per_second"`
					} `json:"sum_received"`
				} `json:"end"`
			}
			if err := json.Unmarshal(out, &r); err != nil {
				b.Fatal(err)
			}
			return r.End.SumReceived.BitsPerSecond / 1e9
		}
		if time.Now().After(deadline) {
			b.Fatalf("iperf3 -c %s in %s: %v\n%s", server, ns, err, out)
		}
	}
}

func iperfServer(b *testing.B, ns string) {
	cmd := exec.Command("ip", "netns", "exec", ns, "iperf3", "-s")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// BenchmarkThroughputVXLAN measures TCP throughput task→task across two
// hosts over the overlay against host→host over the underlay, in paired
// runs (each op: 2 s underlay, 2 s overlay). Reports Gbit/s of both and
// their ratio (aim ≥ 0.9).
func BenchmarkThroughputVXLAN(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("iperf3 not installed (scripts/setup.sh installs it)")
	}
	h := newHarness(b)
	h1, h2 := h.host(1), h.host(2)
	m1, m2 := h.manager(h1, 1), h.manager(h2, 2)
	n := testNet("perf", 4300, "10.77.0.0/24", false)
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
	iperfServer(b, h2)
	iperfServer(b, t2)
	var under, over float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		under += iperf(b, h1, "192.168.250.2", "2")
		over += iperf(b, t1, "10.77.0.3", "2")
	}
	b.ReportMetric(under/float64(b.N), "underlay-Gbit/s")
	b.ReportMetric(over/float64(b.N), "overlay-Gbit/s")
	b.ReportMetric(over/under, "ratio")
}
