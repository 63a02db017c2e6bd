package idlemem

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestRelease(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name      string
		prev, cur sample
		want      bool
	}{
		{"idle with free heap held", sample{allocs: 100}, sample{allocs: 100, free: MinFree}, true},
		{"idle, little held", sample{allocs: 100}, sample{allocs: 100, free: MinFree - 1}, false},
		// The garbage of a burst the GC has not collected yet is
		// reclaimable too (free heap alone missed it).
		{"idle, garbage not yet collected", sample{allocs: 100}, sample{allocs: 100, free: mib, objects: 5*mib + MinFree, live: 5 * mib}, true},
		{"idle, live heap only", sample{allocs: 100}, sample{allocs: 100, free: mib, objects: 5 * mib, live: 5 * mib}, false},
		// A GC cycle at idle (triggered by the slow allocation of
		// heartbeats) is no sign of work.
		{"idle trickle", sample{allocs: 100}, sample{allocs: 100 + MaxIdleAlloc, free: 64 * mib}, true},
		{"busy: allocating", sample{allocs: 100}, sample{allocs: 101 + MaxIdleAlloc, free: 64 * mib}, false},
		// A big live heap is marked whole by the forced GC: it waits
		// for half of it to be reclaimable.
		{"big heap, little reclaimable", sample{allocs: 100}, sample{allocs: 100, free: 64 * mib, objects: 700 * mib, live: 700 * mib}, false},
		{"big heap, half reclaimable", sample{allocs: 100}, sample{allocs: 100, free: 100 * mib, objects: 950 * mib, live: 700 * mib}, true},
	} {
		if got := release(tc.prev, tc.cur, MaxIdleAlloc, MinFree); got != tc.want {
			t.Errorf("%s: release = %v, want %v", tc.name, got, tc.want)
		}
	}
}

var sink, live [][]byte

