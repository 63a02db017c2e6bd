package network

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkSetupTeardown: one task at a time. Reports the mean time of
// Setup and of Teardown separately.
func BenchmarkSetupTeardown(b *testing.B) {
	inFreshNetNS(b)
	m := newTestManager(b, Config{})
	ctx := context.Background()
	var setup, teardown time.Duration
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("bench-%d", i)
		i++
		t0 := time.Now()
		if _, err := m.Setup(ctx, id); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := m.Teardown(ctx, id); err != nil {
			b.Fatal(err)
		}
		setup += t1.Sub(t0)
		teardown += time.Since(t1)
	}
	b.ReportMetric(float64(setup.Microseconds())/float64(i)/1000, "ms/setup")
	b.ReportMetric(float64(teardown.Microseconds())/float64(i)/1000, "ms/teardown")
}

// BenchmarkConcurrent100: 100 tasks set up at once, then torn down at
// once (what a node sees when a service of 100 replicas lands on it or
// leaves). Reports wall time per task for each phase.
func BenchmarkConcurrent100(b *testing.B) {
	inFreshNetNS(b)
	m := newTestManager(b, Config{})
	ctx := context.Background()
	const n = 100
	var setup, teardown time.Duration
	round := 0
	for b.Loop() {
		errs := make([]error, n)
		var wg sync.WaitGroup
		t0 := time.Now()
		for j := range n {
			wg.Go(func() { _, errs[j] = m.Setup(ctx, fmt.Sprintf("r%d-t%d", round, j)) })
		}
		wg.Wait()
		t1 := time.Now()
		for j := range n {
			wg.Go(func() { errs[j] = m.Teardown(ctx, fmt.Sprintf("r%d-t%d", round, j)) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		setup += t1.Sub(t0)
		teardown += time.Since(t1)
		round++
	}
	b.ReportMetric(float64(setup.Microseconds())/float64(round*n)/1000, "ms/setup")
	b.ReportMetric(float64(teardown.Microseconds())/float64(round*n)/1000, "ms/teardown")
}
