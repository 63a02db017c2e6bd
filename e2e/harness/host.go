package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/agent/runtime/hostclean"
)

// Host is one simulated machine: a network namespace with its own address
// on the fabric, a directory and the processes started in it.
type Host struct {
	// Name is the short name given to AddHost ("h1").
	Name string
	// NS is the network namespace ("shl-<fabric id>-<name>").
	NS string
	// IP is the host's address on the fabric (no port).
	IP string
	// Dir is the host's directory under the fabric's temp dir.
	Dir string
	// DataDir is the host's shoal data dir (inside Dir, created by shoal).
	DataDir string
	// Env adds K=V variables to the processes started in the host from
	// then on (a node's test hooks, say).
	Env []string

	f    *Fabric
	peer string // the bridge-side veth in the switch namespace

	mu     sync.Mutex // guards procs, seq and cliLog
	procs  []*Proc
	seq    int
	cliLog *os.File // lazily opened log of CLI invocations
}

// Fabric returns the fabric the host belongs to.
func (h *Host) Fabric() *Fabric { return h.f }

// Addr is the host's shoal API address, IP:4242.
func (h *Host) Addr() string { return h.IP + ":" + fmt.Sprint(APIPort) }

func (h *Host) String() string { return h.Name + "(" + h.IP + ")" }

// LinkDown sets the host's bridge-side veth down: the host is cut off from
// every other host (its own address and loopback still work). Established
// connections are not reset; their packets are dropped.
func (h *Host) LinkDown() error {
	_, err := ip(context.Background(), "-n", h.f.SwitchNS, "link", "set", h.peer, "down")
	return err
}

// LinkUp undoes LinkDown.
func (h *Host) LinkUp() error {
	_, err := ip(context.Background(), "-n", h.f.SwitchNS, "link", "set", h.peer, "up")
	return err
}

// Procs returns the processes started on the host, oldest first.
func (h *Host) Procs() []*Proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Proc(nil), h.procs...)
}

// Running returns the host's processes that have not exited.
func (h *Host) Running() []*Proc {
	var out []*Proc
	for _, p := range h.Procs() {
		if !p.Exited() {
			out = append(out, p)
		}
	}
	return out
}

// Crash models kill -9 of the host's shoal processes, not of the machine:
// every process the harness started on the host (Start, StartProgram) and
// its process group get SIGKILL and are reaped. What those processes left
// running in sessions of their own — per-task shims, spare shims and the
// containers — keeps running, as it does when an agent crashes. Restart
// uses it; PowerOff goes further.
func (h *Host) Crash() error {
	var errs []error
	for _, p := range h.Procs() {
		if err := p.Kill(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// PowerOff is a power cut: every process of the host dies by SIGKILL —
// the harness's processes, anything else in the host's namespace (shims)
// and every process in the host's cgroup parent (the containers) — and
// what a reboot would lose is gone: the mounts under the host's directory
// (container rootfs, task netns bind mounts), the host's cgroups, and its
// network interfaces other than lo and eth0 (bridge, veths). Then its link
// goes down. The data dir stays, as a disk does. PowerOn boots it again.
func (h *Host) PowerOff() error {
	errs := []error{h.Crash()}
	errs = append(errs, h.killVolatile()...)
	errs = append(errs, h.LinkDown())
	return errors.Join(errs...)
}

// killVolatile kills everything of the host that a power cut kills and
// removes what a reboot loses (see PowerOff); the fabric's cleanup uses it
// too. Harness processes must be dead already.
func (h *Host) killVolatile() []error {
	ctx := context.Background()
	var errs []error
	if netnsExists(h.NS) {
		if err := killNetns(ctx, h.NS); err != nil {
			errs = append(errs, err)
		}
	}
	if err := hostclean.KillCgroups(ctx, h.CgroupParent()); err != nil {
		errs = append(errs, err)
	}
	if err := hostclean.UnmountUnder(h.Dir); err != nil {
		errs = append(errs, err)
	}
	if err := hostclean.RemoveCgroups(ctx, h.CgroupParent()); err != nil {
		errs = append(errs, err)
	}
	if netnsExists(h.NS) {
		if err := deleteExtraLinks(ctx, h.NS); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// CgroupParent is the cgroup (the same path in every hierarchy) under which
// the host's nodes make their task cgroups: Init, Join and Daemon pass it
// as --cgroup-parent. One per host and fabric, so that the containers of a
// host can be found, killed and checked for.
func (h *Host) CgroupParent() string {
	return "/" + CgroupPrefix + h.f.ID + "-" + h.Name
}

// CgroupPids lists the processes in the host's cgroup parent and below, in
// every hierarchy (the containers the host's nodes started).
func (h *Host) CgroupPids() ([]int, error) { return hostclean.CgroupPids(h.CgroupParent()) }

// CgroupDirs lists the cgroup directories below the host's cgroup parent
// (not the parent itself), in every hierarchy: one per task and hierarchy
// while its container exists.
func (h *Host) CgroupDirs() ([]string, error) {
	dirs, err := hostclean.CgroupDirs(h.CgroupParent())
	var out []string
	for _, d := range dirs {
		if d.Depth > 0 {
			out = append(out, d.Path)
		}
	}
	return out, err
}

// Mounts lists the mount points below the host's directory (container
// rootfs overlays, task netns bind mounts, ...), from /proc/self/mountinfo.
func (h *Host) Mounts() ([]string, error) { return hostclean.MountsUnder(h.Dir) }

// StartProgram runs prog (a path or a name on PATH) with args inside the
// host's namespace, its stdout and stderr going to a new log file in the
// fabric's log dir. The process is SIGKILLed when the test binary dies
// (Pdeathsig) and by the fabric's cleanup.
func (h *Host) StartProgram(t testing.TB, prog string, args ...string) *Proc {
	t.Helper()
	p, err := h.startProgram(prog, args...)
	if err != nil {
		t.Fatalf("starting %s on %s: %v", prog, h, err)
	}
	return p
}

// Start runs the shoal binary (see Binary) with args inside the host's
// namespace.
func (h *Host) Start(t testing.TB, args ...string) *Proc {
	t.Helper()
	return h.StartProgram(t, Binary(t), args...)
}

func (h *Host) startProgram(prog string, args ...string) (*Proc, error) {
	h.mu.Lock()
	h.seq++
	seq := h.seq
	h.mu.Unlock()
	label := "proc"
	if len(args) > 0 {
		label = sanitize(args[0])
	}
	logPath := fmt.Sprintf("%s/%s-%02d-%s.log", h.f.LogDir(), h.Name, seq, label)
	p, err := startProc(h, logPath, prog, args)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p, nil
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "proc"
	}
	return b.String()
}

// nsCommand builds `nsenter --net=/run/netns/NS -- prog args...`.
// nsenter execs prog in place (no extra process), so the command's pid is
// prog's. Only the network namespace changes: unlike `ip netns exec`, which
// also remounts /sys (hiding /sys/fs/cgroup, without which no container can
// be made), the program shares the test's mount namespace — so what a node
// mounts is visible to the test, and the fabric's cleanup unmounts it. The
// environment is the test's minus SHOAL_* variables, which would otherwise
// redirect the CLI.
func (h *Host) nsCommand(ctx context.Context, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netnsPath(h.NS), "--", prog}, args...)...)
	cmd.Env = append(cleanEnv(), h.Env...)
	// Dies with the test binary, whatever kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SHOAL_") {
			env = append(env, kv)
		}
	}
	return env
}

