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
// live) reached 2.5 GiB RSS (docs/benchmarks-history.md, "Scheduler at scale"). The limit is
// memLimitFloor, or memLimitFactor times the live heap when that is more:
// a small heap is not collected more often than before, a big one is
// collected as with GOGC=100, and the limit never falls under what is live
// (a fixed limit below the live heap would make the GC run without end).
// GOMEMLIMIT, when set, is left alone.
//
// At 5,000 node sessions and 100,000 tasks the leader's peak RSS is
// 2 × its live heap at the busiest moment (~1.1 GiB): a floor of 960 MiB
// did not lower it, and a fixed limit of 900 MiB held it at 900 MiB for
// +30 % of the leader's CPU per task (docs/benchmarks-history.md, "Scheduler at
// scale", eighth round), so the floor stays 1 GiB.
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

// limitKeeper keeps the soft limit at softLimit of the live heap. It stops
// for good once the limit in force is not the one it set last: another
// part of the process chose its own (`shoal bench schedule`, whose
// simulated agents are a harness, not a manager: see cli's benchGC).
type limitKeeper struct {
	last int64 // the limit set last; 0 before the first
	// read and set are debug.SetMemoryLimit and the live heap (tests
	// replace them).
	setLimit func(int64) int64
	live     func() (uint64, bool)
}

// step sets the limit for the live heap now; false once it has stopped.
// The limit is read and then set, not swapped in one step: another
// policy set in between (the bench sets its own once, at its start, while
// the keeper runs) is seen in what the set returns, put back, and wins.
func (k *limitKeeper) step() bool {
	if k.last != 0 && k.setLimit(-1) != k.last {
		return false // set elsewhere: that policy wins
	}
	if live, ok := k.live(); ok {
		next := softLimit(live)
		if old := k.setLimit(next); k.last != 0 && old != k.last {
			k.setLimit(old) // set elsewhere since the read: put it back
			return false
		}
		k.last = next
	}
	return true
}

func liveHeap() (uint64, bool) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0, false
	}
	return sample[0].Value.Uint64(), true
}

// adjustMemoryLimit keeps the soft limit at softLimit of the live heap
// (as of the last GC) until ctx ends or another part of the process sets
// a limit of its own; nothing when GOMEMLIMIT is set.
func adjustMemoryLimit(ctx context.Context) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	k := &limitKeeper{setLimit: debug.SetMemoryLimit, live: liveHeap}
	k.step()
	go func() {
		tick := time.NewTicker(memLimitEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if !k.step() {
					return
				}
			}
		}
	}()
}
