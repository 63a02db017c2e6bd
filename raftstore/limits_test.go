package raftstore

import (
	"context"
	"errors"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestEntryTooLarge: a change above the entry limit is refused with
// ErrEntryTooLarge before raft sees it (nothing applied, no event), and the
// store goes on accepting writes under the limit.
func TestEntryTooLarge(t *testing.T) {
	s := single(t, options{})
	sub, err := s.Watch(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	before := s.AppliedIndex()

	huge := mkService("huge", "huge")
	huge.Spec.Labels = map[string]string{"blob": strings.Repeat("x", DefaultMaxEntryBytes)}
	_, err = s.Update(context.Background(), createIfMissing(huge))
	if !errors.Is(err, ErrEntryTooLarge) {
		t.Fatalf("oversized entry: %v", err)
	}
	if !strings.Contains(err.Error(), "above the limit of 8388608 bytes") {
		t.Fatalf("error does not name the limit: %v", err)
	}
	if s.View().Get(KindService, "huge") != nil || s.AppliedIndex() != before {
		t.Fatalf("the refused entry was applied (applied %d, was %d)", s.AppliedIndex(), before)
	}

	// Many objects that add up to more than a (lowered) limit are refused
	// too; the same objects in smaller writes pass.
	small := single(t, options{}, func(c *Config) { c.MaxEntryBytes = 64 << 10 })
	many := func(from, to int) func(WriteTx) error {
		return func(tx WriteTx) error {
			for i := from; i < to; i++ {
				task := mkTask(NewID(), "s", "", 0, 0)
				task.Status = &shoalv1.TaskStatus{Message: strings.Repeat("m", 200)}
				if err := tx.Create(task); err != nil {
					return err
				}
			}
			return nil
		}
	}
	if _, err := small.Update(context.Background(), many(0, 1000)); !errors.Is(err, ErrEntryTooLarge) {
		t.Fatalf("1000 tasks in a 64 KiB entry: %v", err)
	}
	for i := 0; i < 1000; i += 100 {
		mustUpdate(t, small, many(i, i+100))
	}
	if n := len(small.View().List(KindTask)); n != 1000 {
		t.Fatalf("%d tasks after chunked writes, want 1000", n)
	}

	// Nothing reached the watchers of the first store until a good write.
	idx := mustUpdate(t, s, createIfMissing(mkService("ok", "ok")))
	if ev := collect(t, sub, 1)[0]; ev.GetIndex() != idx {
		t.Fatalf("first event after the refusal: %s", eventKey(ev))
	}
}
