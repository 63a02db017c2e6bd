package agentapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Execer starts processes inside this node's running tasks (the daemon
// adapts agent/runtime's ExecInteractive). Its errors carry errdefs
// classes: NotFound for a task the node does not hold, FailedPrecondition
// for one that does not run, InvalidArgument for a bad user or env.
type Execer interface {
	Exec(ctx context.Context, taskID string, start *shoalv1.ExecStart) (ExecProcess, error)
}

// ExecProcess is a started exec. The process is killed when the ctx given
// to Exec ends; Close kills it too and closes its streams.
type ExecProcess interface {
	Stdin() io.WriteCloser // nil without start.stdin
	Stdout() io.Reader     // the terminal with tty
	Stderr() io.Reader     // nil with tty
	Resize(rows, cols uint16) error
	// Wait returns the exit code (128+n when killed by signal n) and the
	// signal (0 if none) once the process has exited.
	Wait() (code, signal int, err error)
	Close() error
}

// Bounds of an exec. An argv or environment larger than these is a
// mistake, not a command; more concurrent execs in one task than
// MaxExecsPerTask is someone's loop.
const (
	MaxExecArgs       = 1024
	MaxExecArgvBytes  = 64 << 10 // argv and env together
	MaxExecStdinChunk = 1 << 20
	MaxExecsPerTask   = 16
	// execChunk is the most output sent in one message.
	execChunk = 32 << 10
	// execDrain is how long output may still arrive after the process
	// exited (a child it left may hold the pipe open: that child does not
	// keep the exec from ending).
	execDrain = time.Second
)

// ValidateExecStart checks an exec's start message; the error names the
// field.
func ValidateExecStart(st *shoalv1.ExecStart) error {
	if st == nil {
		return errdefs.InvalidArgumentf("start: the first message must be start")
	}
	if st.GetTaskId() == "" {
		return errdefs.InvalidArgumentf("start.task_id: required")
	}
	if len(st.GetCmd()) == 0 || st.GetCmd()[0] == "" {
		return errdefs.InvalidArgumentf("start.cmd: a command is required")
	}
	if len(st.GetCmd())+len(st.GetEnv()) > MaxExecArgs {
		return errdefs.InvalidArgumentf("start.cmd: %d arguments and %d env entries, at most %d in all", len(st.GetCmd()), len(st.GetEnv()), MaxExecArgs)
	}
	size := 0
	for _, a := range st.GetCmd() {
		size += len(a) + 1
	}
	for i, e := range st.GetEnv() {
		size += len(e) + 1
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return errdefs.InvalidArgumentf("start.env[%d]: %q is not KEY=VALUE", i, e)
		}
		if strings.ContainsRune(e, 0) {
			return errdefs.InvalidArgumentf("start.env[%d]: contains a NUL byte", i)
		}
	}
	for i, a := range st.GetCmd() {
		if strings.ContainsRune(a, 0) {
			return errdefs.InvalidArgumentf("start.cmd[%d]: contains a NUL byte", i)
		}
	}
	if size > MaxExecArgvBytes {
		return errdefs.InvalidArgumentf("start.cmd: argv and env are %d bytes, at most %d", size, MaxExecArgvBytes)
	}
	if w := st.GetWorkdir(); w != "" && !strings.HasPrefix(w, "/") {
		return errdefs.InvalidArgumentf("start.workdir: %q must be absolute", w)
	}
	if s := st.GetSize(); s != nil && (s.GetRows() > 0xffff || s.GetCols() > 0xffff) {
		return errdefs.InvalidArgumentf("start.size: %dx%d is too large", s.GetRows(), s.GetCols())
	}
	return nil
}

// execSlots counts the execs running per task.
type execSlots struct {
	mu sync.Mutex
	n  map[string]int
}

func (e *execSlots) take(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[string]int{}
	}
	if e.n[id] >= MaxExecsPerTask {
		return false
	}
	e.n[id]++
	return true
}

func (e *execSlots) put(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n[id]--; e.n[id] <= 0 {
		delete(e.n, id)
	}
}

