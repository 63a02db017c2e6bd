package main

import (
	"math"
	"testing"
)

func TestSoftLimit(t *testing.T) {
	tests := []struct {
		live uint64
		want int64
	}{
		{0, 1 << 30},
		{100 << 20, 1 << 30},            // a small heap: the floor, GOGC=300 decides
		{512 << 20, 1 << 30},            // 2x live reaches the floor
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
