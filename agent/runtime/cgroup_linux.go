package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/agent/runtime/hostclean"
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

// taskCgroupDirs returns <mountpoint><parent>/<id> for every hierarchy
// where it exists.
func taskCgroupDirs(parent, id string) ([]string, error) {
	mps, err := hostclean.CgroupRoots()
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
	mps, err := hostclean.CgroupRoots()
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
func pidfdKill(f *os.File) error { return pidfdSignal(f, unix.SIGKILL) }

// pidfdSignal sends sig through pidfd f.
func pidfdSignal(f *os.File, sig unix.Signal) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.PidfdSendSignal(int(fd), sig, nil, 0)
	}); err != nil {
		return err
	}
	return serr
}
