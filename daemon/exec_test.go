package daemon

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestExecerRefuses: the agent execs only into tasks its executor holds,
// and only while they run; the refusals keep their class.
func TestExecerRefuses(t *testing.T) {
	x := execer{tasks: func() []*shoalv1.Task {
		return []*shoalv1.Task{{Meta: &shoalv1.Meta{Id: "done"}, Status: &shoalv1.TaskStatus{State: shoalv1.TaskState_TASK_STATE_COMPLETE}}}
	}}
	start := &shoalv1.ExecStart{Cmd: []string{"true"}}
	if _, err := x.Exec(context.Background(), "elsewhere", start); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), `task "elsewhere" is not on this node`) {
		t.Errorf("a task not held: %v", err)
	}
	if _, err := x.Exec(context.Background(), "done", start); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), `task "done" is complete, not running`) {
		t.Errorf("a task not running: %v", err)
	}
}

// TestAuditLogFile: the audit log is appended to (a manager restart keeps
// the earlier records), owner-only, one JSON object per line.
func TestAuditLogFile(t *testing.T) {
	dir := t.TempDir()
	for i := range 2 {
		log, f, err := openAuditLog(dir)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("exec", "task", "t1", "n", i)
		f.Close()
	}
	path := filepath.Join(dir, AuditLogFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("audit.log mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("audit.log: %q, want 2 lines", b)
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["task"] != "t1" || m["n"] != float64(i) {
			t.Errorf("line %d %q: %v %v", i, l, m, err)
		}
	}
}
