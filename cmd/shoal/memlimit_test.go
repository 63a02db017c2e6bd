package main

import (
	"math"
	"testing"
)

func TestSoftLimit(t *testing.T) {
	const floor = 1 << 30
	tests := []struct {
		live uint64
		want int64
	}{
		{0, floor},
		{100 << 20, floor},              // a small heap: the floor, GOGC=300 decides
		{512 << 20, floor},              // 2x live reaches the floor
		{700 << 20, 1400 << 20},         // 100,000 tasks: as GOGC=100
		{4 << 30, 8 << 30},              // never below what is live
		{math.MaxUint64, math.MaxInt64}, // no overflow
	}
	for _, tt := range tests {
		if got := softLimit(tt.live); got != tt.want {
			t.Errorf("softLimit(%d) = %d, want %d", tt.live, got, tt.want)
		}
	}
}

// TestLimitKeeperYields: the keeper follows the live heap, and stops once
// the limit in force is one it did not set (the bench's own policy), so
// the other policy is not overwritten a second later.
func TestLimitKeeperYields(t *testing.T) {
	limit := int64(math.MaxInt64)
	live := uint64(700 << 20)
	k := &limitKeeper{
		setLimit: func(v int64) int64 {
			old := limit
			if v >= 0 {
				limit = v
			}
			return old
		},
		live: func() (uint64, bool) { return live, true },
	}
	if !k.step() || limit != 1400<<20 {
		t.Fatalf("first step: limit %d, want %d", limit, 1400<<20)
	}
	live = 800 << 20
	if !k.step() || limit != 1600<<20 {
		t.Fatalf("second step: limit %d, want %d", limit, 1600<<20)
	}
	limit = math.MaxInt64 // set elsewhere
	if k.step() || limit != math.MaxInt64 {
		t.Fatalf("after another policy set the limit: step kept going or overwrote it (limit %d)", limit)
	}
}

// TestLimitKeeperYieldsToASetBetweenReadAndSet: another policy that sets
// the limit after the keeper read it and before it set its own is not
// overwritten (the keeper read its own limit, then set over the bench's,
// and went on managing a process that had chosen no limit).
func TestLimitKeeperYieldsToASetBetweenReadAndSet(t *testing.T) {
	limit := int64(math.MaxInt64)
	elsewhere := int64(3 << 30)
	reads := 0
	k := &limitKeeper{
		setLimit: func(v int64) int64 {
			old := limit
			if v < 0 {
				reads++
				if reads == 1 {
					limit = elsewhere // set by another policy right after this read
				}
				return old
			}
			limit = v
			return old
		},
		live: func() (uint64, bool) { return 700 << 20, true },
	}
	k.last = 1 << 30
	limit = k.last
	if k.step() {
		t.Error("the keeper went on after another policy set the limit")
	}
	if limit != elsewhere {
		t.Errorf("limit %d after the step, want the other policy's %d", limit, elsewhere)
	}
}
