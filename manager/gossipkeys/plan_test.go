package gossipkeys

import (
	"bytes"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func k(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

// TestRotateKeepsOlderKeys: a rotation prepends a fresh key and keeps the
// older ones (up to MaxKeys), so that two rotations in a row still leave
// the key of a node that received neither.
func TestRotateKeepsOlderKeys(t *testing.T) {
	keys := [][]byte{k(0)}
	for i := 1; i <= MaxKeys+1; i++ {
		next, err := Rotate(keys)
		if err != nil {
			t.Fatal(err)
		}
		if len(next[0]) != KeySize || bytes.Equal(next[0], keys[0]) {
			t.Fatalf("rotation %d: first key not new", i)
		}
		want := min(len(keys)+1, MaxKeys)
		if len(next) != want {
			t.Fatalf("rotation %d: %d keys, want %d", i, len(next), want)
		}
		for j := 1; j < len(next); j++ {
			if !bytes.Equal(next[j], keys[j-1]) {
				t.Fatalf("rotation %d: key %d is not the previous key %d", i, j, j-1)
			}
		}
		if i == 2 && !bytes.Equal(next[2], k(0)) {
			t.Fatal("two rotations dropped the original key")
		}
		keys = next
	}
}

func TestDrop(t *testing.T) {
	for _, tc := range []struct {
		name    string
		keys    [][]byte
		keep    []byte
		want    [][]byte
		changed bool
	}{
		{"after one rotation", [][]byte{k(2), k(1)}, k(2), [][]byte{k(2)}, true},
		{"first of two rotations", [][]byte{k(3), k(2), k(1)}, k(2), [][]byte{k(3), k(2)}, true},
		{"second of two rotations", [][]byte{k(3), k(2)}, k(3), [][]byte{k(3)}, true},
		{"already dropped", [][]byte{k(3)}, k(3), [][]byte{k(3)}, false},
		{"keep pushed out", [][]byte{k(5), k(4)}, k(1), [][]byte{k(5), k(4)}, false},
		{"no keys", nil, k(1), nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := Drop(tc.keys, tc.keep)
			if changed != tc.changed || len(got) != len(tc.want) {
				t.Fatalf("Drop = %d keys (changed %v), want %d (changed %v)", len(got), changed, len(tc.want), tc.changed)
			}
			for i := range got {
				if !bytes.Equal(got[i], tc.want[i]) {
					t.Fatalf("key %d differs", i)
				}
			}
		})
	}
}

func TestGrace(t *testing.T) {
	for _, tc := range []struct {
		s    *shoalv1.ClusterSettings
		want time.Duration
	}{
		{nil, MinGrace}, // defaults: 2 × 500 ms × 4 = 4 s, below the minimum
		{&shoalv1.ClusterSettings{HeartbeatPeriodMs: 500, NodeDownAfterMissed: 4}, MinGrace},
		{&shoalv1.ClusterSettings{HeartbeatPeriodMs: 2000, NodeDownAfterMissed: 5}, 20 * time.Second},
		{&shoalv1.ClusterSettings{HeartbeatPeriodMs: 10000}, 80 * time.Second},
	} {
		if got := Grace(tc.s); got != tc.want {
			t.Errorf("Grace(%v) = %s, want %s", tc.s, got, tc.want)
		}
	}
}
