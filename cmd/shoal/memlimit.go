package main

import (
	"context"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The soft memory limit that goes with GOGC=300 (see the package doc): 300 %
// keeps the GC cheap while a manager's heap is small, but lets the heap grow
// to four times what is live, and a leader holding 100,000 tasks (~700 MB
// live) reached 2.5 GiB RSS (README, "Scheduler at scale"). The limit is
// memLimitFloor, or memLimitFactor times the live heap when that is more:
// a small heap is not collected more often than before, a big one is
// collected as with GOGC=100, and the limit never falls under what is live
// (a fixed limit below the live heap would make the GC run without end).
// GOMEMLIMIT, when set, is left alone.
const (
	memLimitFloor  = 1 << 30
	memLimitFactor = 2
	memLimitEvery  = time.Second
)

// softLimit is the memory limit for a live heap of live bytes.
func softLimit(live uint64) int64 {
	if live > math.MaxInt64/memLimitFactor {
		return math.MaxInt64
	}
	return max(memLimitFloor, int64(live)*memLimitFactor)
}

// adjustMemoryLimit keeps the soft limit at softLimit of the live heap
// (as of the last GC) until ctx ends; nothing when GOMEMLIMIT is set.
func adjustMemoryLimit(ctx context.Context) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	set := func() {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			debug.SetMemoryLimit(softLimit(sample[0].Value.Uint64()))
		}
	}
	set()
	go func() {
		tick := time.NewTicker(memLimitEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				set()
			}
		}
	}()
}
