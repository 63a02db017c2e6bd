package runtime

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSupervisorLogDiskFull: when the log's file system fills up in the
// middle of a record, the supervisor cuts the partial record off, so that
// the file stays whole JSON lines (a torn record would join the next one
// into a line ReadLog cannot decode, and everything after it would be
// lost), and the container still runs to its end.
func TestSupervisorLogDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (mounts a small tmpfs)")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=8k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Error(err)
		}
	})
	log := filepath.Join(mnt, "task.log")
	line := strings.Repeat("x", 1000)
	dir, stderr := runSupervised(t, `i=0; while [ $i -lt 20 ]; do echo `+line+`; i=$((i+1)); done; exit 3`,
		superviseArgs{LogPath: log, LogMaxBytes: 1 << 20, LogMaxFiles: 1})
	if ex := mustExit(t, dir); ex.Code != 3 {
		t.Errorf("exit code %d, want 3", ex.Code)
	}
	if !strings.Contains(stderr, "log write") || !strings.Contains(strings.ToLower(stderr), syscall.ENOSPC.Error()) {
		t.Errorf("the full disk is not reported: %q", stderr)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		t.Fatalf("log of %d bytes does not end with a whole record: ...%q", len(b), b[max(0, len(b)-40):])
	}
	recs, err := ReadLog(log)
	if err != nil {
		t.Fatalf("log does not decode after a full disk: %v", err)
	}
	if len(recs) == 0 || len(recs) >= 20 || len(recs) != bytes.Count(b, []byte("\n")) {
		t.Fatalf("%d records in %d lines", len(recs), bytes.Count(b, []byte("\n")))
	}
	for i, r := range recs {
		if r.Log != line+"\n" {
			t.Fatalf("record %d is %d bytes, not the line", i, len(r.Log))
		}
	}
}
