package idlemem

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestRelease(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prev, cur sample
		want      bool
	}{
		{"idle with free heap held", sample{10, 1}, sample{10, MinFree}, true},
		{"a GC ran: busy", sample{10, 0}, sample{11, 64 << 20}, false},
		{"idle, little held", sample{10, 0}, sample{10, MinFree - 1}, false},
	} {
		if got := release(tc.prev, tc.cur, MinFree); got != tc.want {
			t.Errorf("%s: release = %v, want %v", tc.name, got, tc.want)
		}
	}
}

var sink, live [][]byte

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
	for range 64 {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil
	runtime.GC()
	metrics.Read(s)
	released0 := s[0].Value.Uint64()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Run(ctx, 20*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		metrics.Read(s)
		if s[0].Value.Uint64() >= released0+32<<20 && s[1].Value.Uint64() < MinFree {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("released %d MiB more than after the burst, %d MiB still free and held",
				(int64(s[0].Value.Uint64())-int64(released0))>>20, s[1].Value.Uint64()>>20)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
