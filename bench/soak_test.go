package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSoakParsers(t *testing.T) {
	if n, err := goroutineTotal("goroutine profile: total 87\n3 @ 0x1\n"); err != nil || n != 87 {
		t.Errorf("goroutineTotal = %d, %v; want 87", n, err)
	}
	if _, err := goroutineTotal("<html>"); err == nil {
		t.Error("goroutineTotal accepted a page that is not a goroutine profile")
	}
	ms := heapMemStats("heap profile: 1: 2 [3: 4] @ heap/1048576\n\n# runtime.MemStats\n# Alloc = 5\n# HeapInuse = 6385664\n# HeapAlloc = 3\n# Stack = 1048576 / 1081344\n# NumGC = 9\n# DebugGC = false\n")
	if ms["HeapInuse"] != 6385664 || ms["HeapAlloc"] != 3 || ms["NumGC"] != 9 || ms["StackInuse"] != 1048576 || ms["StackSys"] != 1081344 {
		t.Errorf("heapMemStats = %v", ms)
	}
	for _, tc := range []struct {
		stat string
		ppid int
		ok   bool
	}{
		{"123 (shoal) S 45 123 123 0", 45, true},
		{"123 (a) b) (c) R 7 1 1", 7, true},
		{"garbage", 0, false},
	} {
		if pp, ok := statPPID(tc.stat); pp != tc.ppid || ok != tc.ok {
			t.Errorf("statPPID(%q) = %d, %v; want %d, %v", tc.stat, pp, ok, tc.ppid, tc.ok)
		}
	}
	if got := fdDiff(map[string]int{"socket:[N]": 3, "/a": 1}, map[string]int{"socket:[N]": 5, "/b": 2}); got != "+2 /b, +2 socket:[N], -1 /a" {
		t.Errorf("fdDiff = %q", got)
	}
	if got := fdDiff(map[string]int{"x": 1}, map[string]int{"x": 1}); got != "none" {
		t.Errorf("fdDiff of equal sets = %q", got)
	}
}

func TestSmapsRSS(t *testing.T) {
	smaps := `55d0c0000000-55d0c2000000 r-xp 00000000 08:01 123 /usr/bin/shoal
Rss:                1000 kB
Pss:                 900 kB
7f0000000000-7f0001000000 r--s 00000000 08:01 456 /data/raft/raft.db
Size:              16384 kB
Rss:                 300 kB
7f0002000000-7f0003000000 rw-p 00000000 00:00 0
Rss:                2000 kB
7f0004000000-7f0005000000 r--s 00000000 08:01 789 /data/agent/state.db
Rss:                  20 kB
VmFlags: rd sh mr mw me ms sd
`
	if got := smapsRSSKB(strings.NewReader(smaps), ".db"); got != 320 {
		t.Errorf("smapsRSSKB(.db) = %d, want 320", got)
	}
}

func TestSoakMarkdown(t *testing.T) {
	var rs []soakRound
	for r := range 51 {
		rs = append(rs, soakRound{Round: r, RSSKB: 100 * 1024, HeapInuse: 10 << 20, Goroutines: 80, FDs: 30})
	}
	rs[50].RSSKB = 105 * 1024
	var b bytes.Buffer
	soakMarkdown(&b, 100, rs)
	out := b.String()
	for _, want := range []string{"| 0 | 100.0 |", "| 1 |", "| 2 |", "| 10 |", "| 25 |", "| 50 | 105.0 |", "round 50 vs round 1: RSS +5.0%", "round 50 vs round 2: RSS +5.0%"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "| 3 |") || strings.Contains(out, "| 49 |") {
		t.Errorf("a long soak prints every round:\n%s", out)
	}
}
