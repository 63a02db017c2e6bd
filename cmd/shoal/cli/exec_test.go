package cli

import (
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// fakeOps answers TaskExec with handle.
type fakeOps struct {
	shoalv1.UnimplementedOpsServer
	handle func(start *shoalv1.ExecStart, s shoalv1.Ops_TaskExecServer) error
}

func (f *fakeOps) TaskExec(s shoalv1.Ops_TaskExecServer) error {
	first, err := s.Recv()
	if err != nil {
		return err
	}
	return f.handle(first.GetStart(), s)
}

// fakeTerm is a local terminal whose mode changes are recorded.
type fakeTerm struct {
	mu         sync.Mutex
	isTerm     bool
	rows, cols uint16
	events     []string
	sigs       chan os.Signal
}

func (f *fakeTerm) IsTerminal() bool { return f.isTerm }
func (f *fakeTerm) MakeRaw() (func() error, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, "raw")
	return func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.events = append(f.events, "restored")
		return nil
	}, nil
}
func (f *fakeTerm) Size() (uint16, uint16, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rows, f.cols, nil
}
func (f *fakeTerm) Resizes() (<-chan os.Signal, func()) {
	return f.sigs, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.events = append(f.events, "signals stopped")
	}
}

func (f *fakeTerm) resize(rows, cols uint16) {
	f.mu.Lock()
	f.rows, f.cols = rows, cols
	f.mu.Unlock()
	f.sigs <- syscall.SIGWINCH
}

func execCLI(t *testing.T, ops *fakeOps, term *fakeTerm, stdin string) *cliCluster {
	t.Helper()
	c := newCLICluster(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(c.nodeCerts("m1", trust.RoleManager).ServerTLSConfig())),
		grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor()))
	shoalv1.RegisterOpsServer(g, ops)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	c.addr = ln.Addr().String()
	oldTerm, oldIn := execTerm, execStdin
	execTerm, execStdin = term, strings.NewReader(stdin)
	t.Cleanup(func() { execTerm, execStdin = oldTerm, oldIn })
	return c
}

// TestExecExitCode: output goes to stdout and stderr as sent, and the
// CLI exits with the command's code, printing no error of its own.
func TestExecExitCode(t *testing.T) {
	var got *shoalv1.ExecStart
	ops := &fakeOps{handle: func(st *shoalv1.ExecStart, s shoalv1.Ops_TaskExecServer) error {
		got = st
		_ = s.Send(&shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Stdout{Stdout: []byte("out\n")}})
		_ = s.Send(&shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Stderr{Stderr: []byte("err\n")}})
		return s.Send(&shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Exit{Exit: &shoalv1.ExecExit{Code: 3}}})
	}}
	term := &fakeTerm{isTerm: true, sigs: make(chan os.Signal, 1)}
	c := execCLI(t, ops, term, "")
	code, out, errOut := c.run("task", "exec", "-e", "A=1", "-u", "app", "-w", "/tmp", "web.1", "--", "sh", "-c", "exit 3")
	if code != 3 || out != "out\n" || errOut != "err\n" {
		t.Fatalf("exit %d stdout %q stderr %q", code, out, errOut)
	}
	want := &shoalv1.ExecStart{TaskId: "web.1", Cmd: []string{"sh", "-c", "exit 3"}, Env: []string{"A=1"}, User: "app", Workdir: "/tmp"}
	if !proto.Equal(got, want) {
		t.Errorf("start %v, want %v", got, want)
	}
	if len(term.events) != 0 {
		t.Errorf("without -t the terminal was touched: %v", term.events)
	}
	// The command's flags are its own, with or without "--".
	if code, _, errOut := c.run("task", "exec", "web.1", "ls", "-l"); code != 3 || !proto.Equal(got, &shoalv1.ExecStart{TaskId: "web.1", Cmd: []string{"ls", "-l"}}) {
		t.Errorf("exec without --: exit %d, start %v, stderr %q", code, got, errOut)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"task", "exec", "web.1"}, "requires at least 2 arg"},
		{[]string{"task", "exec", "web.1", "--"}, "a command is required"},
		{[]string{"task", "exec", "-e", "NOVALUE", "web.1", "true"}, `--env "NOVALUE"`},
		{[]string{"task", "exec", "-w", "rel", "web.1", "true"}, "--workdir"},
	} {
		if code, _, errOut := c.run(tc.args...); code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d stderr %q, want %q", tc.args, code, errOut, tc.want)
		}
	}

	ops.handle = func(*shoalv1.ExecStart, shoalv1.Ops_TaskExecServer) error {
		return errdefs.FailedPreconditionf(`task "t1" is complete, not running`)
	}
	if code, _, errOut := c.run("task", "exec", "t1", "true"); code != 1 || !strings.Contains(errOut, "Error: task \"t1\" is complete, not running") {
		t.Errorf("refused: exit %d stderr %q", code, errOut)
	}
}

