// Package tinyinit is the init a task runs as its container's PID 1 when
// its spec asks for one (shoal service create --init): it starts the real
// command as its only child, forwards every signal it gets to that child,
// reaps every process that ends up its child (orphans are re-parented to
// PID 1, and a PID 1 that never waits leaves them as zombies), and exits
// with the child's status (128+n when a signal n killed it), like docker's
// tini.
//
// Why a container needs it: the kernel delivers to a PID namespace's init
// only the signals it has a handler for, so a PID 1 that installs none
// (a shell, python, most C programs) ignores the stop signal and every stop
// waits out the grace period before SIGKILL. As PID 2 the same program
// gets the default action and stops at once.
//
// It is built as its own static program (cmd/shoal-init, no cgo) because
// the shoal binary links libc and libseccomp dynamically and so cannot run
// in an arbitrary image; the runtime bind-mounts it read-only at /dev/init
// (see agent/runtime). Keep it small: it imports nothing of shoal.
package tinyinit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// prSetChildSubreaper is prctl's PR_SET_CHILD_SUBREAPER.
const prSetChildSubreaper = 36

// Main runs "[--] command [args...]" and returns the exit code for the
// init itself.
func Main(args []string) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "shoal-init: usage: shoal-init [--] command [args...]")
		return 2
	}
	if os.Getpid() != 1 {
		// Not PID 1 (someone ran it by hand): orphans still come to us.
		syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	}
	// Before the child exists, so that neither its end (SIGCHLD) nor a
	// stop signal can come unseen.
	sigs := make(chan os.Signal, 128)
	signal.Notify(sigs)
	path, ok := lookPath(args[0])
	if !ok {
		fmt.Fprintf(os.Stderr, "shoal-init: %q: not found\n", args[0])
		return 127
	}
	child, err := os.StartProcess(path, args, &os.ProcAttr{
		Env:   os.Environ(),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "shoal-init: %v\n", err)
		if errors.Is(err, fs.ErrNotExist) {
			return 127 // as for a command not in PATH, and as a shell says
		}
		return 126
	}
	pid := child.Pid
	for sig := range sigs {
		switch sig {
		case syscall.SIGCHLD:
		case syscall.SIGURG:
			// Go's runtime preempts its own threads with SIGURG, so these
			// are (almost always) ours, not meant for the child.
		default:
			if s, ok := sig.(syscall.Signal); ok {
				syscall.Kill(pid, s)
			}
		}
		// Reap after every signal, not only SIGCHLD: a SIGCHLD can be
		// dropped when the channel is full, never the reaping.
		if code, done := reap(pid); done {
			return code
		}
	}
	return 0 // not reached: sigs is never closed
}

// reap collects every child that has ended and, if one of them is pid,
// returns the exit code it stands for.
func reap(pid int) (int, bool) {
	for {
		var ws syscall.WaitStatus
		p, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if p <= 0 || err != nil {
			return 0, false
		}
		if p != pid {
			continue // an orphan's zombie, now gone
		}
		switch {
		case ws.Exited():
			return ws.ExitStatus(), true
		case ws.Signaled():
			return 128 + int(ws.Signal()), true
		}
	}
}

// lookPath finds cmd as execve would after a shell's PATH search (not
// os/exec's, which would double the size of this program).
func lookPath(cmd string) (string, bool) {
	if strings.Contains(cmd, "/") {
		return cmd, true // the kernel judges it
	}
	path, ok := os.LookupEnv("PATH")
	if !ok {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + cmd
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}
