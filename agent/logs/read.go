package logs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Entry is one record of a task's log.
type Entry struct {
	Time   time.Time
	Stream string // "stdout" or "stderr"
	// Line is the text without its trailing newline. A line the writer
	// split (longer than its record limit) arrives as several entries.
	Line []byte
}

// AllLines as Options.Tail asks for every line.
const AllLines = -1

// Options say which part of a log to read.
type Options struct {
	// Tail is how many of the last lines to read; AllLines (or any
	// negative number) reads every line and 0 reads none (with Follow:
	// only lines written from now on).
	Tail int
	// Since, when set, skips lines written before it.
	Since time.Time
	// Follow keeps delivering appended lines after the existing ones until
	// the context ends, Stop closes or the log is removed.
	Follow bool
	// Stop, with Follow, ends the read (without error) when closed.
	Stop <-chan struct{}

	// onIdle, if set, is called with the read offset in the current file
	// each time a follower has delivered everything written so far and is
	// about to wait; tests use it to know the reader's position without
	// sleeping.
	onIdle func(pos int64)
	// poll makes a follower poll even where inotify works, so tests cover
	// the fallback.
	poll bool
}

// PollInterval is how often a follower looks for changes when inotify is
// not available.
const PollInterval = 250 * time.Millisecond

// maxRecord bounds one JSON line. The writer splits lines at 16 KiB, which
// JSON escaping can grow to about 6x; anything longer is corrupt and is
// skipped rather than buffered without end.
const maxRecord = 1 << 20

// Read calls fn for each entry of the log at path (the file the shim
// writes; its rotated predecessors are found beside it) selected by o, in
// the order written. A log that does not exist yet reads as empty (and a
// follower waits for it to appear). Read returns nil when the log has been
// read (or, following, when Stop closes or the log is removed), ctx.Err()
// when ctx ends and fn's error as soon as fn fails.
func Read(ctx context.Context, path string, o Options, fn func(e Entry) error) error {
	r := &reader{path: path, dir: filepath.Dir(path), base: filepath.Base(path), o: o, fn: fn}
	defer r.closeCur()
	if o.Follow {
		// Watch before the first listing, so nothing written in between
		// goes unnoticed.
		w := newWatcher(path, o.poll)
		defer w.close()
		r.w = w
	}
	if err := r.start(); err != nil {
		return err
	}
	return r.run(ctx)
}

// logFile is one file of a log, open.
type logFile struct {
	f  *os.File
	fi os.FileInfo // from f.Stat(), for os.SameFile
}

// reader is the state of one Read.
type reader struct {
	path, dir, base string
	o               Options
	fn              func(Entry) error
	w               watcher // nil unless following

	cur     *os.File
	curInfo os.FileInfo
	pos     int64  // offset in cur up to which data has been read
	partial []byte // bytes after the last newline read from cur
	skip    bool   // discarding an over-long record up to its newline
	buf     []byte // read buffer
}

func (r *reader) closeCur() {
	if r.cur != nil {
		r.cur.Close()
		r.cur, r.curInfo = nil, nil
	}
}

// names returns the log's file names, oldest first: base.N ... base.1, base.
// Gaps are fine: a listing can happen in the middle of a rotation.
func (r *reader) names() ([]string, error) {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing the log files of %s: %w", r.path, err)
	}
	type numbered struct {
		n    int
		name string
	}
	var rotated []numbered
	hasBase := false
	for _, e := range ents {
		name := e.Name()
		if name == r.base {
			hasBase = true
			continue
		}
		suffix, ok := strings.CutPrefix(name, r.base+".")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(suffix)
		if err != nil || n <= 0 || strconv.Itoa(n) != suffix {
			continue
		}
		rotated = append(rotated, numbered{n, name})
	}
	sort.Slice(rotated, func(i, j int) bool { return rotated[i].n > rotated[j].n })
	out := make([]string, 0, len(rotated)+1)
	for _, x := range rotated {
		out = append(out, x.name)
	}
	if hasBase {
		out = append(out, r.base)
	}
	return out, nil
}

