package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/shoal-dev/shoal/agent/agentapi"
	"github.com/shoal-dev/shoal/agent/runtime"
	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// execer adapts the libcontainer runtime to agentapi.Execer: only tasks
// the executor holds, and only while they run.
type execer struct {
	lc    *runtime.Libcontainer
	tasks func() []*shoalv1.Task
}

func (x execer) Exec(ctx context.Context, taskID string, st *shoalv1.ExecStart) (agentapi.ExecProcess, error) {
	var held *shoalv1.Task
	for _, t := range x.tasks() {
		if t.GetMeta().GetId() == taskID {
			held = t
			break
		}
	}
	if held == nil {
		return nil, errdefs.NotFoundf("task %q is not on this node", taskID)
	}
	if s := held.GetStatus().GetState(); s != shoalv1.TaskState_TASK_STATE_RUNNING {
		return nil, errdefs.FailedPreconditionf("task %q is %s, not running", taskID, taskStateName(s))
	}
	opts := runtime.ExecOptions{Args: st.GetCmd(), Env: st.GetEnv(), User: st.GetUser(), Cwd: st.GetWorkdir(),
		TTY: st.GetTty(), Stdin: st.GetStdin(),
		Rows: uint16(min(st.GetSize().GetRows(), 0xffff)), Cols: uint16(min(st.GetSize().GetCols(), 0xffff))}
	p, err := x.lc.ExecInteractive(ctx, taskID, opts)
	switch {
	case err == nil:
		return execProc{p}, nil
	case errors.Is(err, runtime.ErrNotFound):
		return nil, errdefs.NotFound(err)
	case errors.Is(err, runtime.ErrNotRunning):
		return nil, errdefs.FailedPrecondition(err)
	case errors.Is(err, runtime.ErrInvalidArgument):
		return nil, errdefs.InvalidArgument(err)
	}
	return nil, err
}

// taskStateName is "exited" for TASK_STATE_EXITED... as the CLI shows states.
func taskStateName(s shoalv1.TaskState) string {
	n := s.String()
	const p = "TASK_STATE_"
	if len(n) > len(p) && n[:len(p)] == p {
		n = n[len(p):]
	}
	b := []byte(n)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

type execProc struct{ p *runtime.ExecProcess }

func (e execProc) Stdin() io.WriteCloser {
	if e.p.Stdin == nil {
		return nil
	}
	return e.p.Stdin
}
func (e execProc) Stdout() io.Reader {
	if e.p.Stdout == nil {
		return nil
	}
	return e.p.Stdout
}
func (e execProc) Stderr() io.Reader {
	if e.p.Stderr == nil {
		return nil
	}
	return e.p.Stderr
}
func (e execProc) Resize(rows, cols uint16) error { return e.p.Resize(rows, cols) }
func (e execProc) Wait() (int, int, error)        { return e.p.Wait() }
func (e execProc) Close() error                   { return e.p.Close() }

// AuditLogFile is the manager's audit log in its data dir: one JSON line
// per exec (manager/opsapi), appended, never rotated by Shoal.
const AuditLogFile = "audit.log"

// openAuditLog opens dataDir/audit.log for appending (owner-only: it
// names who did what) and returns a JSON logger writing to it.
func openAuditLog(dataDir string) (*slog.Logger, io.Closer, error) {
	f, err := os.OpenFile(filepath.Join(dataDir, AuditLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	return slog.New(slog.NewJSONHandler(f, nil)), f, nil
}
