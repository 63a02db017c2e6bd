package netnsrun

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// errFromUnshare marks a failure to enter the namespace (nothing ran).
var errFromUnshare = errors.New("enter network namespace")

// Run runs fn on a new goroutine locked to its OS thread, with that thread
// moved into target, or into a brand-new network namespace when target is
// not open. Afterwards the thread goes back to the namespace it came from
// and is unlocked. If going back fails the thread is parked for good,
// locked: it must neither run other goroutines in a foreign namespace nor
// end — a child started from it with Pdeathsig would be killed, since the
// kernel sends that signal when the parent thread dies. The caller's own
// goroutine never changes namespace.
func Run(target netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if target.IsOpen() {
			err = netns.Set(target)
		} else {
			err = unix.Unshare(unix.CLONE_NEWNET)
		}
		if err != nil {
			// Nothing changed (both calls are all or nothing).
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("%w: %w", errFromUnshare, err)
			return
		}
		err = fn()
		if rerr := netns.Set(orig); rerr != nil {
			errc <- err
			select {} // parked: see above
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// RunPath is Run in the namespace bind-mounted at path (a netns file such
// as /run/netns/NAME or a task's); an empty path runs fn where the caller
// is.
func RunPath(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
	return Run(target, fn)
}
