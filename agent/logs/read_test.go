package logs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testLog writes a log the way agent/runtime's shim does: JSON lines,
// rotated by renaming path → path.1 → ... or, with maxFiles 1, truncated.
type testLog struct {
	t        *testing.T
	path     string
	maxFiles int
	f        *os.File
	clock    time.Time // time of the next record; advances 1 s per record
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newTestLog(t *testing.T, maxFiles int) *testLog {
	t.Helper()
	l := &testLog{t: t, path: filepath.Join(t.TempDir(), "task.log"), maxFiles: maxFiles, clock: t0}
	l.open()
	t.Cleanup(func() {
		if l.f != nil {
			l.f.Close()
		}
	})
	return l
}

func (l *testLog) open() {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		l.t.Fatal(err)
	}
	l.f = f
}

func jsonLine(ts time.Time, stream, text string) string {
	// Field order as in agent/runtime.LogRecord.
	b, _ := json.Marshal(struct {
		Time   time.Time `json:"time"`
		Stream string    `json:"stream"`
		Log    string    `json:"log"`
	}{ts, stream, text})
	return string(b) + "\n"
}

// line appends one complete record "text\n" and returns its time.
func (l *testLog) line(text string) time.Time {
	ts := l.clock
	l.clock = l.clock.Add(time.Second)
	l.raw(jsonLine(ts, "stdout", text+"\n"))
	return ts
}

func (l *testLog) lines(texts ...string) {
	for _, s := range texts {
		l.line(s)
	}
}

func (l *testLog) raw(s string) {
	if _, err := l.f.WriteString(s); err != nil {
		l.t.Fatal(err)
	}
}

func (l *testLog) rotate() {
	l.f.Close()
	if l.maxFiles <= 1 {
		if err := os.Truncate(l.path, 0); err != nil {
			l.t.Fatal(err)
		}
		l.open()
		return
	}
	for i := l.maxFiles - 1; i >= 1; i-- {
		src := l.path
		if i > 1 {
			src = fmt.Sprintf("%s.%d", l.path, i-1)
		}
		if err := os.Rename(src, fmt.Sprintf("%s.%d", l.path, i)); err != nil && !os.IsNotExist(err) {
			l.t.Fatal(err)
		}
	}
	l.open()
}

// setMtime sets a file's modification time to the time of its last record,
// as if it had been written in real time.
func setMtime(t *testing.T, path string, ts time.Time) {
	t.Helper()
	if err := os.Chtimes(path, ts, ts); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, path string, o Options) []string {
	t.Helper()
	var got []string
	if err := Read(context.Background(), path, o, func(e Entry) error {
		got = append(got, string(e.Line))
		return nil
	}); err != nil {
		t.Fatalf("Read: %v", err)
	}
	return got
}

func seq(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("l%d", i))
	}
	return out
}

