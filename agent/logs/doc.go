// Package logs reads the log files that task shims write (agent/runtime's
// log.go): JSON lines
//
//	{"time":"2025-01-02T03:04:05.123456789Z","stream":"stdout","log":"text\n"}
//
// rotated by size as path → path.1 → path.2 (the highest number is the
// oldest), or truncated in place when only one file is kept.
//
// Read visits a task's log across its rotated files in order, oldest
// first, optionally only the last N lines (Options.Tail, found by scanning
// backwards from the end, so a tail of a large log reads little) and only
// lines at or after a time (Options.Since; whole rotated files older than
// it are skipped by their modification time). With Options.Follow it then
// keeps delivering appended lines until the context ends, Options.Stop
// closes, or the log is removed.
//
// # Following
//
// The reader keeps the file it reads open and identifies files by inode,
// never by name: when it reaches the end of its file it lists the log's
// files and moves to the one after its own in age order. This survives a
// rotation that happens at any moment (even several, as long as the reader
// is fewer than the number of kept files behind), and an in-place
// truncation is seen as the open file shrinking below the read offset.
//
// Waiting for more is event driven: an inotify watch on the log's directory
// (golang.org/x/sys/unix, no fsnotify) wakes the reader when a file of this
// log is written, created, renamed or deleted. Only when inotify is not
// available (the watch limit is reached, or the directory does not exist
// yet) does the reader poll, every PollInterval.
//
// A line is delivered only once its newline has been written: the last
// line of a file that a writer is still appending to is held back until it
// is complete. Lines that do not decode (a shim killed mid-write leaves half
// a record, which the next write completes with garbage) are skipped, but a
// whole record that follows garbage on the same line is recovered.
package logs
