package tinyinit

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary runs Main itself when this is set (as a subreaper, not
// PID 1: what it does with signals and exit codes is the same).
const asInit = "SHOAL_TINYINIT_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asInit) == "1" {
		os.Exit(Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// initCmd runs the init over args.
func initCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"--"}, args...)...)
	cmd.Env = append(os.Environ(), asInit+"=1")
	return cmd
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if err == nil {
		return 0
	}
	if !errors.As(err, &ee) {
		t.Fatalf("running the init: %v", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
		t.Fatalf("the init itself was killed by %v", ws.Signal())
	}
	return ee.ExitCode()
}

// TestExitCodes: the child's code; 128+n when signal n killed it; 127 for
// a command that does not exist, by PATH or by path.
func TestExitCodes(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on this host")
	}
	for _, tt := range []struct {
		name string
		args []string
		want int
	}{
		{"exit code", []string{sh, "-c", "exit 7"}, 7},
		{"killed by a signal", []string{sh, "-c", "kill -KILL $$"}, 128 + 9},
		{"not in PATH", []string{"shoal-no-such-command"}, 127},
		{"no such path", []string{"/nonexistent/shoal-no-such-command"}, 127},
		{"not executable", []string{"/etc/hostname"}, 126},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := initCmd(t, tt.args...).CombinedOutput()
			if got := exitCode(t, err); got != tt.want {
				t.Fatalf("exit code %d, want %d (output %q)", got, tt.want, out)
			}
		})
	}
}

// TestForwardsStopSignal: a SIGTERM to the init reaches its child (here a
// sleep, which has no handler) and the init exits with the child's 143.
func TestForwardsStopSignal(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on this host")
	}
	cmd := initCmd(t, sh, "-c", "echo ready; exec sleep 600")
	// Its own process group, which the child shares: a failed test kills
	// both.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	defer func() {
		if !done {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
		}
	}()
	// The child exists, so the init's handlers are installed.
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("child said %q (%v)", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		done = true
		if got := exitCode(t, err); got != 128+int(syscall.SIGTERM) {
			t.Fatalf("exit code %d, want 143 (the child's SIGTERM)", got)
		}
	case <-time.After(30 * time.Second): // a deadline, far past any start
		t.Fatal("the init did not end after SIGTERM: not forwarded to the child")
	}
}
