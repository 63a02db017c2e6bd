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
//
// A release also ends the OS threads a burst left idle. The runtime starts
// a thread whenever a goroutine blocks in a system call while others wait
// to run (a soak round of 100 task starts: 108–165 threads, 9 before) and
// never ends one; each keeps a 32 KiB signal stack, counted with the
// goroutine stacks (5.2 of the 6.7 MiB of stacks held after a round), and
// its own stack's touched pages. A goroutine that locks its thread and
// exits ends that thread (runtime.LockOSThread), so a release runs such
// goroutines, one at a time, while the process has more threads than when
// Run started and they end one (see endThreads).
//
// And it repeats its GC while that shrinks the goroutine stacks: the GC
// halves a stack only when under a quarter of it is in use, once per
// cycle, so one release left a gRPC stream worker a call had grown at
// half its size. It repeats while the last pass shrank the stacks by
// enough to be worth a GC (see shrinkWorth), at most MaxStackPasses times.
//
// Run's caller may also hand it a forget function, called first at each
// release, that drops what the process caches only for speed (daemon: the
// manager's raft log cache).
package idlemem

import (
	"context"
	"os"
	"runtime"
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
	// MaxStackPasses is how many more GCs a release runs while they
	// shrink the stacks: each halves a stack at most, and one grown to
	// 64 KiB and parked in under 2 KiB needs four halvings.
	MaxStackPasses = 5
	// MinStackShrink is the least a pass must have shrunk the stacks by
	// for another to run.
	MinStackShrink = 256 << 10
)

// sample is what one look reads from runtime/metrics.
type sample struct {
	allocs  uint64 // heap bytes allocated so far (cumulative)
	free    uint64 // heap bytes free and held, not yet returned to the kernel
	objects uint64 // heap bytes occupied by objects, live or not yet collected
	live    uint64 // heap bytes the last GC found live
	stacks  uint64 // heap bytes of goroutine stacks
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

// shrinkWorth says whether a release's pass that took the stacks from
// before to after bytes is worth another: it shrank them by MinStackShrink
// and by a 64th of the live heap the next pass's GC marks.
func shrinkWorth(before, after, live uint64) bool {
	return after < before && before-after >= max(MinStackShrink, live/64)
}

var names = []string{
	"/gc/heap/allocs:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/objects:bytes",
	"/gc/heap/live:bytes",
	"/memory/classes/heap/stacks:bytes",
}

func read(s []metrics.Sample) sample {
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() == metrics.KindUint64 {
			return s[i].Value.Uint64()
		}
		return 0
	}
	return sample{allocs: v(0), free: v(1), objects: v(2), live: v(3), stacks: v(4)}
}

// freeOSMemory releases the reclaimable heap, then again while the stacks
// still shrink enough (see the package doc); it returns the last sample.
func freeOSMemory(s []metrics.Sample, before sample) sample {
	debug.FreeOSMemory()
	cur := read(s)
	for range MaxStackPasses {
		if !shrinkWorth(before.stacks, cur.stacks, cur.live) {
			break
		}
		before = cur
		debug.FreeOSMemory()
		cur = read(s)
	}
	return cur
}

// threads counts the process' OS threads (0 if /proc is not there).
func threads() int {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0
	}
	return len(ents)
}

// threadExitWait is how long endThreads waits for one thread to end.
const threadExitWait = 100 * time.Millisecond

// endThreads ends idle OS threads while the process has more than keep
// (and /proc counts them): each time a goroutine that locks its thread
// and exits, then the count polled (every millisecond, for at most
// threadExitWait) until it is lower. It stops after two such goroutines
// that did not lower it: one may have run on the main thread, which the
// runtime parks for good instead of ending (once in the process' life);
// a second means a new thread took the place of the ended one, so none
// is idle any more.
func endThreads(keep int) {
	for misses := 0; misses < 2; {
		n := threads()
		if n <= keep || n == 0 {
			return
		}
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(done)
		}()
		<-done
		deadline := time.Now().Add(threadExitWait)
		for threads() >= n {
			if time.Now().After(deadline) {
				misses++
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// Run looks every `every` until ctx ends and returns the reclaimable heap
// to the kernel when the process is idle (see the package doc). forget,
// unless nil, is called first at each release: it drops what the process
// caches only for speed (the manager's raft log cache), so that the
// release's GC collects it.
func Run(ctx context.Context, every time.Duration, forget func()) {
	run(ctx, every, forget, threads())
}

// run is Run keeping keep threads.
func run(ctx context.Context, every time.Duration, forget func(), keep int) {
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
			if forget != nil {
				forget()
			}
			// Threads first: their signal stacks are freed with them.
			endThreads(keep)
			cur = freeOSMemory(s, cur) // what the release allocated is not activity
		}
		prev = cur
	}
}
