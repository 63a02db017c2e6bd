package agentapi

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// fakeExecer runs pretend processes: "cat" copies stdin to stdout, "exit
// N" writes "bye" to stderr and exits N, "hang" runs until killed.
type fakeExecer struct {
	mu      sync.Mutex
	starts  []*shoalv1.ExecStart
	resizes chan [2]uint16
	killed  chan string // the task of each process killed by ctx
}

func newFakeExecer() *fakeExecer {
	return &fakeExecer{resizes: make(chan [2]uint16, 16), killed: make(chan string, 64)}
}

type fakeProc struct {
	stdinR         *io.PipeReader
	stdinW         *io.PipeWriter
	outR, errR     *io.PipeReader
	outW, errW     *io.PipeWriter
	resizes        chan<- [2]uint16
	code, sig      int
	done           chan struct{}
	closeOnce      sync.Once
	exitOnce       sync.Once
	stdinRequested bool
}

func (f *fakeExecer) Exec(ctx context.Context, taskID string, st *shoalv1.ExecStart) (ExecProcess, error) {
	f.mu.Lock()
	f.starts = append(f.starts, st)
	f.mu.Unlock()
	switch taskID {
	case "gone":
		return nil, errdefs.NotFoundf("task %q is not on this node", taskID)
	case "stopped":
		return nil, errdefs.FailedPreconditionf("task %q is not running", taskID)
	}
	p := &fakeProc{resizes: f.resizes, done: make(chan struct{}), stdinRequested: st.GetStdin()}
	p.stdinR, p.stdinW = io.Pipe()
	p.outR, p.outW = io.Pipe()
	p.errR, p.errW = io.Pipe()
	exit := func(code, sig int) {
		p.exitOnce.Do(func() {
			p.code, p.sig = code, sig
			p.outW.Close()
			p.errW.Close()
			close(p.done)
		})
	}
	switch st.GetCmd()[0] {
	case "cat":
		go func() {
			_, _ = io.Copy(p.outW, p.stdinR)
			exit(0, 0)
		}()
	case "exit":
		go func() {
			_, _ = p.errW.Write([]byte("bye\n"))
			n, _ := strconv.Atoi(st.GetCmd()[1])
			exit(n, 0)
		}()
	}
	go func() {
		select {
		case <-ctx.Done():
			f.killed <- taskID
			exit(137, 9)
		case <-p.done:
		}
	}()
	return p, nil
}

func (p *fakeProc) Stdin() io.WriteCloser {
	if !p.stdinRequested {
		return nil
	}
	return p.stdinW
}
func (p *fakeProc) Stdout() io.Reader { return p.outR }
func (p *fakeProc) Stderr() io.Reader { return p.errR }
func (p *fakeProc) Resize(rows, cols uint16) error {
	p.resizes <- [2]uint16{rows, cols}
	return nil
}
func (p *fakeProc) Wait() (int, int, error) { <-p.done; return p.code, p.sig, nil }
func (p *fakeProc) Close() error {
	p.closeOnce.Do(func() {
		p.stdinW.Close()
		p.outR.Close()
		p.errR.Close()
	})
	return nil
}

func execServer(t *testing.T) (*fakeExecer, *testCA, string) {
	ca := newTestCA(t)
	fx := newFakeExecer()
	srv := New(Config{NodeID: "n1", Logger: testLogger(t), Execer: fx})
	return fx, ca, serve(t, ca.node("n1", trust.RoleWorker), srv)
}

func startExec(ctx context.Context, t *testing.T, c shoalv1.AgentAPIClient, st *shoalv1.ExecStart) grpc.BidiStreamingClient[shoalv1.ExecRequest, shoalv1.ExecResponse] {
	t.Helper()
	s, err := c.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A call the server refuses at once may end before the start is sent:
	// Send then says io.EOF and Recv (drainExec) gives the status.
	if err := s.Send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Start{Start: st}}); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return s
}

// drainExec reads an exec stream to its end.
func drainExec(s grpc.BidiStreamingClient[shoalv1.ExecRequest, shoalv1.ExecResponse]) (stdout, stderr string, exit *shoalv1.ExecExit, err error) {
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return stdout, stderr, exit, nil
		}
		if err != nil {
			return stdout, stderr, exit, err
		}
		if exit != nil {
			return stdout, stderr, exit, errors.New("a message after the exit")
		}
		stdout += string(r.GetStdout())
		stderr += string(r.GetStderr())
		if r.GetExit() != nil {
			exit = r.GetExit()
		}
	}
}