// TestRead: whole logs, tails and since across rotated files; partial and
// corrupt lines.
func TestRead(t *testing.T) {
	// path.2: l1-l3, path.1: l4-l6, path: l7-l9 and half of a tenth record.
	l := newTestLog(t, 3)
	l.lines(seq(1, 3)...)
	setMtime(t, l.path, t0.Add(2*time.Second))
	l.rotate()
	l.lines(seq(4, 6)...)
	setMtime(t, l.path, t0.Add(5*time.Second))
	l.rotate()
	l.lines(seq(7, 9)...)
	l.raw(`{"time":"2025-03-01T12:00:09Z","stream":"stdout","log":"l1`)

	cases := []struct {
		name string
		o    Options
		want []string
	}{
		{"all", Options{Tail: AllLines}, seq(1, 9)},
		{"tail 0", Options{Tail: 0}, nil},
		{"tail within the newest file", Options{Tail: 2}, seq(8, 9)},
		{"tail of exactly the newest file", Options{Tail: 3}, seq(7, 9)},
		{"tail across files", Options{Tail: 5}, seq(5, 9)},
		{"tail longer than the log", Options{Tail: 100}, seq(1, 9)},
		{"since mid file", Options{Tail: AllLines, Since: t0.Add(4 * time.Second)}, seq(5, 9)},
		{"since at a file boundary", Options{Tail: AllLines, Since: t0.Add(3 * time.Second)}, seq(4, 9)},
		{"since after everything", Options{Tail: AllLines, Since: t0.Add(time.Hour)}, nil},
		{"since and a shorter tail", Options{Tail: 2, Since: t0.Add(time.Second)}, seq(8, 9)},
		{"since and a longer tail", Options{Tail: 7, Since: t0.Add(6 * time.Second)}, seq(7, 9)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := readAll(t, l.path, c.o); !slices.Equal(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestReadOddFiles(t *testing.T) {
	t.Run("no log yet", func(t *testing.T) {
		if got := readAll(t, filepath.Join(t.TempDir(), "none.log"), Options{Tail: AllLines}); got != nil {
			t.Errorf("got %q from a missing log", got)
		}
	})
	t.Run("no directory", func(t *testing.T) {
		if got := readAll(t, filepath.Join(t.TempDir(), "gone", "x.log"), Options{Tail: AllLines}); got != nil {
			t.Errorf("got %q from a missing directory", got)
		}
	})
	t.Run("gap in the rotated names and unrelated files", func(t *testing.T) {
		l := newTestLog(t, 3)
		l.lines("new")
		os.WriteFile(l.path+".2", []byte(jsonLine(t0.Add(-time.Hour), "stdout", "old\n")), 0o640)
		os.WriteFile(l.path+".x", []byte(jsonLine(t0, "stdout", "no\n")), 0o640)
		os.WriteFile(l.path+".01", []byte(jsonLine(t0, "stdout", "no\n")), 0o640)
		os.WriteFile(l.path+"x.1", []byte(jsonLine(t0, "stdout", "no\n")), 0o640)
		if got, want := readAll(t, l.path, Options{Tail: AllLines}), []string{"old", "new"}; !slices.Equal(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("corrupt lines", func(t *testing.T) {
		l := newTestLog(t, 3)
		l.line("a")
		l.raw("not json\n")
		// A writer killed mid-record, then restarted: the next record
		// continues the same line.
		l.raw(`{"time":"2025-03-01T12:00:`)
		l.line("b")
		l.raw(strings.Repeat("x", maxRecord+10) + "\n")
		l.line("c")
		if got, want := readAll(t, l.path, Options{Tail: AllLines}), []string{"a", "b", "c"}; !slices.Equal(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("streams, times and newlines", func(t *testing.T) {
		l := newTestLog(t, 3)
		l.raw(jsonLine(t0, "stderr", "err\n"))
		l.raw(jsonLine(t0.Add(time.Millisecond), "stdout", "no newline at exit"))
		var got []Entry
		err := Read(context.Background(), l.path, Options{Tail: AllLines}, func(e Entry) error { got = append(got, e); return nil })
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].Stream != "stderr" || string(got[0].Line) != "err" || !got[0].Time.Equal(t0) ||
			got[1].Stream != "stdout" || string(got[1].Line) != "no newline at exit" {
			t.Errorf("got %+v", got)
		}
	})
	t.Run("fn error ends the read", func(t *testing.T) {
		l := newTestLog(t, 3)
		l.lines("a", "b")
		boom := errors.New("boom")
		n := 0
		err := Read(context.Background(), l.path, Options{Tail: AllLines}, func(Entry) error { n++; return boom })
		if !errors.Is(err, boom) || n != 1 {
			t.Errorf("Read = %v after %d calls, want boom after 1", err, n)
		}
	})
	t.Run("unreadable file", func(t *testing.T) {
		l := newTestLog(t, 3)
		l.line("a")
		// A directory where a rotated file should be cannot be read.
		if err := os.Mkdir(l.path+".1", 0o755); err != nil {
			t.Fatal(err)
		}
		err := Read(context.Background(), l.path, Options{Tail: AllLines}, func(Entry) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "task.log.1") {
			t.Errorf("Read = %v, want an error naming the unreadable file", err)
		}
	})
}

// follower runs a following Read in the background.
type follower struct {
	t       *testing.T
	entries chan string
	idle    chan int64
	done    chan error
	cancel  context.CancelFunc
}

const waitLong = 10 * time.Second // a failure bound, never a synchronisation

func follow(t *testing.T, path string, o Options) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{t: t, entries: make(chan string, 1000), idle: make(chan int64, 1000), done: make(chan error, 1), cancel: cancel}
	o.Follow = true
	o.onIdle = func(pos int64) { f.idle <- pos }
	go func() {
		f.done <- Read(ctx, path, o, func(e Entry) error { f.entries <- string(e.Line); return nil })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-f.done:
		case <-time.After(waitLong):
			t.Error("the follower did not stop")
		}
	})
	return f
}

// expect receives exactly want, in order.
func (f *follower) expect(want ...string) {
	f.t.Helper()
	for _, w := range want {
		select {
		case got := <-f.entries:
			if got != w {
				f.t.Fatalf("got line %q, want %q", got, w)
			}
		case err := <-f.done:
			// Lines are queued before the end is: select may have
			// picked the end with the line still waiting.
			f.done <- err
			select {
			case got := <-f.entries:
				if got != w {
					f.t.Fatalf("got line %q, want %q", got, w)
				}
			default:
				f.t.Fatalf("the follower ended (%v) while %q was expected", err, w)
			}
		case <-time.After(waitLong):
			f.t.Fatalf("no line %q after %s", w, waitLong)
		}
	}
}

// waitIdle waits until the follower has read up to pos in its file and
// waits for more.
func (f *follower) waitIdle(pos int64) {
	f.t.Helper()
	deadline := time.After(waitLong)
	for {
		select {
		case p := <-f.idle:
			if p == pos {
				return
			}
		case <-deadline:
			f.t.Fatalf("the follower never waited at offset %d", pos)
		}
	}
}

func (f *follower) expectEnd(want error) {
	f.t.Helper()
	select {
	case got := <-f.entries:
		f.t.Fatalf("unexpected line %q", got)
	case err := <-f.done:
		if !errors.Is(err, want) {
			f.t.Fatalf("the follower ended with %v, want %v", err, want)
		}
		f.done <- err // for the cleanup
		select {
		case got := <-f.entries: // queued before the end
			f.t.Fatalf("unexpected line %q", got)
		default:
		}
	case <-time.After(waitLong):
		f.t.Fatalf("the follower did not end after %s", waitLong)
	}
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

var watchModes = []struct {
	name string
	poll bool
}{{"inotify", false}, {"poll", true}}

// TestFollow: appended lines, a partial line completed later, rotation by
// rename and by truncation, and the end when the log is removed, each with
// inotify and with the polling fallback.
func TestFollow(t *testing.T) {
	for _, m := range watchModes {
		t.Run(m.name, func(t *testing.T) {
			t.Run("append, partial, rotate, remove", func(t *testing.T) {
				l := newTestLog(t, 3)
				l.lines("old1", "old2")
				f := follow(t, l.path, Options{Tail: 1, poll: m.poll})
				f.expect("old2")
				l.lines("a", "b")
				f.expect("a", "b")

				// Half a record: the follower reads it and waits, without
				// delivering anything, until the rest arrives.
				rec := jsonLine(l.clock, "stdout", "whole\n")
				l.raw(rec[:20])
				f.waitIdle(size(t, l.path))
				l.raw(rec[20:])
				f.expect("whole")

				l.rotate()
				l.lines("c")
				f.expect("c")
				l.rotate()
				l.rotate() // an empty file rotated too
				l.lines("d")
				f.expect("d")

				os.Remove(l.path + ".2")
				os.Remove(l.path + ".1")
				os.Remove(l.path)
				f.expectEnd(nil)
			})
			t.Run("truncation", func(t *testing.T) {
				l := newTestLog(t, 1)
				l.lines("a", "b")
				f := follow(t, l.path, Options{Tail: AllLines, poll: m.poll})
				f.expect("a", "b")
				f.waitIdle(size(t, l.path))
				l.rotate()
				l.lines("c")
				f.expect("c")
			})
			t.Run("log created after the follower started", func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "later.log")
				f := follow(t, path, Options{Tail: AllLines, poll: m.poll})
				f.waitIdle(0)
				os.WriteFile(path, []byte(jsonLine(t0, "stdout", "first\n")), 0o640)
				f.expect("first")
			})
			t.Run("directory removed", func(t *testing.T) {
				l := newTestLog(t, 3)
				l.lines("a")
				f := follow(t, l.path, Options{Tail: AllLines, poll: m.poll})
				f.expect("a")
				l.lines("b") // written before the removal: still delivered
				if err := os.RemoveAll(filepath.Dir(l.path)); err != nil {
					t.Fatal(err)
				}
				f.expect("b")
				f.expectEnd(nil)
			})
		})
	}
}

// TestFollowFallsBehindRotation: the follower is held inside fn while the
// writer rotates twice; it must then read the rest of its old file and the
// files written since, in order, without repeating anything.
func TestFollowFallsBehindRotation(t *testing.T) {
	l := newTestLog(t, 3)
	l.lines("a1", "a2")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	entered := make(chan struct{})
	release := make(chan struct{})
	got := make(chan string, 100)
	done := make(chan error, 1)
	go func() {
		done <- Read(ctx, l.path, Options{Tail: AllLines, Follow: true}, func(e Entry) error {
			if string(e.Line) == "a1" {
				close(entered)
				<-release
			}
			got <- string(e.Line)
			return nil
		})
	}()
	select {
	case <-entered:
	case <-time.After(waitLong):
		t.Fatal("the follower never delivered a1")
	}
	l.lines("a3")
	l.rotate()
	l.lines("b1", "b2")
	l.rotate()
	l.lines("c1")
	close(release)
	want := []string{"a1", "a2", "a3", "b1", "b2", "c1"}
	for _, w := range want {
		select {
		case g := <-got:
			if g != w {
				t.Fatalf("got %q, want %q (all: %q)", g, w, want)
			}
		case <-time.After(waitLong):
			t.Fatalf("no %q", w)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Read = %v, want context.Canceled", err)
	}
}

func TestFollowStop(t *testing.T) {
	l := newTestLog(t, 3)
	l.lines("a")
	stop := make(chan struct{})
	f := follow(t, l.path, Options{Tail: AllLines, Stop: stop})
	f.expect("a")
	close(stop)
	f.expectEnd(nil)
}

func TestFollowContextEnds(t *testing.T) {
	l := newTestLog(t, 3)
	f := follow(t, l.path, Options{Tail: AllLines})
	f.waitIdle(0)
	f.cancel()
	f.expectEnd(context.Canceled)
}

// TestFollowTailZero: only lines written after the start.
func TestFollowTailZero(t *testing.T) {
	l := newTestLog(t, 3)
	l.lines("old")
	f := follow(t, l.path, Options{Tail: 0})
	f.waitIdle(size(t, l.path))
	l.lines("new")
	f.expect("new")
}

// TestLineStartBack covers the backwards scan at chunk boundaries.
func TestLineStartBack(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("y", 40<<10) // longer than one scan chunk
	cases := []struct {
		content   string
		n         int
		wantOff   int64
		wantFound int
	}{
		{"", 1, 0, 0},
		{"a\n", 0, 2, 0},
		{"a\n", 1, 0, 1},
		{"a\nb\n", 1, 2, 1},
		{"a\nb\nc", 1, 2, 1},
		{"a\nb\nc", 0, 4, 0},
		{"a\nb\n", 5, 0, 2},
		{"partial", 1, 0, 0},
		{"partial", 0, 0, 0},
		{long + "\n" + long + "\nz\n", 2, int64(len(long)) + 1, 2},
		{long + "\n" + long + "\nz\n", 3, 0, 3},
	}
	for i, c := range cases {
		p := filepath.Join(dir, fmt.Sprint(i))
		os.WriteFile(p, []byte(c.content), 0o600)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		off, found, err := lineStartBack(f, int64(len(c.content)), c.n)
		f.Close()
		if err != nil || off != c.wantOff || found != c.wantFound {
			t.Errorf("case %d (n=%d): got (%d, %d, %v), want (%d, %d)", i, c.n, off, found, err, c.wantOff, c.wantFound)
		}
	}
}

// TestFollowDirectoryLater: inotify cannot watch a directory that does
// not exist yet, so the follower polls and still sees the log appear.
func TestFollowDirectoryLater(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "task")
	path := filepath.Join(dir, "x.log")
	f := follow(t, path, Options{Tail: AllLines})
	f.waitIdle(0)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte(jsonLine(t0, "stdout", "hello\n")), 0o640)
	f.expect("hello")
}
