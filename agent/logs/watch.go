package logs

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// watcher tells a follower when to look at the log again.
type watcher interface {
	// wake has a value when something about the log may have changed.
	// Changes coalesce: one value can stand for many.
	wake() <-chan struct{}
	// removed reports that the log has been deleted (not rotated).
	removed() bool
	close()
}

// newWatcher watches the log at path with inotify, or by polling when
// inotify cannot watch it (no inotify, its limits reached, the directory
// not there yet).
func newWatcher(path string, forcePoll bool) watcher {
	if !forcePoll {
		if w, err := newInotifyWatcher(path); err == nil {
			return w
		}
	}
	return newPollWatcher(path, PollInterval)
}

// notify sends a coalescing wake-up.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// pollWatcher wakes the follower every interval. The log counts as
// removed once its file, having existed, is missing at two looks in a row:
// a rotation leaves the name missing only between a rename and a create.
type pollWatcher struct {
	ch      chan struct{}
	gone    atomic.Bool
	stop    chan struct{}
	done    chan struct{}
	stopped sync.Once
}

func newPollWatcher(path string, interval time.Duration) *pollWatcher {
	w := &pollWatcher{ch: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	// Looked at before returning, so that a removal right after the
	// follower started counts.
	_, err := os.Lstat(path)
	seen, missing := err == nil, 0
	go func() {
		defer close(w.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
			switch _, err := os.Lstat(path); {
			case err == nil:
				seen, missing = true, 0
			case errors.Is(err, os.ErrNotExist) && seen:
				if missing++; missing >= 2 {
					w.gone.Store(true)
				}
			}
			notify(w.ch)
		}
	}()
	return w
}

func (w *pollWatcher) wake() <-chan struct{} { return w.ch }
func (w *pollWatcher) removed() bool         { return w.gone.Load() }
func (w *pollWatcher) close() {
	w.stopped.Do(func() { close(w.stop) })
	<-w.done
}
