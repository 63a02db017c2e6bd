package cli

import (
	"bytes"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func TestHumanBytes(t *testing.T) {
	for _, tc := range []struct {
		n      uint64
		binary bool
		want   string
	}{
		{0, true, "0B"}, {1023, true, "1023B"}, {1024, true, "1KiB"}, {1536 << 10, true, "1.5MiB"}, {64 << 20, true, "64MiB"},
		{999, false, "999B"}, {1500, false, "1.5kB"}, {2_345_678, false, "2.346MB"},
	} {
		if got := humanBytes(tc.n, tc.binary); got != tc.want {
			t.Errorf("humanBytes(%d, %v) = %q, want %q", tc.n, tc.binary, got, tc.want)
		}
	}
}

func TestRenderStats(t *testing.T) {
	resp := &shoalv1.StatsResponse{Stats: []*shoalv1.TaskStats{
		{TaskId: "abcdef1234567890", ServiceName: "web", Slot: 1, NodeId: "n1", CpuPercent: 12.345, MemoryBytes: 16 << 20, MemoryLimitBytes: 64 << 20,
			NetRxBytes: 1500, NetTxBytes: 700, Pids: 3},
		{TaskId: "fedcba0987654321", ServiceName: "web", Slot: 0, NodeId: "nodeid123456789", MemoryBytes: 2048},
	}}
	var b bytes.Buffer
	renderStats(&b, resp, map[string]string{"n1": "w1"})
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("table:\n%s", b.String())
	}
	for i, want := range [][]string{
		{"TASK", "NODE", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "PIDS"},
		{"web.1.abcdef123456", "w1", "12.35%", "16MiB / 64MiB", "25.00%", "1.5kB / 700B", "3"},
		{"web." + shortID("nodeid123456789") + ".fedcba098765", shortID("nodeid123456789"), "0.00%", "2KiB / -", "-", "0B / 0B", "0"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d %q lacks %q", i, lines[i], w)
			}
		}
	}
}
