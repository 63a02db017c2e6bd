package cli

import (
	"testing"
	"time"
)

// TestNextPoll: the counts are a second apart while the end is far, and
// come closer as it nears (a quarter of the time left at the rate so
// far), never closer than minPoll.
func TestNextPoll(t *testing.T) {
	tests := []struct {
		done, target int
		elapsed      time.Duration
		want         time.Duration
	}{
		{0, 100000, 5 * time.Second, maxPoll},                    // no rate yet
		{10000, 100000, 2 * time.Second, maxPoll},                // 18 s to go
		{80000, 100000, 8 * time.Second, 500 * time.Millisecond}, // 2 s to go
		{90000, 100000, 9 * time.Second, 250 * time.Millisecond},
		{99000, 100000, 9900 * time.Millisecond, minPoll},
		{100000, 100000, 10 * time.Second, minPoll},
	}
	for _, tc := range tests {
		if got := nextPoll(tc.done, tc.target, tc.elapsed); got != tc.want {
			t.Errorf("nextPoll(%d, %d, %v) = %v, want %v", tc.done, tc.target, tc.elapsed, got, tc.want)
		}
	}
}
