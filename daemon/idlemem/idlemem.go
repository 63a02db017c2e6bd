// Package idlemem hands the heap memory a node no longer uses back to the
// kernel once the node has gone quiet.
//
// The Go runtime keeps freed heap pages for reuse and returns them lazily:
// its background scavenger keeps about the heap goal, and shoal's GOGC=300
// makes the goal four times the live heap. So after a burst (a 100-task
// service created and removed) an idle `shoal dev` kept 30–40 MiB of RSS
// it had no use for, and how much depended on the burst's peak rather than
// on what the node still holds. Run looks at the runtime's own figures
// every few seconds; when the node allocated little since the last look
// (it is idle) and enough heap is reclaimable, it calls debug.FreeOSMemory
// once: one GC of the (small) live heap and the free pages returned.
//
// Reclaimable is the free heap held plus what was allocated since the last
// GC (at idle, garbage the next GC frees): counting only the free heap
// missed a burst whose garbage the GC had not collected yet, and that
// round's idle RSS stayed tens of MiB up (the soak benchmark's round 1 at
// 67 MiB instead of 49 in one run of three). Idle is an allocation rate,
// not "no GC cycle since the last look": an idle node still allocates a
// little (heartbeats, gossip), and the GC cycle that slow trickle
// eventually triggers is no sign of work. While the node is busy it
// allocates more than MaxIdleAlloc a look and nothing is done; after a
// release nothing is reclaimable, so an idle node releases again only
// once it has allocated MinFree more, or half its live heap if that is
// more (one GC of its small live heap every MinFree of idle allocation,
// instead of every three live heaps' worth as GOGC=300 would).
package idlemem

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

const (
	// Every is how often Run looks.
	Every = 5 * time.Second
	// MaxIdleAlloc is the most a node allocates between two looks and
	// still counts as idle: an idle `shoal dev` allocated 0.5–2 MiB in
	// Every (and ran a GC cycle every 6–30 s doing so), one creating
	// 100 tasks about 30 MiB a second.
	MaxIdleAlloc = 4 << 20
	// MinFree is the least reclaimable heap worth a forced GC.
	MinFree = 4 << 20
)

// sample is what one look reads from runtime/metrics.
type sample struct {
	allocs  uint64 // heap bytes allocated so far (cumulative)
	free    uint64 // heap bytes free and held, not yet returned to the kernel
	objects uint64 // heap bytes occupied by objects, live or not yet collected
	live    uint64 // heap bytes the last GC found live
}

// reclaimable is what a GC and a release would hand back: the free heap
// and the objects allocated (or left unswept) since the last GC.
func (s sample) reclaimable() uint64 {
	r := s.free
	if s.objects > s.live {
		r += s.objects - s.live
	}
	return r
}

// release says whether to hand the reclaimable heap back, from two
// consecutive samples: little allocated in between (idle) and at least
// minFree reclaimable, and at least half the live heap: the forced GC
// marks the whole live heap, so a leader holding 700 MB is not collected
// for every few MiB its heartbeats allocate (its own GC would wait for
// 700 MB more, see cmd/shoal/memlimit.go), at most about twice as often.
func release(prev, cur sample, maxIdleAlloc, minFree uint64) bool {
	return cur.allocs-prev.allocs <= maxIdleAlloc && cur.reclaimable() >= max(minFree, cur.live/2)
}

var names = []string{
	"/gc/heap/allocs:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/objects:bytes",
	"/gc/heap/live:bytes",
}

func read(s []metrics.Sample) sample {
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() == metrics.KindUint64 {
			return s[i].Value.Uint64()
		}
		return 0
	}
	return sample{allocs: v(0), free: v(1), objects: v(2), live: v(3)}
}

// Run looks every `every` until ctx ends and returns the reclaimable heap
// to the kernel when the process is idle (see the package doc).
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
		if release(prev, cur, MaxIdleAlloc, MinFree) {
			debug.FreeOSMemory()
			cur = read(s) // what the release allocated is not activity
		}
		prev = cur
	}
}
