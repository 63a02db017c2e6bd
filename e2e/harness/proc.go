package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// DefaultStopGrace is how long Stop waits after SIGTERM before SIGKILL.
const DefaultStopGrace = 10 * time.Second

// Proc is a process started in a host's namespace with Host.Start or
// Host.StartProgram.
type Proc struct {
	Host *Host
	// Args are the program's arguments (without the program).
	Args []string
	// LogPath receives the process's stdout and stderr.
	LogPath string
	// Started is when the process was started.
	Started time.Time

	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed once the process has been reaped
	err  error         // cmd.Wait's result; read only after done
}

func startProc(h *Host, logPath, prog string, args []string) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := h.nsCommand(context.Background(), prog, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so Kill reaches whatever it forks. Pdeathsig
	// (from nsCommand): it dies with the test binary (a test timeout, say),
	// so nothing of a crashed run keeps running; Sweep removes its
	// namespaces later.
	cmd.SysProcAttr.Setpgid = true
	p := &Proc{Host: h, Args: args, LogPath: logPath, cmd: cmd, log: logf, done: make(chan struct{})}
	fmt.Fprintf(logf, "### %s: nsenter --net=%s -- %s %q\n", time.Now().Format(time.RFC3339Nano), netnsPath(h.NS), prog, args)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p.Started = time.Now()
	go func() {
		p.err = cmd.Wait()
		fmt.Fprintf(logf, "### %s: exited: %v\n", time.Now().Format(time.RFC3339Nano), p.describeExit())
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *Proc) String() string {
	return fmt.Sprintf("%s pid %d %q", p.Host.Name, p.Pid(), p.Args)
}

// Pid is the process id (the program's own: nsenter execs in place).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode is the exit status once exited: -1 if killed by a signal or
// still running.
func (p *Proc) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *Proc) describeExit() string {
	if p.cmd.ProcessState == nil {
		return fmt.Sprint(p.err)
	}
	return p.cmd.ProcessState.String()
}

// Wait waits until the process exits or ctx ends and returns the exit
// error (nil for status 0, *exec.ExitError otherwise).
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s: %w", p, ctx.Err())
	}
}

// WaitExit waits up to timeout for the process to exit by itself and
// returns its exit code.
func (p *Proc) WaitExit(timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	select {
	case <-p.done:
		return p.ExitCode(), nil
	case <-ctx.Done():
		return -1, fmt.Errorf("%s still running after %v", p, timeout)
	}
}

// Signal sends sig to the process (not its group).
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	err := syscall.Kill(p.Pid(), sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Kill SIGKILLs the process and its process group — a crash, kill -9 —
// and waits until it has been reaped.
func (p *Proc) Kill() error {
	if p.Exited() {
		return nil
	}
	// The group id is the pid (Setpgid). ESRCH: it is already gone.
	if err := syscall.Kill(-p.Pid(), syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s: %w", p, err)
	}
	_ = syscall.Kill(p.Pid(), syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("%s did not exit within %v of SIGKILL", p, killWait)
	}
}

// Stop asks the process to exit (SIGTERM) and SIGKILLs it if it is still
// running after DefaultStopGrace.
func (p *Proc) Stop() error { return p.StopWithin(DefaultStopGrace) }

// StopWithin is Stop with the given grace period. It returns an error if
// the process had to be killed.
func (p *Proc) StopWithin(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	if err := p.Kill(); err != nil {
		return err
	}
	return fmt.Errorf("%s ignored SIGTERM for %v and was killed", p, grace)
}

// Output returns everything the process wrote so far, stdout and stderr
// interleaved (without the harness's "### " start and exit lines, which
// quote the arguments).
func (p *Proc) Output() string {
	b, _ := os.ReadFile(p.LogPath)
	var out strings.Builder
	for line := range strings.SplitAfterSeq(string(b), "\n") {
		if !strings.HasPrefix(line, harnessLinePrefix) {
			out.WriteString(line)
		}
	}
	return out.String()
}

// harnessLinePrefix starts the lines the harness itself writes to a log.
const harnessLinePrefix = "### "

// Tail returns the last n lines of the process's log.
func (p *Proc) Tail(n int) string {
	s, _ := TailFile(p.LogPath, n)
	return s
}

// Match returns the first match of re in the process's output so far, or
// an error saying it is not there (Permanent if the process has exited
// without printing it, so Poll/Eventually stop waiting).
func (p *Proc) Match(re *regexp.Regexp) ([]string, error) {
	exited := p.Exited() // read before the output: the exit line comes last
	if m := re.FindStringSubmatch(p.Output()); m != nil {
		return m, nil
	}
	err := fmt.Errorf("%s: no match for %q in its output yet", p, re)
	if exited {
		return nil, Permanent(fmt.Errorf("%s exited (%s) without printing %q; tail:\n%s", p, p.describeExit(), re, p.Tail(20)))
	}
	return nil, err
}

// CheckRunning returns a Permanent error if the process has exited: for
// use inside Poll/Eventually conditions that need it alive.
func (p *Proc) CheckRunning() error {
	if p.Exited() {
		return Permanent(fmt.Errorf("%s exited (%s); tail of its log:\n%s", p, p.describeExit(), p.Tail(30)))
	}
	return nil
}
