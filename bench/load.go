package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"syscall"
	"time"
)

// opFunc performs one operation for worker w. It is called from w's own
// goroutine only, so it may keep per-worker state indexed by w without
// locks.
type opFunc func(ctx context.Context, w int) error

// cellResult is one (system, cluster size, concurrency) measurement.
type cellResult struct {
	System      string        `json:"system"`
	Members     int           `json:"members"`
	Concurrency int           `json:"concurrency"`
	Duration    time.Duration `json:"duration_ns"`
	Ops         int           `json:"ops"`
	Errors      int           `json:"errors"`
	OpsPerSec   float64       `json:"ops_per_sec"`
	P50         time.Duration `json:"p50_ns"`
	P99         time.Duration `json:"p99_ns"`
	Max         time.Duration `json:"max_ns"`
	// ServerCPU is the CPU time (user + system) the cluster's processes
	// used during the measured window; 0 when not measured.
	ServerCPU time.Duration `json:"server_cpu_ns"`
	// MemberCPU is ServerCPU process by process, named by MemberNames
	// (e.g. "m1 (leader)"): where a write's CPU goes in the cluster.
	MemberCPU   []time.Duration `json:"member_cpu_ns,omitempty"`
	MemberNames []string        `json:"member_names,omitempty"`
	// ClientCPU is the CPU time (user + system) the benchmark process
	// itself used during the measured window: the writers' client side
	// (shoal's client package or etcd's clientv3, gRPC, TLS), a real
	// per-write cost of every program that writes through that client.
	ClientCPU  time.Duration `json:"client_cpu_ns"`
	FirstError string        `json:"first_error,omitempty"`
}

// cpuPerOp is the cluster's CPU time per counted operation.
func (c cellResult) cpuPerOp() time.Duration {
	if c.Ops == 0 {
		return 0
	}
	return c.ServerCPU / time.Duration(c.Ops)
}

// clientCPUPerOp is the benchmark process's own CPU time per counted
// operation.
func (c cellResult) clientCPUPerOp() time.Duration {
	if c.Ops == 0 {
		return 0
	}
	return c.ClientCPU / time.Duration(c.Ops)
}

// memberCPUPerOp is each member's CPU time per counted operation.
func (c cellResult) memberCPUPerOp() []time.Duration {
	out := make([]time.Duration, len(c.MemberCPU))
	for i, d := range c.MemberCPU {
		if c.Ops > 0 {
			out[i] = d / time.Duration(c.Ops)
		}
	}
	return out
}

// selfCPU is the user + system time of the benchmark process (all its
// threads; its children are not included).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runClosedLoop runs conc workers, each calling op back to back, for
// warmup+measure. Only calls that complete inside the measured window are
// counted; each worker writes their latencies into its own preallocated
// slice, and percentiles are computed after all workers stopped. cpu, if
// not nil, reads the CPU time of each of the cluster's processes; it is
// read when the measured window opens and when it closes. The benchmark process's own CPU time
// is read at the same edges (ClientCPU).
func runClosedLoop(ctx context.Context, conc int, warmup, measure time.Duration, perCall time.Duration, op opFunc, cpu func() []time.Duration) (cellResult, error) {
	type workerOut struct {
		lat      []time.Duration
		errs     int
		firstErr error
	}
	// Room for ~50k ops/s in total, at least 4096 per worker; append only
	// grows the slice if a worker beats that.
	perWorker := max(4096, int(measure.Seconds()*50000)/conc+1)
	outs := make([]workerOut, conc)
	for i := range outs {
		outs[i].lat = make([]time.Duration, 0, perWorker)
	}

	start := time.Now()
	winStart := start.Add(warmup)
	winEnd := winStart.Add(measure)
	var wg sync.WaitGroup
	var clientCPU time.Duration
	var memberCPU []time.Duration
	wg.Add(1)
	go func() {
		defer wg.Done()
		clientCPU = cpuDuring(ctx, winStart, winEnd, func() []time.Duration { return []time.Duration{selfCPU()} })[0]
	}()
	if cpu != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			memberCPU = cpuDuring(ctx, winStart, winEnd, cpu)
		}()
	}
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := &outs[w]
			for {
				t0 := time.Now()
				if !t0.Before(winEnd) || ctx.Err() != nil {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, perCall)
				err := op(cctx, w)
				cancel()
				t1 := time.Now()
				inWindow := !t1.Before(winStart) && t1.Before(winEnd)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					if inWindow {
						out.errs++
						if out.firstErr == nil {
							out.firstErr = err
						}
					}
					continue
				}
				if inWindow {
					out.lat = append(out.lat, t1.Sub(t0))
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return cellResult{}, err
	}

	total := 0
	res := cellResult{Concurrency: conc, Duration: measure, ClientCPU: clientCPU, MemberCPU: memberCPU}
	for _, d := range memberCPU {
		res.ServerCPU += d
	}
	var firstErr error
	for i := range outs {
		total += len(outs[i].lat)
		res.Errors += outs[i].errs
		if firstErr == nil {
			firstErr = outs[i].firstErr
		}
	}
	all := make([]time.Duration, 0, total)
	for i := range outs {
		all = append(all, outs[i].lat...)
	}
	slices.Sort(all)
	res.Ops = len(all)
	res.OpsPerSec = float64(len(all)) / measure.Seconds()
	res.P50 = percentile(all, 50)
	res.P99 = percentile(all, 99)
	if len(all) > 0 {
		res.Max = all[len(all)-1]
	}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	if res.Ops == 0 {
		if firstErr != nil {
			return res, fmt.Errorf("no call succeeded in the measured window (%d errors; first: %w)", res.Errors, firstErr)
		}
		return res, errors.New("no call completed in the measured window")
	}
	return res, nil
}

// cpuDuring returns how much each of cpu()'s figures grew between from
// and to (zeros if ctx ends first). These are the window's edges, so
// waiting for them on a timer is the measurement itself, not
// synchronisation.
func cpuDuring(ctx context.Context, from, to time.Time, cpu func() []time.Duration) []time.Duration {
	wait := func(at time.Time) bool {
		t := time.NewTimer(time.Until(at))
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if !wait(from) {
		return make([]time.Duration, len(cpu()))
	}
	start := cpu()
	if !wait(to) {
		return make([]time.Duration, len(start))
	}
	end := cpu()
	out := make([]time.Duration, len(start))
	for i := range out {
		if i < len(end) {
			out[i] = end[i] - start[i]
		}
	}
	return out
}

// percentile returns the nearest-rank p-th percentile of sorted samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// Nearest rank: the smallest value with at least p% of the samples at
	// or below it.
	rank := int(math.Ceil(float64(len(sorted)) * p / 100))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}
