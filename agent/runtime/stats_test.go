package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const netDev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    9000      10    0    0    0     0          0         0     9000      10    0    0    0     0       0          0
  eth0:    1500       3    0    0    0     0          0         0      700       2    0    0    0     0       0          0
  eth1:     500       1    0    0    0     0          0         0      300       1    0    0    0     0       0          0
`

func TestReadUsage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		trees map[string]map[string]string // hierarchy → files of the task's cgroup
		want  Usage
	}{
		{
			name: "cgroup v2",
			trees: map[string]map[string]string{"unified": {
				"cpu.stat": "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n", "memory.current": "4096\n", "memory.max": "max\n",
				"pids.current": "3\n", "pids.max": "100\n", "cgroup.procs": "42\n43\n",
			}},
			want: Usage{CPUUsageNS: 2_500_000, MemoryBytes: 4096, Pids: 3, PidsLimit: 100, NetRxBytes: 2000, NetTxBytes: 1000},
		},
		{
			name: "cgroup v1 controllers",
			trees: map[string]map[string]string{
				"cpuacct": {"cpuacct.usage": "123456789\n", "cgroup.procs": "42\n"},
				"memory": {"memory.usage_in_bytes": "10000\n", "memory.limit_in_bytes": "8192000\n",
					"memory.stat": "cache 100\ntotal_inactive_file 1000\n"},
				"pids": {"pids.current": "2\n", "pids.max": "max\n"},
			},
			want: Usage{CPUUsageNS: 123456789, MemoryBytes: 9000, MemoryLimitBytes: 8192000, Pids: 2, NetRxBytes: 2000, NetTxBytes: 1000},
		},
		{
			name:  "v1 memory without limit",
			trees: map[string]map[string]string{"memory": {"memory.usage_in_bytes": "10\n", "memory.limit_in_bytes": "9223372036854771712\n"}},
			want:  Usage{MemoryBytes: 10},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			proc := filepath.Join(base, "proc")
			writeFiles(t, filepath.Join(proc, "42", "net"), map[string]string{"dev": netDev})
			var roots []string
			for h, files := range tc.trees {
				roots = append(roots, filepath.Join(base, h))
				writeFiles(t, filepath.Join(base, h, "shoal", "t1"), files)
			}
			got, err := ReadUsage(roots, "/shoal", "t1", proc)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestReadUsageNoCgroup(t *testing.T) {
	_, err := ReadUsage([]string{t.TempDir()}, "/shoal", "gone", "/proc")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}
