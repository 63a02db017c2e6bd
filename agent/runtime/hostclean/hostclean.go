// Package hostclean finds and removes what containers leave on a host:
// mounts below a directory (rootfs overlays, netns bind mounts) and the
// processes and cgroups below a cgroup parent, in every hierarchy. The
// agent's runtime finds its cgroup hierarchies with it; the e2e harness
// and the benchmark clean up after nodes they killed with it. It needs no
// cgo, so tools outside the agent can use it.
package hostclean

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// killWait bounds the wait for a cgroup tree to empty after SIGKILL (and
// for a busy cgroup to become removable).
const killWait = 15 * time.Second

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	id         int
	root       string // the mount's root within its filesystem
	mountPoint string
	fsType     string
	superOpts  string
}

// readMountinfo parses /proc/self/mountinfo (this process' mount namespace).
func readMountinfo() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		id, _ := strconv.Atoi(fields[0])
		e := mountEntry{id: id, root: unescapeMount(fields[3]), mountPoint: unescapeMount(fields[4]), fsType: fields[sep+1]}
		if sep+3 < len(fields) {
			e.superOpts = fields[sep+3]
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// RealDir resolves symlinks in dir (a temp dir under a symlinked /tmp,
// say), so it compares with mountinfo's paths; dir itself if it cannot.
func RealDir(dir string) string {
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		return r
	}
	return filepath.Clean(dir)
}

// MountsUnder lists the mount points at or below dir, deepest and newest
// first (the order to unmount them in).
func MountsUnder(dir string) ([]string, error) {
	ents, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	return mountsUnder(ents, RealDir(dir)), nil
}

func mountsUnder(ents []mountEntry, dir string) []string {
	type m struct {
		path  string
		order int
	}
	var ms []m
	for i, e := range ents {
		if e.mountPoint == dir || strings.HasPrefix(e.mountPoint, dir+"/") {
			ms = append(ms, m{e.mountPoint, i})
		}
	}
	// Deepest first; on the same path the newest (stacked on top) first.
	slices.SortStableFunc(ms, func(a, b m) int {
		if d := strings.Count(b.path, "/") - strings.Count(a.path, "/"); d != 0 {
			return d
		}
		return b.order - a.order
	})
	out := make([]string, len(ms))
	for i, x := range ms {
		out[i] = x.path
	}
	return out
}

// UnmountUnder lazily unmounts (MNT_DETACH) everything mounted at or below
// dir, deepest first, until nothing is left (stacked mounts take several
// passes).
func UnmountUnder(dir string) error {
	if dir == "" || dir == "/" {
		return fmt.Errorf("refusing to unmount everything under %q", dir)
	}
	var last []string
	for range 10 {
		mps, err := MountsUnder(dir)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		last = mps
		for _, mp := range mps {
			// EINVAL: no longer a mount point (a parent's detach took it).
			if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("unmount %s: %w", mp, err)
			}
		}
	}
	return fmt.Errorf("mounts still under %s after 10 passes: %v", dir, last)
}

// CgroupRoots returns the mount point of every cgroup hierarchy (v1 and
// v2) mounted with its root in this mount namespace, one per
// hierarchy.
func CgroupRoots() ([]string, error) {
	ents, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var roots []string
	for _, e := range ents {
		if (e.fsType != "cgroup" && e.fsType != "cgroup2") || e.root != "/" {
			continue
		}
		// One hierarchy may be mounted more than once: its options name it.
		key := e.fsType + " " + e.superOpts
		if seen[key] {
			continue
		}
		seen[key] = true
		roots = append(roots, e.mountPoint)
	}
	if len(roots) == 0 {
		return nil, errors.New("no cgroup hierarchy mounted (mountinfo)")
	}
	return roots, nil
}

// CgroupDir is a directory of a cgroup tree; depth 0 is the tree's top.
type CgroupDir struct {
	Path  string
	Depth int
}

