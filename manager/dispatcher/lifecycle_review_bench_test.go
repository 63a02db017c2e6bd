package dispatcher

import (
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// BenchmarkTaskLifecycleReview is BenchmarkTaskLifecycleOverSessions with
// what the CPU went to, per life: the network states computed (netCache),
// the Networks messages the agents received, the GC cycles, and the
// wall time the writer spent.
func BenchmarkTaskLifecycleReview(b *testing.B) {
	for _, n := range []int{50, 200} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			r := newSessionRig(b, n)
			settle(b)
			msgs := func() int64 {
				var s int64
				for i := range r.networks {
					s += r.networks[i].Load()
				}
				return s
			}
			computed := func() int {
				r.d.nets.mu.Lock()
				defer r.d.nets.mu.Unlock()
				return r.d.nets.computed
			}
			var before, after syscall.Rusage
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			c0, msg0, taken := computed(), msgs(), r.d.sessionEventsTaken.Load()
			syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			seq := 0
			for b.Loop() {
				seq++
				taskLife(b, r.s, fmt.Sprintf("life%d", seq), "n000")
			}
			settle(b)
			syscall.Getrusage(syscall.RUSAGE_SELF, &after)
			runtime.ReadMemStats(&m1)
			cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
			f := float64(seq)
			b.ReportMetric(float64(cpu.Microseconds())/f, "cpu-µs/life")
			b.ReportMetric(float64(r.d.sessionEventsTaken.Load()-taken)/f, "events/life")
			b.ReportMetric(float64(computed()-c0)/f, "computed/life")
			b.ReportMetric(float64(msgs()-msg0)/f, "netmsgs/life")
			b.ReportMetric(float64(m1.NumGC-m0.NumGC)/f, "gc/life")
			b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/f/1e3, "kB-alloc/life")
		})
	}
}
