package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/agent/runtime/hostclean"
)

// The soak benchmark (-soak N) looks for what a node keeps after its tasks
// are gone: `shoal dev` (as for -containers) runs N rounds of one service
// of -soak-tasks replicas created → all RUNNING → removed → every task
// gone → idle, and after each round (and once before the first) records
// the node process' footprint. A node that forgets what it no longer
// needs ends every round where the first ended.

// soakDebugAddr is where the dev node serves pprof (SHOAL_DEBUG_ADDR),
// inside the benchmark's network namespace: nothing outside reaches it.
const soakDebugAddr = "127.0.0.1:6060"

// soakRound is the idle footprint after one round (round 0: before any).
type soakRound struct {
	Round     int   `json:"round"`
	RSSKB     int64 `json:"rss_kb"`           // VmRSS, read before anything forces a GC
	AnonKB    int64 `json:"rss_anon_kb"`      // of which anonymous memory (Go heap, stacks, runtime)
	FileKB    int64 `json:"rss_file_kb"`      // of which file pages (the binary's text, bbolt's mmaps)
	DBKB      int64 `json:"rss_db_kb"`        // of the file pages, those of bbolt files (*.db: raft log, agent state)
	HeapInuse int64 `json:"heap_inuse_bytes"` // runtime HeapInuse after a forced GC (pprof heap?gc=1)
	HeapAlloc int64 `json:"heap_alloc_bytes"` // live heap after that GC
	HeapSys   int64 `json:"heap_sys_bytes"`   // heap memory obtained from the OS
	Released  int64 `json:"heap_released_bytes"`
	// What the anonymous RSS is made of when it is read (before the
	// forced GC): heap pages held (HeapSys − HeapReleased, objects live
	// or not yet collected plus free pages not returned), goroutine
	// stacks, and the runtime's own metadata (spans, GC bitmaps, …).
	HeldHeap    int64          `json:"idle_heap_held_bytes"`
	HeldObjects int64          `json:"idle_heap_objects_bytes"` // HeapAlloc then: live + garbage since the last GC
	Stacks      int64          `json:"idle_stack_bytes"`
	RuntimeMeta int64          `json:"idle_runtime_bytes"`
	Goroutines  int            `json:"goroutines"`
	Threads     int            `json:"threads"` // the node process' OS threads (each holds its own stack)
	FDs         int            `json:"fds"`
	FDKinds     map[string]int `json:"fd_kinds"`   // open files by target, digits replaced by N
	Mounts      int            `json:"mounts"`     // under the data dir
	Cgroups     int            `json:"cgroups"`    // directories below the cgroup parent, every hierarchy
	StateDirs   int            `json:"state_dirs"` // <data-dir>/runtime entries (task state dirs)
	Procs       int            `json:"procs"`      // descendants of the node process + processes in its cgroups
	UpSeconds   float64        `json:"up_seconds"` // create → all RUNNING
	RmSeconds   float64        `json:"rm_seconds"` // remove → every task gone
}