// openAll opens the log's files, oldest first. A file that disappears
// between listing and opening (a rotation) is left out, and so is a second
// name for a file already opened.
func (r *reader) openAll() ([]logFile, error) {
	names, err := r.names()
	if err != nil {
		return nil, err
	}
	var out []logFile
	for _, name := range names {
		f, err := os.Open(filepath.Join(r.dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("opening log file: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			closeAll(out)
			return nil, fmt.Errorf("log file %s: %w", f.Name(), err)
		}
		dup := false
		for _, o := range out {
			dup = dup || os.SameFile(o.fi, fi)
		}
		if dup {
			f.Close()
			continue
		}
		out = append(out, logFile{f: f, fi: fi})
	}
	return out, nil
}

func closeAll(fs []logFile) {
	for _, f := range fs {
		f.f.Close()
	}
}

// start opens the file and offset where reading begins.
func (r *reader) start() error {
	files, err := r.openAll()
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return nil // nothing yet: run looks again (following) or returns
	}
	idx, off := 0, int64(0)
	if !r.o.Since.IsZero() {
		// Every line of a file was written before the file's last
		// modification, so a file last modified before Since holds no line
		// to show. The newest file is kept in any case: a follower reads on
		// from its end.
		for idx < len(files)-1 && files[idx].fi.ModTime().Before(r.o.Since) {
			idx++
		}
	}
	if r.o.Tail >= 0 {
		ti, toff, err := tailStart(files, r.o.Tail)
		if err != nil {
			closeAll(files)
			return err
		}
		if ti > idx || ti == idx && toff > off {
			idx, off = ti, toff
		}
	}
	for i, f := range files {
		if i != idx {
			f.f.Close()
		}
	}
	r.cur, r.curInfo = files[idx].f, files[idx].fi
	if off > 0 {
		if _, err := r.cur.Seek(off, io.SeekStart); err != nil {
			return fmt.Errorf("log file %s: %w", r.cur.Name(), err)
		}
	}
	r.pos = off
	return nil
}

// tailStart finds where the last n complete lines of files begin: the
// index of the file and the offset in it. Files are scanned backwards, so
// the cost is in the lines wanted, not in the size of the log.
func tailStart(files []logFile, n int) (int, int64, error) {
	last := len(files) - 1
	if n == 0 {
		// Nothing old: start after the last complete line of the newest
		// file (a partial line there is being written now, so it is new).
		off, _, err := lineStartBack(files[last].f, files[last].fi.Size(), 0)
		return last, off, err
	}
	need := n
	for i := last; i >= 0; i-- {
		off, found, err := lineStartBack(files[i].f, files[i].fi.Size(), need)
		if err != nil {
			return 0, 0, err
		}
		if found >= need {
			return i, off, nil
		}
		need -= found
	}
	return 0, 0, nil
}

// lineStartBack scans f backwards from size and returns the offset at
// which its last n complete lines begin and how many complete lines it saw
// (fewer than n when the file holds fewer; the offset is then 0). Bytes
// after the last newline are an incomplete line and are not counted; with
// n == 0 the offset is just after the last newline.
func lineStartBack(f *os.File, size int64, n int) (int64, int, error) {
	const chunk = 32 << 10
	buf := make([]byte, chunk)
	end := size
	found := 0
	seenEnd := false // the newline ending the last complete line
	for end > 0 {
		start := max(end-chunk, 0)
		b := buf[:end-start]
		if _, err := f.ReadAt(b, start); err != nil && !errors.Is(err, io.EOF) {
			return 0, 0, fmt.Errorf("log file %s: %w", f.Name(), err)
		}
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] != '\n' {
				continue
			}
			at := start + int64(i) + 1 // just after this newline
			if !seenEnd {
				seenEnd = true
				if n == 0 {
					return at, 0, nil
				}
				continue
			}
			found++
			if found == n {
				return at, found, nil
			}
		}
		end = start
	}
	if seenEnd {
		found++ // the first line of the file, which no newline precedes
	}
	return 0, found, nil
}

// run reads from the current position to the end, moving from file to
// file, and with Follow waits for more.
func (r *reader) run(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.drain(ctx); err != nil {
			return err
		}
		moved, err := r.advance()
		if err != nil {
			return err
		}
		if moved {
			continue
		}
		if !r.o.Follow {
			return nil
		}
		if rewound, err := r.checkTruncated(); err != nil || rewound {
			if err != nil {
				return err
			}
			continue // the new content may be there already
		}
		if r.o.onIdle != nil {
			r.o.onIdle(r.pos)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.o.Stop:
			return nil
		case <-r.w.wake():
		}
		if r.w.removed() {
			// What was written before the removal is still readable
			// through the open file.
			return r.drain(ctx)
		}
	}
}

// drain reads cur to its end, delivering complete lines.
func (r *reader) drain(ctx context.Context) error {
	if r.cur == nil {
		return nil
	}
	if r.buf == nil {
		r.buf = make([]byte, 64<<10)
	}
	for {
		n, err := r.cur.Read(r.buf)
		if n > 0 {
			r.pos += int64(n)
			if perr := r.consume(r.buf[:n]); perr != nil {
				return perr
			}
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
		}
		if errors.Is(err, io.EOF) || n == 0 && err == nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading log file %s: %w", r.cur.Name(), err)
		}
	}
}