// Exec runs a process in one of this node's running tasks for a manager
// (trust.AgentPolicy admits managers only; the manager checked its own
// caller and audits the exec). Headers go out at once, so that the manager
// can tell a node that answers from one that does not. The process is
// killed when the caller goes away.
func (s *Server) Exec(stream shoalv1.AgentAPI_ExecServer) error {
	if s.cfg.Execer == nil {
		return errdefs.Unavailablef("this node does not run exec")
	}
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if err := ValidateExecStart(start); err != nil {
		return err
	}
	id := start.GetTaskId()
	if !validTaskID(id) {
		return errdefs.InvalidArgumentf("start.task_id: %q is not a task id", id)
	}
	if !s.execs.take(id) {
		return errdefs.ResourceExhaustedf("task %q already runs %d execs, the most at once", id, MaxExecsPerTask)
	}
	defer s.execs.put(id)

	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	p, err := s.cfg.Execer.Exec(ctx, id, start)
	if err != nil {
		return err
	}
	defer p.Close()
	log := s.log.With("task_id", id)
	log.Debug("exec started", "tty", start.GetTty())

	// Input: one goroutine reads the caller's messages. A caller that
	// hangs up ends ctx, which kills the process.
	go func() {
		defer cancel()
		stdin := p.Stdin()
		for {
			req, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					// Half-close: no more input, the process runs on.
					if stdin != nil {
						stdin.Close()
					}
					<-ctx.Done()
				}
				return
			}
			switch m := req.GetMsg().(type) {
			case *shoalv1.ExecRequest_Stdin:
				if len(m.Stdin) > MaxExecStdinChunk {
					log.Warn("exec stdin chunk too large; ending the exec", "bytes", len(m.Stdin))
					return
				}
				if stdin != nil {
					if _, err := stdin.Write(m.Stdin); err != nil {
						stdin = nil // the process closed its stdin: drop the rest
					}
				}
			case *shoalv1.ExecRequest_Resize:
				_ = p.Resize(uint16(min(m.Resize.GetRows(), 0xffff)), uint16(min(m.Resize.GetCols(), 0xffff)))
			case *shoalv1.ExecRequest_CloseStdin:
				if stdin != nil {
					stdin.Close()
					stdin = nil
				}
			}
		}
	}()

	// Output: a reader per stream, one sender (this goroutine).
	out := make(chan *shoalv1.ExecResponse)
	var readers sync.WaitGroup
	pump := func(r io.Reader, wrap func([]byte) *shoalv1.ExecResponse) {
		if r == nil {
			return
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				b := make([]byte, execChunk)
				n, err := r.Read(b)
				if n > 0 {
					select {
					case out <- wrap(b[:n]):
					case <-ctx.Done():
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
	pump(p.Stdout(), func(b []byte) *shoalv1.ExecResponse {
		return &shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Stdout{Stdout: b}}
	})
	pump(p.Stderr(), func(b []byte) *shoalv1.ExecResponse {
		return &shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Stderr{Stderr: b}}
	})
	readDone := make(chan struct{})
	go func() { readers.Wait(); close(readDone) }()
	type exit struct{ code, signal int }
	exited := make(chan exit, 1)
	go func() {
		code, sig, err := p.Wait()
		if err != nil {
			log.Warn("exec wait", "err", err)
		}
		exited <- exit{code, sig}
	}()

	var ex *exit
	var drain <-chan time.Time
	for {
		select {
		case m := <-out:
			if err := stream.Send(m); err != nil {
				return err
			}
			continue
		case e := <-exited:
			ex = &e
			exited = nil
			t := time.NewTimer(execDrain)
			defer t.Stop()
			drain = t.C
			continue
		case <-readDone:
			readDone = nil
			if ex != nil {
				return s.sendExit(stream, ex.code, ex.signal)
			}
			continue
		case <-drain:
		case <-ctx.Done():
			if stream.Context().Err() != nil {
				return stream.Context().Err()
			}
			if ex == nil {
				// The caller sent a bad message: the process is killed
				// by the cancel; report how it ended.
				e := <-exited
				ex = &e
			}
		}
		// Output is complete (or was cut at the drain bound): the exit
		// goes last.
		p.Close()
		for readDone != nil {
			select {
			case m := <-out:
				if err := stream.Send(m); err != nil {
					return err
				}
			case <-readDone:
				readDone = nil
			}
		}
		return s.sendExit(stream, ex.code, ex.signal)
	}
}

func (s *Server) sendExit(stream shoalv1.AgentAPI_ExecServer, code, sig int) error {
	e := &shoalv1.ExecExit{Code: int32(code)}
	if sig > 0 {
		e.Signal = signalName(sig)
	}
	return stream.Send(&shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Exit{Exit: e}})
}

// signalName is "KILL" for 9: the names a shell user knows.
func signalName(sig int) string {
	names := map[int]string{1: "HUP", 2: "INT", 3: "QUIT", 4: "ILL", 6: "ABRT", 7: "BUS", 8: "FPE", 9: "KILL",
		10: "USR1", 11: "SEGV", 12: "USR2", 13: "PIPE", 14: "ALRM", 15: "TERM"}
	if n, ok := names[sig]; ok {
		return n
	}
	return fmt.Sprintf("%d", sig)
}
