package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotStarted: Wait found a task dir whose shim has not recorded itself
// yet (Start is still running, or the shim died before its first write).
var ErrNotStarted = errors.New("not started")

// Wait implements Runtime. It blocks until the task's shim has exited and
// returns the final state: StatusExited with Exit, or StatusFailed if the
// shim died without recording an exit.
//
// The shim is usually not our child (the agent may have restarted since
// Start), so waitpid is out of the question. A pidfd works for any
// process: it becomes readable when the process exits, and holding it pins
// the pid, so after opening it one check of the recorded start time proves
// it refers to our shim and not to a later process that reused the pid.
func (r *Libcontainer) Wait(ctx context.Context, id string) (State, error) {
	st, err := r.State(ctx, id)
	if err != nil {
		return State{}, err
	}
	if st.Status == StatusExited || st.Status == StatusFailed {
		return st, nil
	}
	var sh shimOnDisk
	if err := readJSON(filepath.Join(r.dir(id), shimFile), &sh); err != nil || sh.ShimPid <= 0 {
		// State said "created" because the shim has not written shim.json.
		return State{}, fmt.Errorf("task %q: %w: no shim recorded", id, ErrNotStarted)
	}
	if err := waitPidExit(ctx, sh.ShimPid, sh.ShimStart); err != nil {
		return State{}, fmt.Errorf("task %q: wait for shim %d: %w", id, sh.ShimPid, err)
	}
	// The shim renames exit.json into place before it exits, so the state
	// read now is final: Exited, or Failed (shim gone without exit.json).
	// Only a concurrent Remove can change it (ErrNotFound).
	return r.State(ctx, id)
}

// waitPidExit blocks until the process pid, started at start (clock ticks
// since boot, from /proc/<pid>/stat; 0 = do not check), has exited, or ctx
// ends. A pid that no longer exists, or now names another process, has
// exited as far as we are concerned.
func waitPidExit(ctx context.Context, pid int, start uint64) error {
	f, err := openPidfd(pid, start)
	if err != nil {
		return err
	}
	if f == nil {
		return nil // already gone
	}
	defer f.Close()
	return waitReadable(ctx, f)
}

// openPidfd returns a pidfd for pid if it still names the process that
// started at start, nil if it is gone.
func openPidfd(pid int, start uint64) (*os.File, error) {
	// PIDFD_NONBLOCK makes os.NewFile register the fd with Go's poller, so
	// a waiting goroutine holds no thread.
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err == unix.ESRCH {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd_open: %w", err)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	// The pid cannot be recycled while we hold the pidfd, so if the start
	// time matches now, the fd is for our process.
	s, _, err := procStat(pid)
	if err != nil || (start != 0 && s != start) {
		f.Close()
		return nil, nil
	}
	return f, nil
}

// waitReadable waits, in Go's netpoller, until f (a pidfd) is readable,
// i.e. its process has exited; ctx ending interrupts the wait through a
// read deadline. A process that has already exited counts as such even if
// ctx is already done (waitGone with a zero timeout relies on that).
func waitReadable(ctx context.Context, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var pollErr error
	// ready asks the kernel directly; the poller's readiness is only a
	// hint to ask again.
	ready := func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(pfd, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				pollErr = err
				return true
			}
			return n > 0
		}
	}
	var done bool
	if err := rc.Control(func(fd uintptr) { done = ready(fd) }); err != nil {
		return err
	}
	if done {
		return pollErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// A deadline left from an earlier, cancelled wait on f would end this
	// one at once: clear it. The earlier wait made sure its AfterFunc had
	// finished before it returned (below), so it cannot set one later.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = f.SetReadDeadline(time.Unix(1, 0))
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired
		}
	}()
	if err := rc.Read(ready); err != nil {
		// pidfds are pollable since they exist (Linux 5.3), so the only
		// expected error is the deadline set when ctx ends.
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return pollErr
}