// consume splits data into lines, keeping an incomplete tail for later.
func (r *reader) consume(data []byte) error {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if !r.skip {
				r.partial = append(r.partial, data...)
				if len(r.partial) > maxRecord {
					r.partial, r.skip = r.partial[:0], true
				}
			}
			return nil
		}
		line := data[:i]
		data = data[i+1:]
		if r.skip {
			r.skip = false
			continue
		}
		if len(r.partial) > 0 {
			r.partial = append(r.partial, line...)
			line = r.partial
		}
		err := r.emit(line)
		r.partial = r.partial[:0]
		if err != nil {
			return err
		}
	}
	return nil
}

// record is the JSON of one line (agent/runtime.LogRecord).
type record struct {
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"`
	Log    string    `json:"log"`
}

// recordStart is how every record begins; after garbage it marks where a
// whole record may still be found.
var recordStart = []byte(`{"time":`)

func decode(line []byte) (record, bool) {
	var rec record
	if err := json.Unmarshal(line, &rec); err == nil {
		return rec, true
	}
	// A record after half of another (a writer killed mid-write, then
	// restarted) shares its line; recover the whole one at the end.
	if i := bytes.LastIndex(line, recordStart); i > 0 {
		if err := json.Unmarshal(line[i:], &rec); err == nil {
			return rec, true
		}
	}
	return record{}, false
}

func (r *reader) emit(line []byte) error {
	rec, ok := decode(line)
	if !ok {
		return nil
	}
	if !r.o.Since.IsZero() && rec.Time.Before(r.o.Since) {
		return nil
	}
	text := strings.TrimSuffix(rec.Log, "\n")
	return r.fn(Entry{Time: rec.Time, Stream: rec.Stream, Line: []byte(text)})
}

// advance moves to the file written after cur, if there is one: the
// listing is matched against cur by inode, so renames in between do not
// matter. It reports whether it moved.
func (r *reader) advance() (bool, error) {
	// The common case, cur is still the live file: one stat, instead of a
	// directory listing on every write a follower is woken for.
	if r.cur != nil {
		if fi, err := os.Stat(r.path); err == nil && os.SameFile(fi, r.curInfo) {
			return false, nil
		}
	}
	// Files are identified by what was opened (fstat), so a rename
	// between listing and opening cannot confuse the order.
	files, err := r.openAll()
	if err != nil {
		return false, err
	}
	next := -1
	if r.cur == nil {
		if len(files) > 0 {
			next = 0
		}
	} else {
		at := -1
		for i, f := range files {
			if os.SameFile(f.fi, r.curInfo) {
				at = i
			}
		}
		switch {
		case at >= 0 && at < len(files)-1:
			next = at + 1
		case at < 0 && len(files) > 0:
			// cur is gone from the listing: either the reader fell more
			// than the kept number of files behind and cur was rotated
			// out (go on with the oldest file left, which was written
			// after it), or the log is being removed (the files left are
			// older than cur; do not read them again).
			if now, err := r.cur.Stat(); err == nil && !files[0].fi.ModTime().Before(now.ModTime()) {
				next = 0
			}
		}
	}
	if next < 0 {
		closeAll(files)
		return false, nil
	}
	for i, f := range files {
		if i != next {
			f.f.Close()
		}
	}
	r.closeCur()
	r.cur, r.curInfo, r.pos = files[next].f, files[next].fi, 0
	// An incomplete line at the end of a file that was rotated away will
	// never be completed.
	r.partial, r.skip = r.partial[:0], false
	return true, nil
}

// checkTruncated rewinds when cur shrank below what was read: the writer
// keeps a single file and truncated it to start over. (A truncation that
// is refilled past the read offset before the reader looks goes unseen; the
// reader then resumes mid-record, skips the broken line and goes on.)
func (r *reader) checkTruncated() (bool, error) {
	if r.cur == nil {
		return false, nil
	}
	fi, err := r.cur.Stat()
	if err != nil {
		return false, fmt.Errorf("log file %s: %w", r.cur.Name(), err)
	}
	if fi.Size() >= r.pos {
		return false, nil
	}
	if _, err := r.cur.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("log file %s: %w", r.cur.Name(), err)
	}
	r.pos, r.partial, r.skip = 0, r.partial[:0], false
	return true, nil
}