// ExecError is a failed command run in a host: its exit code and output.
type ExecError struct {
	Args     []string
	ExitCode int // -1 when it did not exit normally (killed, timed out)
	Stdout   string
	Stderr   string
	Err      error
}

func (e *ExecError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = strings.TrimSpace(e.Stdout)
	}
	return fmt.Sprintf("%s: %v (exit %d): %s", strings.Join(e.Args, " "), e.Err, e.ExitCode, msg)
}

func (e *ExecError) Unwrap() error { return e.Err }

// Exec runs prog with args to completion inside the host's namespace and
// returns its stdout; a failure is an *ExecError carrying stderr.
func (h *Host) Exec(ctx context.Context, prog string, args ...string) (string, error) {
	out, _, err := h.ExecOutput(ctx, prog, args...)
	return out, err
}

// ExecOutput is Exec returning stderr too, also on success.
func (h *Host) ExecOutput(ctx context.Context, prog string, args ...string) (stdout, stderr string, err error) {
	cmd := h.nsCommand(ctx, prog, args...)
	cmd.WaitDelay = time.Second
	var outb, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &outb, &errb
	err = cmd.Run()
	if err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return outb.String(), errb.String(), &ExecError{Args: append([]string{prog}, args...), ExitCode: code,
			Stdout: outb.String(), Stderr: errb.String(), Err: err}
	}
	return outb.String(), errb.String(), nil
}

// Ping sends one ICMP echo from the host to ip and waits up to a second
// for the reply (iputils ping).
func (h *Host) Ping(ctx context.Context, ip string) error {
	_, err := h.Exec(ctx, "ping", "-n", "-c1", "-W1", ip)
	return err
}

// logCLI appends one CLI invocation and its outcome to the host's CLI log.
func (h *Host) logCLI(args []string, start time.Time, stdout, stderr string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cliLog == nil {
		f, ferr := os.OpenFile(fmt.Sprintf("%s/%s-cli.log", h.f.LogDir(), h.Name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if ferr != nil {
			return
		}
		h.cliLog = f
	}
	status := "ok"
	if err != nil {
		status = err.Error()
	}
	const max = 2000
	if len(stdout) > max {
		stdout = stdout[:max] + "...(truncated)"
	}
	fmt.Fprintf(h.cliLog, "%s [%v] shoal %s\n  -> %s\n", start.Format("15:04:05.000"), time.Since(start).Round(time.Millisecond),
		strings.Join(args, " "), status)
	if s := strings.TrimSpace(stdout); s != "" && err == nil {
		fmt.Fprintf(h.cliLog, "  stdout: %s\n", strings.ReplaceAll(s, "\n", "\n          "))
	}
	if len(stderr) > max {
		stderr = stderr[:max] + "...(truncated)"
	}
	if s := strings.TrimSpace(stderr); s != "" && err == nil {
		fmt.Fprintf(h.cliLog, "  stderr: %s\n", strings.ReplaceAll(s, "\n", "\n          "))
	}
}

func (h *Host) closeCLILog() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cliLog != nil {
		h.cliLog.Close()
		h.cliLog = nil
	}
}
