package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// DefaultCgroupParent is where task cgroups live unless WithCgroupParent
// says otherwise: <hierarchy>/shoal/<task id>. It is absolute so that a
// task's cgroup does not nest under the shim's own (see PLATFORM-NOTES).
const DefaultCgroupParent = "/shoal"

// Option configures a Libcontainer runtime.
type Option func(*Libcontainer) error

// WithCgroupParent puts task cgroups under parent (absolute, relative to
// each hierarchy's root) instead of DefaultCgroupParent. Tests and the
// benchmark use their own parent so that they can remove it afterwards
// without racing with a live agent that creates tasks under /shoal.
func WithCgroupParent(parent string) Option {
	return func(r *Libcontainer) error {
		if !path.IsAbs(parent) || path.Clean(parent) != parent || parent == "/" {
			return fmt.Errorf("%w: cgroup parent %q must be a clean absolute path below /", ErrInvalidArgument, parent)
		}
		r.cgroupParent = parent
		return nil
	}
}

// cgroupMountpoints lists where every cgroup hierarchy is mounted, v1
// ones (one per controller or named hierarchy, e.g. name=systemd) and the
// v2 one (the "unified" mount of a hybrid host, or /sys/fs/cgroup itself).
// It reads mountinfo rather than listing /sys/fs/cgroup, which may hold
// symlinks to co-mounted hierarchies (cpu -> cpu,cpuacct) or miss some.
func cgroupMountpoints() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "36 35 98:0 /root /mnt rw,... master:1 - cgroup cgroup rw,memory"
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 1 || (qf[0] != "cgroup" && qf[0] != "cgroup2") {
			continue
		}
		// Only hierarchies mounted at their root: a mount of a sub-cgroup
		// (inside a container) does not show our absolute paths.
		if pf[3] != "/" {
			continue
		}
		mp := unescapeMountinfo(pf[4])
		if !seen[mp] {
			seen[mp] = true
			out = append(out, mp)
		}
	}
	return out, sc.Err()
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a
// mountinfo path.
func unescapeMountinfo(s string) string {
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

// taskCgroupDirs returns <mountpoint><parent>/<id> for every hierarchy
// where it exists.
func taskCgroupDirs(parent, id string) ([]string, error) {
	mps, err := cgroupMountpoints()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, mp := range mps {
		p := filepath.Join(mp, parent, id)
		if _, err := os.Lstat(p); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// removeTaskCgroups removes the task's cgroup in every hierarchy. It is
// what makes Remove complete even when libcontainer could not (state lost
// because the shim died mid-start, or Destroy failed half-way): processes
// still in the cgroup are killed and waited for, then the dirs (and any
// sub-cgroups) are removed.
func removeTaskCgroups(ctx context.Context, parent, id string) error {
	dirs, err := taskCgroupDirs(parent, id)
	if err != nil || len(dirs) == 0 {
		return err
	}
	if err := killCgroupProcs(ctx, dirs); err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		// RemovePath also removes sub-cgroups and retries briefly on
		// EBUSY: a killed task can linger in the cgroup for a moment
		// after its pidfd reported the exit.
		if err := cgroups.RemovePath(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killCgroupProcs SIGKILLs every process listed in cgroup.procs of dirs
// (and their sub-cgroups) and waits, through pidfds, until they are gone.
func killCgroupProcs(ctx context.Context, dirs []string) error {
	pids := map[int]bool{}
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err != nil || !e.IsDir() {
				return nil
			}
			if ps, err := cgroups.GetPids(p); err == nil {
				for _, pid := range ps {
					pids[pid] = true
				}
			}
			return nil
		})
	}
	if len(pids) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var errs []error
	for pid := range pids {
		// The pidfd pins the process: the signal cannot hit a process
		// that reused the pid after we read cgroup.procs.
		f, err := openPidfd(pid, 0)
		if err != nil || f == nil {
			continue
		}
		if err := pidfdKill(f); err != nil && err != unix.ESRCH {
			errs = append(errs, fmt.Errorf("kill %d: %w", pid, err))
		} else if err := waitReadable(ctx, f); err != nil {
			errs = append(errs, fmt.Errorf("wait for %d: %w", pid, err))
		}
		f.Close()
	}
	return errors.Join(errs...)
}

// RemoveCgroupParent removes parent (as given to WithCgroupParent) from
// every hierarchy. It fails if a task's cgroup is still there. For tests
// and benchmarks that own their parent; an agent leaves /shoal in place,
// since removing it could race with a Start creating a task below it.
func RemoveCgroupParent(parent string) error {
	if !path.IsAbs(parent) || path.Clean(parent) != parent || parent == "/" {
		return fmt.Errorf("%w: cgroup parent %q", ErrInvalidArgument, parent)
	}
	mps, err := cgroupMountpoints()
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		p := filepath.Join(mp, parent)
		if err := unix.Rmdir(p); err != nil && err != unix.ENOENT {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// pidfdKill sends SIGKILL through pidfd f.
func pidfdKill(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0)
	}); err != nil {
		return err
	}
	return serr
}