// TestExecRelay: stdin reaches the process, stdout and stderr come back
// apart, a resize is passed on, and the exit code comes last.
func TestExecRelay(t *testing.T) {
	fx, ca, addr := execServer(t)
	c := client(t, addr, "n1", ca.nodeTLS("m1", trust.RoleManager))
	ctx := testCtx(t)

	s := startExec(ctx, t, c, &shoalv1.ExecStart{TaskId: "t1", Cmd: []string{"cat"}, Stdin: true, Tty: true, Size: &shoalv1.TerminalSize{Rows: 24, Cols: 80}})
	for _, m := range []*shoalv1.ExecRequest{
		{Msg: &shoalv1.ExecRequest_Stdin{Stdin: []byte("hello ")}},
		{Msg: &shoalv1.ExecRequest_Resize{Resize: &shoalv1.TerminalSize{Rows: 40, Cols: 100}}},
		{Msg: &shoalv1.ExecRequest_Stdin{Stdin: []byte("world")}},
		{Msg: &shoalv1.ExecRequest_CloseStdin{CloseStdin: true}},
	} {
		if err := s.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	stdout, _, exit, err := drainExec(s)
	if err != nil || stdout != "hello world" || exit.GetCode() != 0 {
		t.Fatalf("cat: stdout %q exit %v err %v", stdout, exit, err)
	}
	select {
	case r := <-fx.resizes:
		if r != [2]uint16{40, 100} {
			t.Errorf("resize %v, want 40x100", r)
		}
	case <-ctx.Done():
		t.Fatal("the resize did not reach the process")
	}

	s = startExec(ctx, t, c, &shoalv1.ExecStart{TaskId: "t1", Cmd: []string{"exit", "3"}})
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, exit, err := drainExec(s)
	if err != nil || stdout != "" || stderr != "bye\n" || exit.GetCode() != 3 || exit.GetSignal() != "" {
		t.Fatalf("exit 3: stdout %q stderr %q exit %v err %v", stdout, stderr, exit, err)
	}
}

// TestExecRefused: workers may not exec; a bad start names its field; the
// execer's error classes reach the caller; more than MaxExecsPerTask at
// once in one task are refused.
func TestExecRefused(t *testing.T) {
	_, ca, addr := execServer(t)
	ctx := testCtx(t)
	worker := client(t, addr, "n1", ca.nodeTLS("w2", trust.RoleWorker))
	_, _, _, err := drainExec(startExec(ctx, t, worker, &shoalv1.ExecStart{TaskId: "t1", Cmd: []string{"cat"}}))
	wantCode(t, err, codes.PermissionDenied, "")

	c := client(t, addr, "n1", ca.nodeTLS("m1", trust.RoleManager))
	for _, tc := range []struct {
		start *shoalv1.ExecStart
		code  codes.Code
		msg   string
	}{
		{&shoalv1.ExecStart{TaskId: "t1"}, codes.InvalidArgument, "start.cmd"},
		{&shoalv1.ExecStart{TaskId: "t1", Cmd: []string{"cat"}, Env: []string{"NOVALUE"}}, codes.InvalidArgument, "start.env[0]"},
		{&shoalv1.ExecStart{TaskId: "t1", Cmd: []string{"cat"}, Workdir: "tmp"}, codes.InvalidArgument, "start.workdir"},
		{&shoalv1.ExecStart{TaskId: "../x", Cmd: []string{"cat"}}, codes.InvalidArgument, "start.task_id"},
		{&shoalv1.ExecStart{TaskId: "t1", Cmd: []string{strings.Repeat("a", MaxExecArgvBytes)}}, codes.InvalidArgument, "bytes"},
		{&shoalv1.ExecStart{TaskId: "gone", Cmd: []string{"cat"}}, codes.NotFound, "not on this node"},
		{&shoalv1.ExecStart{TaskId: "stopped", Cmd: []string{"cat"}}, codes.FailedPrecondition, "not running"},
	} {
		_, _, _, err := drainExec(startExec(ctx, t, c, tc.start))
		wantCode(t, err, tc.code, tc.msg)
	}

	var open []grpc.BidiStreamingClient[shoalv1.ExecRequest, shoalv1.ExecResponse]
	for range MaxExecsPerTask {
		s := startExec(ctx, t, c, &shoalv1.ExecStart{TaskId: "busy", Cmd: []string{"cat"}, Stdin: true})
		// An echo proves it started (and holds its slot).
		if err := s.Send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Stdin{Stdin: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
		if r, err := s.Recv(); err != nil || string(r.GetStdout()) != "x" {
			t.Fatalf("exec %d: %v %v", len(open), r, err)
		}
		open = append(open, s)
	}
	_, _, _, err = drainExec(startExec(ctx, t, c, &shoalv1.ExecStart{TaskId: "busy", Cmd: []string{"cat"}}))
	wantCode(t, err, codes.ResourceExhausted, "16 execs")
	for _, s := range open {
		_ = s.Send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_CloseStdin{CloseStdin: true}})
		if _, _, exit, err := drainExec(s); err != nil || exit.GetCode() != 0 {
			t.Fatalf("closing: exit %v err %v", exit, err)
		}
	}
}

// TestExecCallerGone: a caller that hangs up has its process killed.
func TestExecCallerGone(t *testing.T) {
	fx, ca, addr := execServer(t)
	c := client(t, addr, "n1", ca.nodeTLS("m1", trust.RoleManager))
	ctx, cancel := context.WithCancel(testCtx(t))
	s := startExec(ctx, t, c, &shoalv1.ExecStart{TaskId: "t9", Cmd: []string{"hang"}})
	if _, err := s.Header(); err != nil {
		t.Fatal(err)
	}
	// Only once the process runs does hanging up mean killing it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		fx.mu.Lock()
		n := len(fx.starts)
		fx.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the exec never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case id := <-fx.killed:
		if id != "t9" {
			t.Fatalf("killed %q", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the process of a caller that hung up was not killed")
	}
}
