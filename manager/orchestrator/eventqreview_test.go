package orchestrator

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestServeCoalescesAWrappersEventsEveryTime: what a subscription that is
// not the store's (a test's wrapper, read through C) sent during a pass is
// queued before the pass ends, so the loop observes it coalesced, every
// time. Read through a queue fed by a goroutine between C and drain
// (raftstore.Pull's, since removed) the loop took a half-queued burst in
// 27 % of runs (an update of "a" observed before its last one):
// TestServeReadsEventsDuringAPass flaked.
func TestServeCoalescesAWrappersEventsEveryTime(t *testing.T) {
	for run := range 30 {
		o := newOrchestrator(nil, slog.New(slog.DiscardHandler))
		l := &blockingLoop{passing: make(chan struct{}), release: make(chan struct{})}
		passing := l.passing
		sub := &chanSub{ch: make(chan *shoalv1.WatchEvent)}
		done := make(chan error, 1)
		go func() { done <- o.serve(context.Background(), l, sub, o.log) }()
		<-passing
		deadline := time.After(waitFor)
		for i := range 200 {
			select {
			case sub.ch <- taskEvent(actUpdate, "a", uint64(i%10)):
			case <-deadline:
				close(l.release)
				t.Fatalf("run %d: serve read %d events during a pass, then stopped reading", run, i)
			}
		}
		sub.ch <- taskEvent(actCreate, "b", 1)
		close(l.release)
		sub.err = raftstore.ErrSlowConsumer
		close(sub.ch)
		if err := <-done; !errors.Is(err, raftstore.ErrSlowConsumer) {
			t.Fatalf("run %d: serve returned %v", run, err)
		}
		if g, w := eventsBrief(l.observed), []string{"task/a/UPDATE/9", "task/b/CREATE/1"}; !slicesEqual(g, w) {
			t.Fatalf("run %d: observed %v, want %v", run, g, w)
		}
	}
}
