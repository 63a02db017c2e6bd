package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/agent/runtime/hostclean"
)

// Prefix starts the name of every network namespace the harness creates.
// Namespaces with this prefix whose fabric is not locked by a live process
// are leftovers of a crashed run and are removed by Sweep.
const Prefix = "shl-"

// LockDir holds one lock file per live fabric (<id>.lock). The creating test
// process holds an flock on it for the fabric's lifetime; the kernel drops
// the lock when that process dies, however it dies, which is how Sweep tells
// a crashed run's namespaces from those of a run still in progress (another
// test binary of this suite may be running at the same time).
const LockDir = "/run/shoal-e2e"

// ipTimeout bounds every `ip` invocation; they take milliseconds.
const ipTimeout = 15 * time.Second

// ip runs the iproute2 `ip` command and returns its combined output.
func ip(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, ipTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// listNetns returns the names of all named network namespaces.
func listNetns(ctx context.Context) ([]string, error) {
	out, err := ip(ctx, "netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, sc.Err()
}

// NamespacesWithPrefix lists the named network namespaces starting with p.
func NamespacesWithPrefix(ctx context.Context, p string) ([]string, error) {
	all, err := listNetns(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range all {
		if strings.HasPrefix(n, p) {
			out = append(out, n)
		}
	}
	return out, nil
}

// netnsPids lists the processes whose network namespace is ns.
func netnsPids(ctx context.Context, ns string) ([]int, error) {
	out, err := ip(ctx, "netns", "pids", ns)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killNetns SIGKILLs every process in ns and waits (bounded) until none is
// left, so that deleting the namespace really frees it.
func killNetns(ctx context.Context, ns string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return Poll(ctx, 50*time.Millisecond, func() error {
		pids, err := netnsPids(ctx, ns)
		if err != nil {
			if !netnsExists(ns) {
				return nil
			}
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return fmt.Errorf("processes still in netns %s: %v", ns, pids)
	})
}

// netnsPath is where `ip netns` keeps namespace ns.
func netnsPath(ns string) string { return filepath.Join("/run/netns", ns) }

func netnsExists(ns string) bool {
	_, err := os.Stat(netnsPath(ns))
	return err == nil
}

// deleteExtraLinks deletes every interface of ns but lo and the host's
// fabric port (what a node made: its bridge, veths), as a reboot loses
// them.
func deleteExtraLinks(ctx context.Context, ns string) error {
	out, err := ip(ctx, "-j", "-n", ns, "link", "show")
	if err != nil {
		return err
	}
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return fmt.Errorf("ip -j link show in %s: %w", ns, err)
	}
	var errs []error
	for _, l := range links {
		if l.Name == "lo" || l.Name == hostIface || l.Name == "" {
			continue
		}
		// A veth whose peer went first is gone already.
		if _, err := ip(ctx, "-n", ns, "link", "del", l.Name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteNetns kills what runs in ns and deletes it; deleting a namespace
// deletes the veth ends inside it (and so their peers).
func deleteNetns(ctx context.Context, ns string) error {
	if !netnsExists(ns) {
		return nil
	}
	kerr := killNetns(ctx, ns)
	if _, err := ip(ctx, "netns", "del", ns); err != nil && netnsExists(ns) {
		return errors.Join(kerr, err)
	}
	return kerr
}

var fabricIDRe = regexp.MustCompile(`^[0-9a-f]{6}$`)

// fabricIDOf extracts the fabric id from a harness namespace name:
// "shl-sw-<id>" (switch) or "shl-<id>-<host>" (host).
func fabricIDOf(ns string) (string, bool) {
	parts := strings.Split(ns, "-")
	if len(parts) < 3 || parts[0]+"-" != Prefix {
		return "", false
	}
	id := parts[1]
	if id == "sw" {
		id = parts[2]
	}
	return id, fabricIDRe.MatchString(id)
}

func lockPath(id string) string { return filepath.Join(LockDir, id+".lock") }

// lockFabric creates and flocks the lock file of fabric id, writing the
// owner's pid and the fabric's directory into it (Sweep unmounts what a
// crashed run left mounted there). The returned file must stay open for as
// long as the fabric lives.
func lockFabric(id, dir string) (*os.File, error) {
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(lockPath(id), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", lockPath(id), err)
	}
	fmt.Fprintf(f, "%d\n%s\n", os.Getpid(), dir)
	return f, nil
}

// unlockFabric removes the lock file (while still holding the lock) and
// releases it.
func unlockFabric(f *os.File, id string) {
	if f == nil {
		return
	}
	_ = os.Remove(lockPath(id))
	_ = f.Close()
}

// staleLock tries to take fabric id's lock. It returns (file, true) when
// the fabric has no live owner — the caller then owns the lock and must
// unlockFabric it — and (nil, false) when a live process holds it.
func staleLock(id string) (*os.File, bool) {
	f, err := os.OpenFile(lockPath(id), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, true
	}
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

// lockedDir reads the fabric directory recorded in a lock file ("" if
// none).
func lockedDir(f *os.File) string {
	if f == nil {
		return ""
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return ""
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 2 {
		return ""
	}
	dir := strings.TrimSpace(lines[1])
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir || dir == "/" {
		return ""
	}
	return dir
}

// Sweep removes what crashed runs left behind. For every fabric whose lock
// is not held by a live process (found by its namespaces, prefix Prefix,
// its lock file or its hosts' cgroups, prefix CgroupPrefix) it kills the
// processes in its namespaces and cgroups (shims and containers outlive a
// killed node), unmounts what is mounted under the fabric's directory, and
// removes the cgroups, the namespaces and the lock file. Fabrics of runs
// still in progress — this process's or another test binary's — are left
// alone. It returns the namespaces it removed.
func Sweep(ctx context.Context) ([]string, error) {
	names, err := NamespacesWithPrefix(ctx, Prefix)
	if err != nil {
		return nil, err
	}
	nsByFabric := map[string][]string{}
	var removed []string
	var errs []error
	for _, ns := range names {
		id, ok := fabricIDOf(ns)
		if !ok {
			// Our prefix but no fabric id: nothing can own it.
			if err := deleteNetns(ctx, ns); err != nil {
				errs = append(errs, err)
			} else {
				removed = append(removed, ns)
			}
			continue
		}
		nsByFabric[id] = append(nsByFabric[id], ns)
	}
	cgByFabric, err := harnessCgroups()
	if err != nil {
		errs = append(errs, err)
	}
	ids := map[string]bool{}
	for id := range nsByFabric {
		ids[id] = true
	}
	for id := range cgByFabric {
		ids[id] = true
	}
	if ents, err := os.ReadDir(LockDir); err == nil {
		for _, e := range ents {
			if id, ok := strings.CutSuffix(e.Name(), ".lock"); ok && fabricIDRe.MatchString(id) {
				ids[id] = true
			}
		}
	}
	for id := range ids {
		lock, stale := staleLock(id)
		if !stale {
			continue
		}
		// Processes first (so nothing re-creates what follows), then
		// mounts, cgroups, namespaces.
		for _, ns := range nsByFabric[id] {
			if err := killNetns(ctx, ns); err != nil {
				errs = append(errs, err)
			}
		}
		for _, cg := range cgByFabric[id] {
			if err := hostclean.KillCgroups(ctx, cg); err != nil {
				errs = append(errs, err)
			}
		}
		if dir := lockedDir(lock); dir != "" {
			if err := hostclean.UnmountUnder(dir); err != nil {
				errs = append(errs, err)
			}
		}
		for _, cg := range cgByFabric[id] {
			if err := hostclean.RemoveCgroups(ctx, cg); err != nil {
				errs = append(errs, err)
			}
		}
		for _, ns := range nsByFabric[id] {
			if err := deleteNetns(ctx, ns); err != nil {
				errs = append(errs, err)
			} else {
				removed = append(removed, ns)
			}
		}
		if lock != nil {
			unlockFabric(lock, id)
		}
	}
	return removed, errors.Join(errs...)
}
