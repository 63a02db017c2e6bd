package raftstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// eventKey summarises an event for comparisons.
func eventKey(ev *shoalv1.WatchEvent) string {
	o := Unwrap(ev.GetObject())
	return fmt.Sprintf("%d %s %s %s", ev.GetIndex(), ev.GetAction(), KindOf(o), o.GetMeta().GetId())
}

func eventKeys(evs []*shoalv1.WatchEvent) []string {
	out := make([]string, 0, len(evs))
	for _, ev := range evs {
		out = append(out, eventKey(ev))
	}
	return out
}

func TestWatchResume(t *testing.T) {
	s := single(t, options{})
	all, err := s.Watch(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	var idx []uint64
	for i := 0; i < 5; i++ {
		idx = append(idx, mustUpdate(t, s, createIfMissing(mkTask(fmt.Sprintf("t%d", i), "s", "", 0, 0))))
	}
	idx = append(idx, mustUpdate(t, s, func(tx WriteTx) error {
		t0 := proto.Clone(tx.Get(KindTask, "t0")).(*shoalv1.Task)
		t0.NodeId = "n1"
		if err := tx.Update(t0); err != nil {
			return err
		}
		return tx.Delete(KindTask, "t1", 0)
	}))
	live := eventKeys(collect(t, all, 7))
	want := []string{
		fmt.Sprintf("%d WATCH_ACTION_CREATE task t0", idx[0]),
		fmt.Sprintf("%d WATCH_ACTION_CREATE task t1", idx[1]),
		fmt.Sprintf("%d WATCH_ACTION_CREATE task t2", idx[2]),
		fmt.Sprintf("%d WATCH_ACTION_CREATE task t3", idx[3]),
		fmt.Sprintf("%d WATCH_ACTION_CREATE task t4", idx[4]),
		fmt.Sprintf("%d WATCH_ACTION_UPDATE task t0", idx[5]),
		fmt.Sprintf("%d WATCH_ACTION_DELETE task t1", idx[5]),
	}
	if fmt.Sprint(live) != fmt.Sprint(want) {
		t.Fatalf("live events:\n%v\nwant:\n%v", live, want)
	}

	// Resuming from the third entry replays exactly what came from there,
	// then continues live.
	sub, err := s.Watch(context.Background(), idx[2])
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	next := mustUpdate(t, s, createIfMissing(mkTask("t9", "s", "", 0, 0)))
	got := eventKeys(collect(t, sub, 6))
	wantResume := append(append([]string(nil), want[2:]...), fmt.Sprintf("%d WATCH_ACTION_CREATE task t9", next))
	if fmt.Sprint(got) != fmt.Sprint(wantResume) {
		t.Fatalf("resumed events:\n%v\nwant:\n%v", got, wantResume)
	}
	select {
	case ev := <-sub.C():
		t.Fatalf("extra event %v", eventKey(ev))
	default:
	}

	// The usual pattern: a view, then a watch from just after it.
	v := s.View()
	after, err := s.Watch(context.Background(), v.Index()+1)
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	last := mustUpdate(t, s, createIfMissing(mkTask("t10", "s", "", 0, 0)))
	if got := eventKeys(collect(t, after, 1)); got[0] != fmt.Sprintf("%d WATCH_ACTION_CREATE task t10", last) {
		t.Fatalf("after view: %v", got)
	}
	// The first subscription saw those too, in order.
	if got := eventKeys(collect(t, all, 2)); fmt.Sprint(got) != fmt.Sprint([]string{
		fmt.Sprintf("%d WATCH_ACTION_CREATE task t9", next), fmt.Sprintf("%d WATCH_ACTION_CREATE task t10", last),
	}) {
		t.Fatalf("live tail: %v", got)
	}
}

func TestWatchDeleteCarriesLastObject(t *testing.T) {
	s := single(t, options{})
	mustUpdate(t, s, createIfMissing(mkTask("t1", "svc", "n1", 0, 0)))
	sub, err := s.Watch(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	mustUpdate(t, s, func(tx WriteTx) error { return tx.Delete(KindTask, "t1", 0) })
	ev := collect(t, sub, 1)[0]
	if ev.GetAction() != shoalv1.WatchAction_WATCH_ACTION_DELETE || ev.GetObject().GetTask().GetServiceId() != "svc" {
		t.Fatalf("delete event %v", ev)
	}
}

func TestWatchCompacted(t *testing.T) {
	s := single(t, options{watchRing: 8})
	first := mustUpdate(t, s, createIfMissing(mkTask("t0", "", "", 0, 0)))
	var last uint64
	for i := 1; i < 20; i++ {
		last = mustUpdate(t, s, createIfMissing(mkTask(fmt.Sprintf("t%02d", i), "", "", 0, 0)))
	}
	if _, err := s.Watch(context.Background(), first); !errors.Is(err, ErrCompacted) {
		t.Fatalf("watch from an evicted index: %v", err)
	}
	// The 8 most recent events are still there.
	from := last - 7
	sub, err := s.Watch(context.Background(), from)
	if err != nil {
		t.Fatalf("watch from a retained index: %v", err)
	}
	defer sub.Close()
	evs := collect(t, sub, 8)
	if evs[0].GetIndex() != from || evs[7].GetIndex() != last {
		t.Fatalf("replayed %v", eventKeys(evs))
	}
	if _, err := s.Watch(context.Background(), from-1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("watch one before the ring: %v", err)
	}
}

func TestWatchKinds(t *testing.T) {
	s := single(t, options{})
	tasks, err := s.Watch(context.Background(), 0, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	defer tasks.Close()
	svcNet, err := s.Watch(context.Background(), 0, KindService, KindNetwork)
	if err != nil {
		t.Fatal(err)
	}
	defer svcNet.Close()
	mustUpdate(t, s, createIfMissing(mkService("s1", "web"), mkTask("t1", "s1", "", 0, 0), mkNode("n1", "", "h")))
	mustUpdate(t, s, createIfMissing(mkNetwork("net", "backend"), mkTask("t2", "s1", "", 0, 0)))
	for _, ev := range collect(t, tasks, 2) {
		if KindOf(Unwrap(ev.GetObject())) != KindTask {
			t.Fatalf("task watch got %v", eventKey(ev))
		}
	}
	got := eventKeys(collect(t, svcNet, 2))
	for _, k := range got {
		if !strings.HasSuffix(k, " service s1") && !strings.HasSuffix(k, " network net") {
			t.Fatalf("service/network watch got %v", got)
		}
	}
	if _, err := s.Watch(context.Background(), 0, "pods"); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

// TestWatchBurst: one entry larger than the ring, then a run of entries
// adding up to many rings, reach a subscriber that keeps reading in full,
// while one that reads nothing is cut off once the ring has dropped events
// it did not read, after a gap-free prefix, and can resume from there.
func TestWatchBurst(t *testing.T) {
	const ring = 256
	s := single(t, options{watchRing: ring})
	reader, err := s.Watch(context.Background(), 0, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	stuck, err := s.Watch(context.Background(), 0, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()

	entry := func(prefix string, n int) uint64 {
		return mustUpdate(t, s, func(tx WriteTx) error {
			for i := 0; i < n; i++ {
				if err := tx.Create(mkTask(fmt.Sprintf("%s-%05d", prefix, i), "s", "", 0, 0)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	// The reader keeps up: it has read an entry before the next is written.
	var read []*shoalv1.WatchEvent
	big := entry("big", 8*ring) // more than the ring, and than the old 1024-event buffer
	read = append(read, collect(t, reader, 8*ring)...)
	const entries, per = 40, ring * 3 / 4
	for e := 0; e < entries; e++ {
		entry(fmt.Sprintf("e%02d", e), per)
		read = append(read, collect(t, reader, per)...)
	}
	if want := 8*ring + entries*per; len(read) != want || reader.Err() != nil {
		t.Fatalf("reader got %d events (want %d), err %v", len(read), want, reader.Err())
	}
	for i, ev := range read[:8*ring] {
		if ev.GetIndex() != big || ev.GetObject().GetTask().GetMeta().GetId() != fmt.Sprintf("big-%05d", i) {
			t.Fatalf("reader event %d: %s", i, eventKey(ev))
		}
	}

	// The stuck subscriber: a prefix of the same events, then ErrSlowConsumer.
	var got []*shoalv1.WatchEvent
	for ev := range stuck.C() {
		got = append(got, ev)
	}
	if !errors.Is(stuck.Err(), ErrSlowConsumer) {
		t.Fatalf("stuck subscriber ended with %v after %d events", stuck.Err(), len(got))
	}
	if len(got) >= len(read) {
		t.Fatalf("stuck subscriber got all %d events", len(got))
	}
	for i, ev := range got {
		if eventKey(ev) != eventKey(read[i]) {
			t.Fatalf("stuck event %d is %s, want %s", i, eventKey(ev), eventKey(read[i]))
		}
	}
	// The last entry is still retained whole: resuming from it works.
	last := read[len(read)-1].GetIndex()
	resumed, err := s.Watch(context.Background(), last, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	if evs := collect(t, resumed, per); evs[0].GetIndex() != last {
		t.Fatalf("resume replayed %s first", eventKey(evs[0]))
	}
}

func TestWatchEnds(t *testing.T) {
	s := single(t, options{})
	ctx, cancel := context.WithCancel(context.Background())
	byCtx, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	byClose, err := s.Watch(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	byConsumer, err := s.Watch(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if byCtx.Err() != nil {
		t.Fatal("Err before the end")
	}
	cancel()
	if err := ended(t, byCtx); !errors.Is(err, context.Canceled) {
		t.Fatalf("ctx cancel: %v", err)
	}
	byConsumer.Close()
	if err := ended(t, byConsumer); err == nil {
		t.Fatal("consumer Close: nil Err")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ended(t, byClose); !errors.Is(err, ErrClosed) {
		t.Fatalf("store Close: %v", err)
	}
	if _, err := s.Watch(context.Background(), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Watch after Close: %v", err)
	}
}

// An entry without events (a refused write, a configuration change) that
// drops the events of an earlier entry bigger than the ring must cut the
// subscribers that had not read them, as an entry with events does: left
// behind the ring's start, a subscriber's cursor would index before it.
func TestWatchCutByEmptyEntry(t *testing.T) {
	h := newHub(4)
	sub, err := h.watch(context.Background(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// More than the pump takes at once plus the channel's buffer, so the
	// unread subscriber is still before most of them.
	const n = pumpBatch + chanBuffer + 100
	events := make([]*shoalv1.WatchEvent, n)
	for i := range events {
		events[i] = &shoalv1.WatchEvent{Index: 10, Action: shoalv1.WatchAction_WATCH_ACTION_CREATE,
			Object: Wrap(mkTask(fmt.Sprintf("t%04d", i), "s", "", 0, 0))}
	}
	h.publish(events, 10)
	h.publish(nil, 11) // drops all but the ring's 4
	got := 0
	for range sub.C() {
		got++
	}
	if !errors.Is(sub.Err(), ErrSlowConsumer) || got >= n {
		t.Fatalf("subscriber read %d of %d events and ended with %v, want ErrSlowConsumer", got, n, sub.Err())
	}
}

// Err of a live subscription does not wait for the hub's lock (held by the
// apply while it publishes), and an ended one still reports why.
func TestSubscriptionErrLiveWithoutHubLock(t *testing.T) {
	h := newHub(16)
	s := &subscription{hub: h, done: make(chan struct{})}
	h.mu.Lock()
	got := make(chan error, 1)
	go func() { got <- s.Err() }()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("live subscription: Err = %v", err)
		}
	case <-time.After(10 * time.Second):
		h.mu.Unlock()
		t.Fatal("Err of a live subscription waited for the hub's lock")
	}
	h.mu.Unlock()
	h.end(s, ErrClosed)
	if err := s.Err(); !errors.Is(err, ErrClosed) {
		t.Fatalf("ended subscription: Err = %v, want ErrClosed", err)
	}
}
