// Package idlemem hands the heap memory a node no longer uses back to the
// kernel once the node has gone quiet.
//
// The Go runtime keeps freed heap pages for reuse and returns them lazily:
// its background scavenger keeps about the heap goal, and shoal's GOGC=300
// makes the goal four times the live heap. So after a burst (a 100-task
// service created and removed) an idle `shoal dev` kept 30–40 MiB of RSS
// it had no use for, and how much depended on the burst's peak rather than
// on what the node still holds. Run looks at the runtime's own figures
// every few seconds; when no GC cycle ran since the last look (nothing is
// allocating: the node is idle) and enough free heap is still held, it
// calls debug.FreeOSMemory once: one GC of the (small) live heap and the
// free pages returned. While the node is busy, GCs run between looks and
// nothing is done; after a release the free heap is near zero, so the
// next one waits until a burst grew it again.
package idlemem

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

const (
	// Every is how often Run looks: idle for this long means idle.
	Every = 5 * time.Second
	// MinFree is the least free-but-held heap worth a forced GC.
	MinFree = 8 << 20
)

// sample is what one look reads from runtime/metrics.
type sample struct {
	gcCycles uint64 // completed GC cycles so far
	free     uint64 // heap bytes free and held, not yet returned to the kernel
}

// release says whether to hand the free heap back, from two consecutive
// samples: no GC in between (idle) and at least minFree held.
func release(prev, cur sample, minFree uint64) bool {
	return cur.gcCycles == prev.gcCycles && cur.free >= minFree
}

var names = []string{"/gc/cycles/total:gc-cycles", "/memory/classes/heap/free:bytes"}

func read(s []metrics.Sample) sample {
	metrics.Read(s)
	var out sample
	if s[0].Value.Kind() == metrics.KindUint64 {
		out.gcCycles = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		out.free = s[1].Value.Uint64()
	}
	return out
}

// Run looks every `every` until ctx ends and returns the free heap to the
// kernel when the process is idle (see the package doc).
func Run(ctx context.Context, every time.Duration) {
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	t := time.NewTicker(every)
	defer t.Stop()
	prev := read(s)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := read(s)
		if release(prev, cur, MinFree) {
			debug.FreeOSMemory()
			cur = read(s) // the GC it ran is not activity
		}
		prev = cur
	}
}
