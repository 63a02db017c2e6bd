package daemon

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCoalescerMergesABurst: 50 requests made while a slow run is in
// progress cost that run and at most one more — not 50 runs in series —
// and each returns only after a run that started after its request.
func TestCoalescerMergesABurst(t *testing.T) {
	var runs, state atomic.Int64 // state: what a run "programs" is the newest state at its start
	var seenAtStart atomic.Int64
	gate := make(chan struct{})
	first := true
	var mu sync.Mutex
	c := newCoalescer(func() error {
		runs.Add(1)
		seenAtStart.Store(state.Load())
		mu.Lock()
		wait := first
		first = false
		mu.Unlock()
		if wait {
			<-gate // the first run is slow: the burst arrives meanwhile
		}
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- c.Do() }()
	for runs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	for i := 1; i <= 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			state.Store(int64(i)) // a change, then a request to reflect it
			my := state.Load()
			if err := c.Do(); err != nil {
				t.Error(err)
			}
			if got := seenAtStart.Load(); got < my && state.Load() == my {
				t.Errorf("request after state %d returned with a run that saw %d", my, got)
			}
		}()
	}
	// Every request of the burst is made while the slow run holds.
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.mu.Lock()
		n := c.requested
		c.mu.Unlock()
		if n == 51 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests made, want 51", n)
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := runs.Load(); n > 3 {
		t.Fatalf("%d runs for one request and a burst of 50 during it, want at most 3", n)
	}
}

// TestCoalescerWaitsForALaterRun: a request made while a run is in
// progress is not answered by that run (it may have read the state before
// the change), and the run's error reaches the requests it covered.
func TestCoalescerWaitsForALaterRun(t *testing.T) {
	var runs atomic.Int64
	started := make(chan struct{})
	release := make(chan struct{})
	boom := errors.New("boom")
	c := newCoalescer(func() error {
		n := runs.Add(1)
		if n == 1 {
			close(started)
			<-release
			return nil
		}
		return boom
	})
	go c.Do()
	<-started
	errc := make(chan error, 1)
	go func() { errc <- c.Do() }()
	select {
	case err := <-errc:
		t.Fatalf("request answered by the run in progress (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-errc; !errors.Is(err, boom) {
		t.Fatalf("err %v, want the later run's", err)
	}
	if n := runs.Load(); n != 2 {
		t.Fatalf("%d runs, want 2", n)
	}
}