// garbage drops n MiB the GC has not collected: something to release.
func garbage(n int) {
	for range n {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil
}

// running runs the release loop (run, keeping keep threads, with forget)
// every 20 ms until the test ends.
func running(t *testing.T, forget func(), keep int) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { run(ctx, 20*time.Millisecond, forget, keep); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// eventually polls check every 10 ms until it holds, and fails the test
// with what it says after 30 s.
func eventually(t *testing.T, check func() (ok bool, why string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, why := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(why)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Run hands a burst's freed heap back once the process is quiet. With
// 16 MiB live and GOGC=400 (shoal's 300, about), the heap goal is ~80 MiB:
// the runtime's own scavenger keeps the 64 MiB the burst freed.
func TestRunReturnsFreeHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	for range 16 {
		live = append(live, make([]byte, 1<<20))
	}
	defer func() { live = nil }()
	s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}, {Name: "/memory/classes/heap/free:bytes"}}
	// A burst: 64 MiB allocated, then dropped and collected (the runtime
	// keeps most of it as free heap for reuse).
	garbage(64)
	runtime.GC()
	metrics.Read(s)
	released0 := s[0].Value.Uint64()

	running(t, nil, threads())
	eventually(t, func() (bool, string) {
		metrics.Read(s)
		return s[0].Value.Uint64() >= released0+32<<20 && s[1].Value.Uint64() < MinFree,
			fmt.Sprintf("released %d MiB more than after the burst, %d MiB still free and held",
				(int64(s[0].Value.Uint64())-int64(released0))>>20, s[1].Value.Uint64()>>20)
	})
}

// Run also hands back a burst's garbage the GC has not collected yet:
// with the GC off here (GOGC=300 and a quiet node, in shoal, can leave it
// uncollected as long), the 64 MiB a burst dropped are objects, not free
// heap, and only counting them finds them.
func TestRunReleasesUncollectedGarbage(t *testing.T) {
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	objects0 := s[0].Value.Uint64()
	garbage(64)
	metrics.Read(s) // after the burst: it may have reused released pages
	released0 := s[1].Value.Uint64()

	running(t, nil, threads())
	eventually(t, func() (bool, string) {
		metrics.Read(s)
		objects, released := s[0].Value.Uint64(), s[1].Value.Uint64()
		return objects < objects0+16<<20 && released >= released0+32<<20,
			fmt.Sprintf("objects %d MiB (%d before the burst), released %d MiB more than before it",
				objects>>20, objects0>>20, (int64(released)-int64(released0))>>20)
	})
}

func TestShrinkWorth(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name                string
		before, after, live uint64
		want                bool
	}{
		{"shrank a lot, small heap", 6 * mib, 3 * mib, 5 * mib, true},
		{"shrank little", 6 * mib, 6*mib - MinStackShrink + 1, 5 * mib, false},
		{"shrank the least worth it", 6 * mib, 6*mib - MinStackShrink, 5 * mib, true},
		{"did not shrink", 6 * mib, 6 * mib, 5 * mib, false},
		{"grew", 6 * mib, 7 * mib, 5 * mib, false},
		// A big live heap: another GC costs more than 3 MiB of stacks.
		{"shrank, big heap", 6 * mib, 3 * mib, 700 * mib, false},
	} {
		if got := shrinkWorth(tc.before, tc.after, tc.live); got != tc.want {
			t.Errorf("%s: shrinkWorth = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// deep grows its goroutine's stack by about n KiB.
//
//go:noinline
func deep(n int) byte {
	var b [1024]byte
	b[n%len(b)] = byte(n)
	if n == 0 {
		return b[0]
	}
	return deep(n-1) + b[n%len(b)]
}

// A release also hands back the stacks a burst grew: 128 goroutines grown
// to 64 KiB and parked a few hundred bytes deep (as gRPC's stream workers
// after a burst of calls) are back under a quarter of that. One GC halves
// a stack at most, so a single release left half.
func TestRunShrinksGrownStacks(t *testing.T) {
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	s := []metrics.Sample{{Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	stacks0 := s[0].Value.Uint64()

	const n = 128
	var grown, parked sync.WaitGroup
	stop := make(chan struct{})
	grown.Add(n)
	parked.Add(n)
	for range n {
		go func() {
			defer parked.Done()
			deep(40)
			grown.Done()
			<-stop
		}()
	}
	defer func() { close(stop); parked.Wait() }()
	grown.Wait()
	metrics.Read(s)
	grew := s[0].Value.Uint64() - stacks0
	if grew < n*32<<10 {
		t.Fatalf("stacks grew by %d KiB, want at least %d", grew>>10, n*32)
	}
	garbage(8)
	running(t, nil, threads())
	eventually(t, func() (bool, string) {
		metrics.Read(s)
		stacks := s[0].Value.Uint64()
		return stacks < stacks0+grew/4,
			fmt.Sprintf("stacks %d KiB over before the burst, want under %d (a quarter of what it grew)", (int64(stacks)-int64(stacks0))>>10, grew>>12)
	})
}

// A release ends the OS threads a burst of blocking system calls left
// idle: 32 goroutines asleep in nanosleep(2) at once make the runtime
// start a thread for each (at least 16 more are asked for), and it ends
// none of them by itself.
func TestRunEndsIdleThreads(t *testing.T) {
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	before := threads()
	if before == 0 {
		t.Skip("no /proc/self/task")
	}
	running(t, nil, before)

	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ts := syscall.NsecToTimespec(int64(200 * time.Millisecond))
			syscall.Nanosleep(&ts, nil)
		}()
	}
	wg.Wait()
	if n := threads(); n < before+16 {
		t.Fatalf("%d threads after the burst, %d before: want at least 16 more", n, before)
	}
	garbage(8)
	eventually(t, func() (bool, string) {
		// A few more than before stay: the main thread, parked for good
		// if a locked goroutine ended on it, the runtime's template
		// thread, the one started in place of the last ended.
		n := threads()
		return n <= before+8, fmt.Sprintf("%d threads, %d before the burst", n, before)
	})
}

func TestEndThreadsStopsAtKeep(t *testing.T) {
	n := threads()
	if n == 0 {
		t.Skip("no /proc/self/task")
	}
	endThreads(n) // nothing to do
	if got := threads(); got < n {
		t.Errorf("%d threads, want %d (keep)", got, n)
	}
}

// A release first calls forget, so that what it drops is collected by the
// release's own GC: an idle node's caches held only for speed (the raft
// log cache) are handed back with the rest.
func TestRunForgetsBeforeReleasing(t *testing.T) {
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var mu sync.Mutex
	cache := make([]byte, 8<<20)
	forget := func() {
		mu.Lock()
		defer mu.Unlock()
		cache = nil
	}
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	garbage(8)
	running(t, forget, threads())
	eventually(t, func() (bool, string) {
		mu.Lock()
		held := cache != nil
		mu.Unlock()
		metrics.Read(s)
		return !held && s[0].Value.Uint64() < 8<<20,
			fmt.Sprintf("cache held %v, live heap %d MiB after the GC", held, s[0].Value.Uint64()>>20)
	})
}