// TestExecTTYAndStdin: with -t on a terminal the terminal goes raw for
// the exec and is restored after, the first size and every resize reach
// the server; with -i stdin is forwarded and then closed.
func TestExecTTYAndStdin(t *testing.T) {
	var mu sync.Mutex
	var got []*shoalv1.ExecRequest
	var start *shoalv1.ExecStart
	term := &fakeTerm{isTerm: true, rows: 30, cols: 90, sigs: make(chan os.Signal, 1)}
	ops := &fakeOps{handle: func(st *shoalv1.ExecStart, s shoalv1.Ops_TaskExecServer) error {
		start = st
		term.mu.Lock()
		raw := len(term.events) == 1 && term.events[0] == "raw"
		term.mu.Unlock()
		if !raw {
			return errors.New("the terminal is not raw during the exec")
		}
		term.resize(50, 120)
		for {
			r, err := s.Recv()
			if err != nil {
				return err
			}
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
			if r.GetResize() != nil {
				_ = s.Send(&shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Stdout{Stdout: []byte("resized\r\n")}})
			}
			if r.GetCloseStdin() {
				// Both arrive, in either order.
				mu.Lock()
				n := len(got)
				mu.Unlock()
				if n < 3 {
					continue
				}
				return s.Send(&shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Exit{Exit: &shoalv1.ExecExit{Code: 0}}})
			}
			if r.GetResize() != nil {
				mu.Lock()
				n := len(got)
				mu.Unlock()
				if n >= 3 {
					return s.Send(&shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Exit{Exit: &shoalv1.ExecExit{Code: 0}}})
				}
			}
		}
	}}
	c := execCLI(t, ops, term, "typed")
	code, out, errOut := c.run("task", "exec", "-it", "web.1", "--", "sh")
	if code != 0 || out != "resized\r\n" {
		t.Fatalf("exit %d stdout %q stderr %q", code, out, errOut)
	}
	if !start.GetTty() || !start.GetStdin() || start.GetSize().GetRows() != 30 || start.GetSize().GetCols() != 90 {
		t.Errorf("start %v: want tty, stdin, 30x90", start)
	}
	var stdin string
	var resized, closed bool
	for _, r := range got {
		stdin += string(r.GetStdin())
		if rs := r.GetResize(); rs != nil {
			resized = rs.GetRows() == 50 && rs.GetCols() == 120
		}
		closed = closed || r.GetCloseStdin()
	}
	if stdin != "typed" || !resized || !closed {
		t.Errorf("requests %v: want stdin %q, a resize to 50x120, close_stdin", got, "typed")
	}
	term.mu.Lock()
	events := strings.Join(term.events, ",")
	term.mu.Unlock()
	if events != "raw,signals stopped,restored" {
		t.Errorf("terminal events %q", events)
	}

	// -t when stdin is no terminal: a remote terminal, the local one
	// left alone.
	term.isTerm, term.events = false, nil
	ops.handle = func(st *shoalv1.ExecStart, s shoalv1.Ops_TaskExecServer) error {
		start = st
		return s.Send(&shoalv1.ExecResponse{Msg: &shoalv1.ExecResponse_Exit{Exit: &shoalv1.ExecExit{Code: 0}}})
	}
	if code, _, errOut := c.run("task", "exec", "-t", "web.1", "true"); code != 0 || !start.GetTty() || start.GetSize() != nil || len(term.events) != 0 {
		t.Errorf("-t without a terminal: exit %d, start %v, events %v, stderr %q", code, start, term.events, errOut)
	}
}
