package runtime

import (
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestExecManyProbes: 100 probes at once, half of them timing out, leave
// the agent's fds, goroutines and children and the container's processes
// as they were.
func TestExecManyProbes(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}})
	st := running(t, rt, spec.ID)
	// One exec first: the sealed shim and libcontainer's state are opened
	// once, and count as the start.
	if code, _, err := rt.Exec(context.Background(), spec.ID, []string{"/bin/probe", "true"}); err != nil || code != 0 {
		t.Fatalf("first exec: %d %v", code, err)
	}
	fds := func() int {
		ents, _ := os.ReadDir("/proc/self/fd")
		return len(ents)
	}
	fdsBefore, gBefore, hBefore := fds(), runtime.NumGoroutine(), helperChildren(t)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := []string{"/bin/probe", "exit", "0"}
			d := 60 * time.Second
			if i%2 == 1 {
				args, d = []string{"/bin/probe", "sleeptree"}, 3*time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			code, _, err := rt.Exec(ctx, spec.ID, args)
			if i%2 == 0 && (err != nil || code != 0) {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("probe: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		f, g, h, c := fds(), runtime.NumGoroutine(), helperChildren(t), cgroupProcs(t, spec.ID)
		if f <= fdsBefore && g <= gBefore && slices.Equal(h, hBefore) && slices.Equal(c, []int{st.Pid}) {
			break
		}
		if time.Now().After(deadline) {
			var sb strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&sb, 1)
			t.Fatalf("after 100 probes: fds %d (before %d), goroutines %d (before %d), helpers %v (before %v), cgroup %v\n%s",
				f, fdsBefore, g, gBefore, h, hBefore, c, sb.String())
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}