// CgroupDirs lists the directories of cgroup tree parent (an absolute
// cgroup path) in every hierarchy, deepest first (the order for rmdir).
func CgroupDirs(parent string) ([]CgroupDir, error) {
	if !filepath.IsAbs(parent) || filepath.Clean(parent) == "/" {
		return nil, fmt.Errorf("cgroup parent %q: want an absolute path below the root", parent)
	}
	roots, err := CgroupRoots()
	if err != nil {
		return nil, err
	}
	var dirs []CgroupDir
	var errs []error
	for _, r := range roots {
		top := filepath.Join(r, parent)
		err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // removed meanwhile, or never made
				}
				return err
			}
			if d.IsDir() {
				rel, _ := filepath.Rel(top, p)
				depth := 0
				if rel != "." {
					depth = strings.Count(rel, "/") + 1
				}
				dirs = append(dirs, CgroupDir{p, depth})
			}
			return nil
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	slices.SortStableFunc(dirs, func(a, b CgroupDir) int { return b.Depth - a.Depth })
	return dirs, errors.Join(errs...)
}

// CgroupPids lists the processes in tree parent, in every hierarchy.
func CgroupPids(parent string) ([]int, error) {
	dirs, err := CgroupDirs(parent)
	seen := map[int]bool{}
	var pids []int
	for _, d := range dirs {
		b, rerr := os.ReadFile(filepath.Join(d.Path, "cgroup.procs"))
		if rerr != nil {
			if !errors.Is(rerr, fs.ErrNotExist) && !errors.Is(rerr, syscall.ENODEV) {
				err = errors.Join(err, rerr)
			}
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, perr := strconv.Atoi(f); perr == nil && pid > 0 && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	slices.Sort(pids)
	return pids, err
}

// KillCgroups SIGKILLs every process in tree parent (thawing frozen
// cgroups, which would hold the signal back) until none is left.
func KillCgroups(ctx context.Context, parent string) error {
	ctx, cancel := context.WithTimeout(ctx, killWait)
	defer cancel()
	return poll(ctx, 50*time.Millisecond, func() error {
		pids, err := CgroupPids(parent)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		thaw(parent)
		for _, pid := range pids {
			if pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return fmt.Errorf("processes still in cgroup %s: %v", parent, pids)
	})
}

// thaw writes THAWED to every freezer.state of tree parent.
func thaw(parent string) {
	dirs, _ := CgroupDirs(parent)
	for _, d := range dirs {
		p := filepath.Join(d.Path, "freezer.state")
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) != "THAWED" {
			_ = os.WriteFile(p, []byte("THAWED"), 0)
		}
	}
}

// RemoveCgroups removes tree parent in every hierarchy, children first.
// A cgroup can be busy for a moment after its last process died: retried
// for a while.
func RemoveCgroups(ctx context.Context, parent string) error {
	ctx, cancel := context.WithTimeout(ctx, killWait)
	defer cancel()
	return poll(ctx, 50*time.Millisecond, func() error {
		dirs, err := CgroupDirs(parent)
		if err != nil {
			return err
		}
		var errs []error
		for _, d := range dirs {
			if err := syscall.Rmdir(d.Path); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", d.Path, err))
			}
		}
		return errors.Join(errs...)
	})
}

// poll calls fn every interval until it returns nil or ctx ends.
func poll(ctx context.Context, interval time.Duration, fn func() error) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last error: %w", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// CheckCgroups tells a node that will run tasks, before it starts, that
// it cannot: every task runs in cgroups, and a mount namespace with no
// cgroup hierarchy makes every start fail later with libcontainer's "no
// cgroup mount found in mountinfo", which does not say why. The common
// cause is `ip netns exec`, which mounts a fresh sysfs on /sys without
// /sys/fs/cgroup below it (found in a hand trial); the error names it and
// the fix.
func CheckCgroups() error {
	if _, err := CgroupRoots(); err != nil {
		return fmt.Errorf("tasks run in cgroups, but this node's mount namespace has none (%v): "+
			"`ip netns exec` mounts a new /sys without /sys/fs/cgroup - start the node with "+
			"`nsenter --net=/run/netns/NAME shoal ...` instead, or mount the cgroup hierarchies", err)
	}
	return nil
}
