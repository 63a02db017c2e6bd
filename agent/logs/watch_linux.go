package logs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// inotifyWatcher watches the log's directory: the log's files are renamed
// and recreated by rotation, so a watch on a file would follow the wrong
// one. Events for other files in the directory (other tasks' logs) are
// ignored.
type inotifyWatcher struct {
	f    *os.File // the inotify descriptor; closing it ends loop
	ch   chan struct{}
	gone atomic.Bool
	done chan struct{}
}

const inotifyMask = unix.IN_MODIFY | unix.IN_CREATE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ATTRIB

func newInotifyWatcher(path string) (*inotifyWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), inotifyMask); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inotify watch on %s: %w", filepath.Dir(path), err)
	}
	// A non-blocking descriptor goes to the runtime poller, so Read parks
	// the goroutine and Close wakes it.
	w := &inotifyWatcher{f: os.NewFile(uintptr(fd), "inotify"), ch: make(chan struct{}, 1), done: make(chan struct{})}
	go w.loop(filepath.Base(path))
	return w, nil
}

func (w *inotifyWatcher) loop(base string) {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			// Closed by close(), or the descriptor failed: either way
			// the follower is told to look (it also learns nothing more).
			notify(w.ch)
			return
		}
		relevant := false
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			start := off + unix.SizeofInotifyEvent
			end := min(start+nameLen, n)
			name := string(bytes.TrimRight(buf[start:end], "\x00"))
			off = start + nameLen
			switch {
			case mask&unix.IN_Q_OVERFLOW != 0:
				relevant = true
			case mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED) != 0:
				// The directory itself went away (or was moved aside to be
				// deleted): the log is gone.
				w.gone.Store(true)
				relevant = true
			case name == base:
				if mask&unix.IN_DELETE != 0 {
					w.gone.Store(true)
				}
				relevant = true
			case strings.HasPrefix(name, base+"."):
				relevant = true
			}
		}
		if relevant {
			notify(w.ch)
		}
	}
}

func (w *inotifyWatcher) wake() <-chan struct{} { return w.ch }
func (w *inotifyWatcher) removed() bool         { return w.gone.Load() }
func (w *inotifyWatcher) close() {
	w.f.Close()
	<-w.done
}
