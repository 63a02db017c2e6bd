package runtime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/shoal-dev/shoal/agent/runtime/hostclean"
)

// Usage is what a task's cgroup (and network namespace) report: counters
// since the task started and current levels. A zero limit means none.
type Usage struct {
	CPUUsageNS       uint64
	MemoryBytes      uint64
	MemoryLimitBytes uint64
	Pids             uint64
	PidsLimit        uint64
	NetRxBytes       uint64
	NetTxBytes       uint64
}

// Usage reads the resource use of task id from its cgroup (v1 controllers
// or the v2 unified hierarchy, whichever holds it) and its network bytes
// from the interfaces of its network namespace. ErrNotFound when the task
// has no cgroup (not running, or already removed).
func (r *Libcontainer) Usage(id string) (Usage, error) {
	if !validID(id) {
		return Usage{}, fmt.Errorf("%w: task id %q", ErrInvalidArgument, id)
	}
	mps, err := hostclean.CgroupRoots()
	if err != nil {
		return Usage{}, err
	}
	return ReadUsage(mps, r.cgroupParent, id, "/proc")
}

// ReadUsage reads task id's usage from the cgroup directories
// <root><parent>/<id> under each of roots (the mount points of the
// hierarchies), and its network bytes from <proc>/<pid>/net/dev of the
// first process in its cgroup. It is the pure part of Usage, tested on
// fake trees.
func ReadUsage(roots []string, parent, id, proc string) (Usage, error) {
	var u Usage
	found := false
	var pid string
	for _, mp := range roots {
		d := filepath.Join(mp, parent, id)
		if _, err := os.Stat(d); err != nil {
			continue
		}
		found = true
		// cgroup v2 (unified): cpu.stat usage_usec, memory.current/max,
		// pids.current/max.
		if v, ok := statField(filepath.Join(d, "cpu.stat"), "usage_usec"); ok && u.CPUUsageNS == 0 {
			u.CPUUsageNS = v * 1000
		}
		if v, ok := readUint(filepath.Join(d, "memory.current")); ok && u.MemoryBytes == 0 {
			u.MemoryBytes = v
		}
		if v, ok := readUint(filepath.Join(d, "memory.max")); ok && u.MemoryLimitBytes == 0 {
			u.MemoryLimitBytes = v
		}
		// cgroup v1: cpuacct.usage (ns), memory.usage_in_bytes and
		// memory.limit_in_bytes (a huge value means none).
		if v, ok := readUint(filepath.Join(d, "cpuacct.usage")); ok && u.CPUUsageNS == 0 {
			u.CPUUsageNS = v
		}
		if v, ok := readUint(filepath.Join(d, "memory.usage_in_bytes")); ok && u.MemoryBytes == 0 {
			u.MemoryBytes = v
			// v1 counts the page cache in usage; docker stats shows
			// usage minus inactive file pages, as we do.
			if inact, ok := statField(filepath.Join(d, "memory.stat"), "total_inactive_file"); ok && inact < v {
				u.MemoryBytes = v - inact
			}
		}
		if v, ok := readUint(filepath.Join(d, "memory.limit_in_bytes")); ok && u.MemoryLimitBytes == 0 && v < 1<<62 {
			u.MemoryLimitBytes = v
		}
		// Both versions: pids.current and pids.max.
		if v, ok := readUint(filepath.Join(d, "pids.current")); ok && u.Pids == 0 {
			u.Pids = v
		}
		if v, ok := readUint(filepath.Join(d, "pids.max")); ok && u.PidsLimit == 0 {
			u.PidsLimit = v
		}
		if pid == "" {
			pid = firstPid(filepath.Join(d, "cgroup.procs"))
		}
	}
	if !found {
		return Usage{}, fmt.Errorf("%w: no cgroup for task %s", ErrNotFound, id)
	}
	if pid != "" {
		if rx, tx, err := NetDevBytes(filepath.Join(proc, pid, "net", "dev")); err == nil {
			u.NetRxBytes, u.NetTxBytes = rx, tx
		}
	}
	return u, nil
}

// readUint reads a one-number cgroup file; "max" (no limit) reads as
// absent.
func readUint(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
	return v, err == nil
}

// statField reads "key value" from a flat-keyed cgroup file (cpu.stat,
// memory.stat).
func statField(path, key string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func firstPid(procs string) string {
	b, err := os.ReadFile(procs)
	if err != nil {
		return ""
	}
	first, _, _ := strings.Cut(string(b), "\n")
	if _, err := strconv.Atoi(first); err != nil {
		return ""
	}
	return first
}

// NetDevBytes sums the received and transmitted bytes of every interface
// but loopback in a /proc/<pid>/net/dev file (the interfaces of that
// process's network namespace).
func NetDevBytes(path string) (rx, tx uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(name) == "lo" {
			continue // the two header lines have no colon
		}
		fs := strings.Fields(rest)
		if len(fs) < 9 {
			return 0, 0, fmt.Errorf("%s: short line %q", path, sc.Text())
		}
		r, err1 := strconv.ParseUint(fs[0], 10, 64)
		t, err2 := strconv.ParseUint(fs[8], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", path, err)
		}
		rx += r
		tx += t
	}
	return rx, tx, sc.Err()
}
