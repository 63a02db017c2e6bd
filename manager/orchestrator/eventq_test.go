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

func taskEvent(action shoalv1.WatchAction, id string, version uint64) *shoalv1.WatchEvent {
	return &shoalv1.WatchEvent{Action: action, Object: raftstore.Wrap(&shoalv1.Task{Meta: &shoalv1.Meta{Id: id, Version: version}})}
}

func nodeEvent(action shoalv1.WatchAction, id string, version uint64) *shoalv1.WatchEvent {
	return &shoalv1.WatchEvent{Action: action, Object: raftstore.Wrap(&shoalv1.Node{Meta: &shoalv1.Meta{Id: id, Version: version}})}
}

const (
	actCreate = shoalv1.WatchAction_WATCH_ACTION_CREATE
	actUpdate = shoalv1.WatchAction_WATCH_ACTION_UPDATE
	actDelete = shoalv1.WatchAction_WATCH_ACTION_DELETE
)

// brief events as kind/id/action/version for comparison.
func eventsBrief(evs []*shoalv1.WatchEvent) []string {
	var out []string
	for _, ev := range evs {
		o := raftstore.Unwrap(ev.GetObject())
		out = append(out, string(raftstore.KindOf(o))+"/"+o.GetMeta().GetId()+"/"+ev.GetAction().String()[len("WATCH_ACTION_"):]+
			"/"+string(rune('0'+o.GetMeta().GetVersion())))
	}
	return out
}

func TestEventQueueCoalesces(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []*shoalv1.WatchEvent
		want []string
	}{
		{"updates of one object keep the latest, in the first one's place",
			[]*shoalv1.WatchEvent{taskEvent(actUpdate, "a", 1), taskEvent(actUpdate, "b", 1), taskEvent(actUpdate, "a", 2), taskEvent(actUpdate, "a", 3)},
			[]string{"task/a/UPDATE/3", "task/b/UPDATE/1"}},
		{"a creation is kept; the updates after it coalesce among themselves",
			[]*shoalv1.WatchEvent{taskEvent(actCreate, "a", 1), taskEvent(actUpdate, "a", 2), taskEvent(actUpdate, "a", 3)},
			[]string{"task/a/CREATE/1", "task/a/UPDATE/3"}},
		{"a deletion is kept, and so is the update before it",
			[]*shoalv1.WatchEvent{taskEvent(actUpdate, "a", 1), taskEvent(actDelete, "a", 1), taskEvent(actCreate, "a", 1)},
			[]string{"task/a/UPDATE/1", "task/a/DELETE/1", "task/a/CREATE/1"}},
		{"same id, different kinds: not coalesced",
			[]*shoalv1.WatchEvent{taskEvent(actUpdate, "x", 1), nodeEvent(actUpdate, "x", 2), taskEvent(actUpdate, "x", 3)},
			[]string{"task/x/UPDATE/3", "node/x/UPDATE/2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newEventQueue()
			for _, ev := range tc.in {
				q.push(ev)
			}
			got, ended := q.take()
			if ended {
				t.Error("ended before the channel closed")
			}
			if g, w := eventsBrief(got), tc.want; !slicesEqual(g, w) {
				t.Errorf("got %v, want %v", g, w)
			}
			if rest, _ := q.take(); len(rest) != 0 {
				t.Errorf("take left %d events", len(rest))
			}
		})
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// blockingLoop's first pass blocks until released; it records what it
// observes (read by the test only after serve returned).
type blockingLoop struct {
	passing, release chan struct{}
	observed         []*shoalv1.WatchEvent
}

func (l *blockingLoop) name() string            { return "blocking" }
func (l *blockingLoop) kinds() []raftstore.Kind { return nil }
func (l *blockingLoop) resync()                 {}
func (l *blockingLoop) observe(ev *shoalv1.WatchEvent) bool {
	l.observed = append(l.observed, ev)
	return false
}
func (l *blockingLoop) pass(ctx context.Context, _ time.Time) (time.Time, error) {
	if l.passing != nil {
		close(l.passing)
		l.passing = nil
		<-l.release
	}
	return time.Time{}, nil
}

type chanSub struct {
	ch  chan *shoalv1.WatchEvent
	err error // set before ch is closed
}

func (s *chanSub) C() <-chan *shoalv1.WatchEvent { return s.ch }
func (s *chanSub) Err() error                    { return s.err }
func (s *chanSub) Close()                        {}

// TestServeReadsEventsDuringAPass: a loop in a long pass still takes its
// events off the subscription (so the store's ring does not overflow and
// cut the watch), and observes them coalesced once the pass is over.
func TestServeReadsEventsDuringAPass(t *testing.T) {
	o := newOrchestrator(nil, slog.New(slog.DiscardHandler))
	l := &blockingLoop{passing: make(chan struct{}), release: make(chan struct{})}
	passing := l.passing
	sub := &chanSub{ch: make(chan *shoalv1.WatchEvent)} // unbuffered: each send needs a reader
	done := make(chan error, 1)
	go func() { done <- o.serve(context.Background(), l, sub, o.log) }()
	<-passing

	// Far more events than any channel buffer, all sent while the pass
	// blocks.
	const n = 1000
	deadline := time.After(waitFor)
	for i := range n {
		select {
		case sub.ch <- taskEvent(actUpdate, "a", uint64(i%10)):
		case <-deadline:
			close(l.release)
			t.Fatalf("serve read %d events during a pass, then stopped reading", i)
		}
	}
	sub.ch <- taskEvent(actCreate, "b", 1)
	close(l.release)
	sub.err = raftstore.ErrSlowConsumer
	close(sub.ch)
	if err := <-done; !errors.Is(err, raftstore.ErrSlowConsumer) {
		t.Fatalf("serve returned %v, want the subscription's error", err)
	}
	if g, w := eventsBrief(l.observed), []string{"task/a/UPDATE/9", "task/b/CREATE/1"}; !slicesEqual(g, w) {
		t.Errorf("observed %v, want %v", g, w)
	}
}
