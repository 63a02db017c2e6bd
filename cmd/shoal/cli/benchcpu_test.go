package cli

import (
	"math"
	"os"
	"runtime/debug"
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

// TestBenchGC: the bench process (the simulated agents) collects at GOGC
// benchGCPercent with no soft limit, unless GOGC or GOMEMLIMIT is set.
func TestBenchGC(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	if pct, setGC, noLimit := benchGC(env(nil)); pct != benchGCPercent || !setGC || !noLimit {
		t.Errorf("no environment: %d %v %v, want %d true true", pct, setGC, noLimit, benchGCPercent)
	}
	if _, setGC, noLimit := benchGC(env(map[string]string{"GOGC": "100", "GOMEMLIMIT": "2GiB"})); setGC || noLimit {
		t.Errorf("GOGC and GOMEMLIMIT set: overridden (%v %v)", setGC, noLimit)
	}
	oldPct := debug.SetGCPercent(100)
	oldLimit := debug.SetMemoryLimit(1 << 30)
	defer func() { debug.SetGCPercent(oldPct); debug.SetMemoryLimit(oldLimit) }()
	applyBenchGC(env(nil))
	if got := debug.SetGCPercent(100); got != benchGCPercent {
		t.Errorf("GOGC applied: %d, want %d", got, benchGCPercent)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("memory limit applied: %d, want none", got)
	}
}
