package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// exitError makes the CLI exit with a code of its own and print nothing
// more (the exec'd command's exit code).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// localTerminal is the operator's terminal as exec uses it; tests replace
// execTerm.
type localTerminal interface {
	// IsTerminal says whether stdin is a terminal.
	IsTerminal() bool
	// MakeRaw puts it in raw mode and returns how to restore it.
	MakeRaw() (restore func() error, err error)
	// Size is the terminal's size (of stdout, else stdin).
	Size() (rows, cols uint16, err error)
	// Resizes signals a change of size (SIGWINCH) until stop.
	Resizes() (ch <-chan os.Signal, stop func())
}

var (
	execTerm  localTerminal = osTerminal{}
	execStdin io.Reader     = os.Stdin
)

type osTerminal struct{}

func (osTerminal) IsTerminal() bool {
	_, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS)
	return err == nil
}

// MakeRaw is cfmakeraw, as golang.org/x/term does it.
func (osTerminal) MakeRaw() (func() error, error) {
	fd := int(os.Stdin.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() error { return unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

func (osTerminal) Size() (uint16, uint16, error) {
	for _, f := range []*os.File{os.Stdout, os.Stdin} {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil {
			return ws.Row, ws.Col, nil
		}
	}
	return 0, 0, errors.New("no terminal")
}

func (osTerminal) Resizes() (<-chan os.Signal, func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	return ch, func() { signal.Stop(ch) }
}

type execFlags struct {
	stdin, tty   bool
	env          []string
	user, workdr string
}

func (a *app) taskExecCmd() *cobra.Command {
	var f execFlags
	c := &cobra.Command{
		Use:   "exec [-i] [-t] [-e K=V] [-u USER] [-w DIR] TASK -- CMD [ARG...]",
		Short: "Run a command inside a running task's container",
		Long: `Run a command inside a running task's container (its namespaces, cgroup,
capabilities, user, environment and working directory), through a manager
to the task's node. -i forwards stdin; -t gives the command a terminal
(the local terminal goes raw and its size follows). The exit code is the
command's. Every exec is recorded in the managers' audit log.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.taskExec(cmd.Context(), f, args[0], args[1:])
		},
	}
	// Flags after TASK belong to the command: `exec web.1 ls -l`.
	c.Flags().SetInterspersed(false)
	c.Flags().BoolVarP(&f.stdin, "interactive", "i", false, "forward stdin")
	c.Flags().BoolVarP(&f.tty, "tty", "t", false, "allocate a terminal")
	c.Flags().StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable (KEY=VALUE; repeat)")
	c.Flags().StringVarP(&f.user, "user", "u", "", "user (name, uid or uid:gid; default the task's)")
	c.Flags().StringVarP(&f.workdr, "workdir", "w", "", "working directory (default the task's)")
	return c
}

func (f execFlags) start(task string, argv []string) (*shoalv1.ExecStart, error) {
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("a command is required: shoal task exec TASK -- CMD [ARG...]")
	}
	for _, e := range f.env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return nil, fmt.Errorf("--env %q: want KEY=VALUE", e)
		}
	}
	if f.workdr != "" && !strings.HasPrefix(f.workdr, "/") {
		return nil, fmt.Errorf("--workdir %q: must be absolute", f.workdr)
	}
	return &shoalv1.ExecStart{TaskId: task, Cmd: argv, Tty: f.tty, Stdin: f.stdin, Env: f.env, User: f.user, Workdir: f.workdr}, nil
}

// taskExec runs the exec and returns exitError with the command's code
// when it is not 0.
func (a *app) taskExec(ctx context.Context, f execFlags, task string, argv []string) (err error) {
	start, err := f.start(task, argv)
	if err != nil {
		return err
	}
	raw := f.tty && execTerm.IsTerminal()
	if raw {
		if rows, cols, err := execTerm.Size(); err == nil {
			start.Size = &shoalv1.TerminalSize{Rows: uint32(rows), Cols: uint32(cols)}
		}
	}
	cl, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := shoalv1.NewOpsClient(cl.Conn()).TaskExec(ctx)
	if err != nil {
		return err
	}
	// One sender at a time: stdin and resizes come from two goroutines.
	var sendMu sync.Mutex
	send := func(r *shoalv1.ExecRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(r)
	}
	if err := send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Start{Start: start}}); err != nil {
		return recvErr(stream, err)
	}
	if raw {
		restore, err := execTerm.MakeRaw()
		if err != nil {
			return fmt.Errorf("terminal: %w", err)
		}
		defer restore()
		sigs, stop := execTerm.Resizes()
		defer stop()
		go func() {
			for {
				select {
				case <-sigs:
					if rows, cols, err := execTerm.Size(); err == nil {
						_ = send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Resize{Resize: &shoalv1.TerminalSize{Rows: uint32(rows), Cols: uint32(cols)}}})
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	if f.stdin {
		go func() {
			b := make([]byte, 32<<10)
			for {
				n, err := execStdin.Read(b)
				if n > 0 {
					if send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Stdin{Stdin: append([]byte(nil), b[:n]...)}}) != nil {
						return
					}
				}
				if err != nil {
					_ = send(&shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_CloseStdin{CloseStdin: true}})
					return
				}
			}
		}()
	}
	var exit *shoalv1.ExecExit
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		switch m := resp.GetMsg().(type) {
		case *shoalv1.ExecResponse_Stdout:
			if _, err := a.out.Write(m.Stdout); err != nil {
				return err
			}
		case *shoalv1.ExecResponse_Stderr:
			if _, err := a.errOut.Write(m.Stderr); err != nil {
				return err
			}
		case *shoalv1.ExecResponse_Exit:
			exit = m.Exit
		}
	}
	if exit == nil {
		return errors.New("the exec ended without an exit status")
	}
	if exit.GetCode() != 0 {
		return exitError{int(exit.GetCode())}
	}
	return nil
}

// recvErr prefers the server's reason (Recv) over a failed Send's EOF.
func recvErr(stream interface {
	Recv() (*shoalv1.ExecResponse, error)
}, err error) error {
	if _, rerr := stream.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
		return rerr
	}
	return err
}
