package cli

import (
	"os"
	"testing"
	"time"
)

// The leader's CPU time is read from /proc/PID/stat: utime + stime, with a
// command name that may hold spaces and parentheses.
func TestParseProcStatCPU(t *testing.T) {
	tests := []struct {
		stat    string
		want    time.Duration
		wantErr bool
	}{
		{"1234 (shoal) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 12 0 100 1000 50", 3250 * time.Millisecond, false},
		{"1234 (a (b) c) R 1 1 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1", 30 * time.Millisecond, false},
		{"1234 shoal S 1", 0, true},
		{"1234 (shoal) S 1 2 3", 0, true},
		{"1234 (shoal) S 1 1234 1234 0 -1 4194560 100 0 0 0 x 75 0", 0, true},
	}
	for _, tt := range tests {
		got, err := parseProcStatCPU(tt.stat)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseProcStatCPU(%q) = %v, %v; want %v (error: %v)", tt.stat, got, err, tt.want, tt.wantErr)
		}
	}
	// The real file of this process parses.
	if _, err := procCPU(os.Getpid()); err != nil {
		t.Errorf("procCPU(self): %v", err)
	}
}
