//go:build !linux

package logs

import "errors"

// Elsewhere than Linux followers poll.
func newInotifyWatcher(string) (watcher, error) {
	return nil, errors.New("inotify is Linux only")
}