func benchSoak(ctx context.Context, e *env, rounds, tasks int) ([]soakRound, error) {
	dn, err := startDev(ctx, e, "soak", []string{"SHOAL_DEBUG_ADDR=" + soakDebugAddr})
	if err != nil {
		return nil, err
	}
	defer dn.stop(ctx)
	httpc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return dn.ns.dial(ctx, addr) },
	}}
	defer httpc.CloseIdleConnections()

	var out []soakRound
	measure := func(r int, up, rm time.Duration) error {
		// Idle: every process, mount and cgroup of the round gone (or
		// a minute passed, then it counts as left behind), then
		// -soak-settle of nothing, then the figures.
		if len(out) > 0 {
			base := out[0]
			_ = waitFor(ctx, time.Minute, func() error {
				s := dn.hostCounts()
				if s.Procs > base.Procs || s.Mounts > base.Mounts || s.Cgroups > base.Cgroups || s.StateDirs > base.StateDirs {
					return fmt.Errorf("not idle yet")
				}
				return nil
			})
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(e.o.soakSettle):
		}
		s := dn.hostCounts()
		s.Round, s.UpSeconds, s.RmSeconds = r, up.Seconds(), rm.Seconds()
		st := fmt.Sprintf("/proc/%d/status", dn.pid)
		s.RSSKB, s.AnonKB, s.FileKB = statusField(st, "VmRSS:"), statusField(st, "RssAnon:"), statusField(st, "RssFile:")
		s.DBKB = mappedRSSKB(dn.pid, ".db")
		s.Threads = int(statusField(st, "Threads:"))
		s.FDKinds = fdKinds(dn.pid)
		for _, n := range s.FDKinds {
			s.FDs += n
		}
		if err := soakDebug(ctx, httpc, &s); err != nil {
			return fmt.Errorf("round %d: debug endpoint: %w", r, err)
		}
		if e.o.soakPprof != "" {
			if err := saveHeap(ctx, httpc, filepath.Join(e.o.soakPprof, fmt.Sprintf("heap-%03d.pb.gz", r))); err != nil {
				return err
			}
			if err := saveDebug(ctx, httpc, "/debug/pprof/goroutine?debug=2", filepath.Join(e.o.soakPprof, fmt.Sprintf("goroutine-%03d.txt", r))); err != nil {
				return err
			}
		}
		out = append(out, s)
		e.logf("soak round %d/%d: RSS %.1f MiB (anon %.1f: heap held %.1f of which objects %.1f, stacks %.1f, runtime %.1f; file %.1f of which bbolt %.1f), heap in use %.1f MiB, %d goroutines, %d threads, %d fds, %d mounts, %d cgroups, %d state dirs, %d processes (up %.1fs, rm %.1fs)",
			r, rounds, float64(s.RSSKB)/1024, float64(s.AnonKB)/1024, mib(s.HeldHeap), mib(s.HeldObjects), mib(s.Stacks), mib(s.RuntimeMeta), float64(s.FileKB)/1024, float64(s.DBKB)/1024, float64(s.HeapInuse)/(1<<20), s.Goroutines, s.Threads, s.FDs, s.Mounts, s.Cgroups, s.StateDirs, s.Procs, s.UpSeconds, s.RmSeconds)
		return nil
	}
	if e.o.soakPprof != "" {
		if err := os.MkdirAll(e.o.soakPprof, 0o755); err != nil {
			return nil, err
		}
	}
	if err := measure(0, 0, 0); err != nil {
		return out, err
	}
	for r := 1; r <= rounds; r++ {
		up, id, err := createAndWait(ctx, dn.cl, fmt.Sprintf("soak%d", r), tasks)
		if err != nil {
			return out, fmt.Errorf("round %d: %w", r, err)
		}
		start := time.Now()
		if err := removeAndWait(ctx, dn.cl, id); err != nil {
			return out, fmt.Errorf("round %d: %w", r, err)
		}
		if err := measure(r, up, time.Since(start)); err != nil {
			return out, err
		}
	}
	return out, nil
}

// hostCounts counts what the node holds on the host: mounts under its
// data dir, cgroups under its parent, task state dirs, processes.
func (d *devNode) hostCounts() soakRound {
	var s soakRound
	if m, err := hostclean.MountsUnder(d.dir); err == nil {
		s.Mounts = len(m)
	}
	if c, err := hostclean.CgroupDirs(d.cgParent); err == nil {
		for _, x := range c {
			if x.Depth > 0 { // the parent itself is made once, with the first task, and stays
				s.Cgroups++
			}
		}
	}
	s.StateDirs = countDir(filepath.Join(d.dir, "runtime"))
	pids := map[int]bool{}
	if cg, err := hostclean.CgroupPids(d.cgParent); err == nil {
		for _, p := range cg {
			pids[p] = true
		}
	}
	for _, p := range descendants(d.pid) {
		pids[p] = true
	}
	s.Procs = len(pids)
	return s
}

