package runtime

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

const (
	defaultLogMaxBytes = 10 << 20
	defaultLogMaxFiles = 3
	maxLogLine         = 16 << 10 // longer lines are split into several records
)

// LogRecord is one line of a task's log file (JSON lines, like Docker's
// json-file driver). Log keeps the line's trailing newline, if any.
type LogRecord struct {
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"` // "stdout" or "stderr"
	Log    string    `json:"log"`
}

// logFile appends records to path and rotates it by size:
// path → path.1 → ... → path.(maxFiles-1). Safe for concurrent use by the
// stdout and stderr copiers.
type logFile struct {
	mu       sync.Mutex // guards everything below
	path     string
	maxBytes int64
	maxFiles int
	f        *os.File
	size     int64
}

func openLogFile(path string, o LogOptions) (*logFile, error) {
	l := &logFile{path: path, maxBytes: o.MaxBytes, maxFiles: o.MaxFiles}
	if l.maxBytes <= 0 {
		l.maxBytes = defaultLogMaxBytes
	}
	if l.maxFiles <= 0 {
		l.maxFiles = defaultLogMaxFiles
	}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *logFile) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	l.f, l.size = f, fi.Size()
	return nil
}

func (l *logFile) rotate() error {
	l.f.Close()
	if l.maxFiles <= 1 {
		if err := os.Truncate(l.path, 0); err != nil {
			return err
		}
		return l.open()
	}
	for i := l.maxFiles - 1; i >= 1; i-- {
		src := l.path
		if i > 1 {
			src = fmt.Sprintf("%s.%d", l.path, i-1)
		}
		if err := os.Rename(src, fmt.Sprintf("%s.%d", l.path, i)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return l.open()
}

func (l *logFile) write(stream, line string) error {
	b, err := json.Marshal(LogRecord{Time: time.Now().UTC(), Stream: stream, Log: line})
	if err != nil {
		return err
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.size > 0 && l.size+int64(len(b)) > l.maxBytes {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(b)
	l.size += int64(n)
	return err
}

func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// copyLines reads r line by line into l until EOF.
func (l *logFile) copyLines(stream string, r io.Reader) error {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if werr := l.write(stream, string(line)); werr != nil {
				return werr
			}
		}
		switch err {
		case nil, bufio.ErrBufferFull:
		case io.EOF:
			return nil
		default:
			return err
		}
	}
}

// ReadLog decodes a log file written by the shim (one file, not its
// rotated predecessors).
func ReadLog(path string) ([]LogRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []LogRecord
	dec := json.NewDecoder(f)
	for {
		var r LogRecord
		if err := dec.Decode(&r); err == io.EOF {
			return out, nil
		} else if err != nil {
			return out, err
		}
		out = append(out, r)
	}
}