// mappedRSSKB sums the resident pages of pid's mappings of files whose
// name ends with suffix (/proc/<pid>/smaps).
func mappedRSSKB(pid int, suffix string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	return smapsRSSKB(f, suffix)
}

func smapsRSSKB(r io.Reader, suffix string) int64 {
	var kb int64
	match := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if !strings.HasSuffix(f[0], ":") { // a mapping's header: range perms offset dev inode [path]
			match = len(f) >= 6 && strings.HasSuffix(f[len(f)-1], suffix)
			continue
		}
		if match && f[0] == "Rss:" && len(f) >= 2 {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			kb += v
		}
	}
	return kb
}

// fdKinds counts the open files of pid by what they point to, numbers
// (pids, inodes, temp dir suffixes) replaced by N so that kinds compare
// across rounds.
func fdKinds(pid int) map[string]int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	out := map[string]int{}
	for _, ent := range ents {
		target, err := os.Readlink(filepath.Join(dir, ent.Name()))
		if err != nil {
			continue
		}
		out[digits.ReplaceAllString(target, "N")]++
	}
	return out
}

var digits = regexp.MustCompile(`[0-9]+`)

// fdDiff describes how the open files of b differ from those of a.
func fdDiff(a, b map[string]int) string {
	var out []string
	for k := range b {
		if d := b[k] - a[k]; d != 0 {
			out = append(out, fmt.Sprintf("%+d %s", d, k))
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			out = append(out, fmt.Sprintf("%+d %s", -a[k], k))
		}
	}
	slices.Sort(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

func countDir(dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	return len(ents)
}

// descendants lists every process below pid (from /proc/*/stat's ppid).
func descendants(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, ent := range ents {
		p, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if err != nil {
			continue
		}
		if pp, ok := statPPID(string(b)); ok {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	todo := []int{pid}
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		for _, c := range children[p] {
			out = append(out, c)
			todo = append(todo, c)
		}
	}
	return out
}

// statPPID reads the parent pid from a /proc/<pid>/stat line; the command
// name (in parentheses) may hold spaces and parentheses itself.
func statPPID(stat string) (int, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}

// soakDebug fills the goroutine count and the heap figures from the node's
// pprof endpoint. The heap profile is asked for with gc=1: the figures are
// those after a full GC, i.e. what is still referenced.
func soakDebug(ctx context.Context, c *http.Client, s *soakRound) error {
	// First without a GC: the heap as it was when VmRSS was read.
	body, err := debugGet(ctx, c, "/debug/pprof/heap?debug=1")
	if err != nil {
		return err
	}
	ms := heapMemStats(body)
	s.HeldHeap, s.HeldObjects, s.Stacks = ms["HeapSys"]-ms["HeapReleased"], ms["HeapAlloc"], ms["StackInuse"]
	s.RuntimeMeta = ms["MSpanSys"] + ms["MCacheSys"] + ms["BuckHashSys"] + ms["GCSys"] + ms["OtherSys"]
	body, err = debugGet(ctx, c, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return err
	}
	if s.Goroutines, err = goroutineTotal(body); err != nil {
		return err
	}
	body, err = debugGet(ctx, c, "/debug/pprof/heap?debug=1&gc=1")
	if err != nil {
		return err
	}
	ms = heapMemStats(body)
	s.HeapInuse, s.HeapAlloc, s.HeapSys, s.Released = ms["HeapInuse"], ms["HeapAlloc"], ms["HeapSys"], ms["HeapReleased"]
	return nil
}

func debugGet(ctx context.Context, c *http.Client, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+soakDebugAddr+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func saveHeap(ctx context.Context, c *http.Client, path string) error {
	body, err := debugGet(ctx, c, "/debug/pprof/heap?gc=1")
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(body), 0o644)
}

// saveDebug writes what the node's debug endpoint answers at path to file.
func saveDebug(ctx context.Context, c *http.Client, path, file string) error {
	body, err := debugGet(ctx, c, path)
	if err != nil {
		return err
	}
	return os.WriteFile(file, []byte(body), 0o644)
}

// goroutineTotal reads "goroutine profile: total N" (debug=1 format).
func goroutineTotal(body string) (int, error) {
	line, _, _ := strings.Cut(body, "\n")
	rest, ok := strings.CutPrefix(line, "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("goroutine profile: unexpected first line %q", line)
	}
	return strconv.Atoi(strings.TrimSpace(rest))
}

// heapMemStats reads the "# Name = value" runtime.MemStats lines at the
// end of a debug=1 heap profile; "# Stack = a / b" gives StackInuse and
// StackSys (MSpan, MCache likewise).
func heapMemStats(body string) map[string]int64 {
	out := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = ")
		if !ok || !strings.HasPrefix(sc.Text(), "# ") {
			continue
		}
		if in, sys, ok := strings.Cut(v, " / "); ok {
			a, aerr := strconv.ParseInt(strings.TrimSpace(in), 10, 64)
			b, berr := strconv.ParseInt(strings.TrimSpace(sys), 10, 64)
			if aerr == nil && berr == nil {
				out[k+"Inuse"], out[k+"Sys"] = a, b
			}
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}

// soakMarkdown prints the rounds as a table: every round when there are
// few, else round 0, 1, 2, every tenth and the last, with the change of
// the last against round 1 and 2 (round 1 includes the warm-up: caches
// filled once, the GC's heap goal found).
func soakMarkdown(w io.Writer, tasks int, rs []soakRound) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### soak: rounds of %d tasks created → RUNNING → removed → gone, idle figures after each\n\n", tasks)
	fmt.Fprintln(w, "| round | RSS (MiB) | anon / file (bbolt) (MiB) | heap in use (MiB) | heap live (MiB) | goroutines | fds | mounts | cgroups | state dirs | processes | up (s) | rm (s) |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	last := rs[len(rs)-1].Round
	for _, r := range rs {
		if len(rs) > 12 && r.Round > 2 && r.Round%10 != 0 && r.Round != 25 && r.Round != last {
			continue
		}
		fmt.Fprintf(w, "| %d | %.1f | %.1f / %.1f (%.1f) | %.1f | %.1f | %d | %d | %d | %d | %d | %d | %.1f | %.1f |\n", r.Round,
			float64(r.RSSKB)/1024, float64(r.AnonKB)/1024, float64(r.FileKB)/1024, float64(r.DBKB)/1024, mib(r.HeapInuse), mib(r.HeapAlloc), r.Goroutines, r.FDs, r.Mounts, r.Cgroups, r.StateDirs, r.Procs, r.UpSeconds, r.RmSeconds)
	}
	fmt.Fprintln(w)
	for _, ref := range []int{1, 2} {
		if ref >= len(rs) || ref == last {
			continue
		}
		a, b := rs[ref], rs[len(rs)-1]
		fmt.Fprintf(w, "- round %d vs round %d: RSS %+.1f%%, heap in use %+.1f%%, goroutines %+d, fds %+d\n", last, ref,
			pct(a.RSSKB, b.RSSKB), pct(a.HeapInuse, b.HeapInuse), b.Goroutines-a.Goroutines, b.FDs-a.FDs)
	}
	z, b := rs[0], rs[len(rs)-1]
	fmt.Fprintf(w, "- round %d vs before the first: goroutines %+d, fds %+d, mounts %+d, cgroups %+d, state dirs %+d, processes %+d\n", last,
		b.Goroutines-z.Goroutines, b.FDs-z.FDs, b.Mounts-z.Mounts, b.Cgroups-z.Cgroups, b.StateDirs-z.StateDirs, b.Procs-z.Procs)
	fmt.Fprintf(w, "- open files, round %d vs before the first: %s\n", last, fdDiff(z.FDKinds, b.FDKinds))
	if len(rs) > 2 {
		fmt.Fprintf(w, "- open files, round %d vs round 1: %s\n", last, fdDiff(rs[1].FDKinds, b.FDKinds))
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func pct(a, b int64) float64 {
	if a == 0 {
		return 0
	}
	return 100 * float64(b-a) / float64(a)
}
