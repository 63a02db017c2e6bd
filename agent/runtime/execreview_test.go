package runtime

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestExecSameAsInit: an exec'd process (pipes or a terminal) holds its
// stdio and nothing else of ours (no socket, memfd, pipe or file beyond
// fds 0-2: the probe's own Go runtime adds an epoll and an eventfd), and
// has the task's init's identity and confinement: uid/gid/groups,
// capability sets, seccomp, no-new-privileges, cgroups, LSM label. The
// helper's argv holds no argument or environment of the exec.
func TestExecSameAsInit(t *testing.T) {
	rt := newRuntime(t)
	spec, _ := start(t, rt, Spec{Args: []string{"/bin/probe", "sleep"}, User: "app"})
	st := running(t, rt, spec.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tty := range []bool{false, true} {
		p, err := rt.ExecInteractive(ctx, spec.ID, ExecOptions{Args: []string{"/bin/probe", "sleep", "SECRET_ARG"},
			Env: []string{"EXEC_SECRET=s3"}, Stdin: true, TTY: tty})
		if err != nil {
			t.Fatal(err)
		}
		if !tty {
			collect(p.Stdout) // drains
		}
		pid := p.Pid()
		// The pid is libcontainer's init until it execs the probe (with
		// its privileges until then), and the probe's Go runtime opens
		// its epoll fds as it starts: poll until both happened, so that
		// what is compared is the process the command runs as.
		fdDir := fmt.Sprintf("/proc/%d/fd", pid)
		deadline := time.Now().Add(20 * time.Second)
		var links map[string]string
		for {
			links = map[string]string{}
			ents, _ := os.ReadDir(fdDir)
			for _, e := range ents {
				l, _ := os.Readlink(fdDir + "/" + e.Name())
				links[e.Name()] = l
			}
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			if exe == "/bin/probe" && strings.Contains(fmt.Sprint(links), "eventpoll") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("tty=%v: the exec'd process never ran the probe (exe %q, fds %v)", tty, exe, links)
			}
			time.Sleep(10 * time.Millisecond) // poll interval
		}
		for fd, l := range links {
			switch {
			case fd == "0" || fd == "1" || fd == "2":
				if tty && !strings.HasPrefix(l, "/dev/pts/") || !tty && !strings.HasPrefix(l, "pipe:") {
					t.Errorf("tty=%v: fd %s is %s", tty, fd, l)
				}
			case l == "anon_inode:[eventpoll]" || l == "anon_inode:[eventfd]" || l == "anon_inode:[pidfd]":
			default:
				t.Errorf("tty=%v: the exec'd process holds fd %s -> %s", tty, fd, l)
			}
		}
		for _, k := range []string{"Uid", "Gid", "Groups", "CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb", "Seccomp", "Seccomp_filters", "NoNewPrivs"} {
			if a, b := procStatus(t, st.Pid, k), procStatus(t, pid, k); a != b {
				t.Errorf("tty=%v: %s: init %q, exec %q", tty, k, a, b)
			}
		}
		for _, f := range []string{"cgroup", "attr/current"} {
			a, _ := os.ReadFile(fmt.Sprintf("/proc/%d/%s", st.Pid, f))
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
			if string(a) != string(b) {
				t.Errorf("tty=%v: %s: init %q, exec %q", tty, f, a, b)
			}
		}
		helper := procStatus(t, pid, "PPid")
		cl, _ := os.ReadFile("/proc/" + helper + "/cmdline")
		if string(cl) != ShimBinaryName+"\x00"+ExecVerb+"\x00" {
			t.Errorf("the helper's argv is %q", cl)
		}
		env, _ := os.ReadFile("/proc/" + helper + "/environ")
		if strings.Contains(string(env), "EXEC_SECRET") {
			t.Errorf("the helper's environment holds the exec's")
		}
		p.Close()
		_, _, _ = p.Wait()
	}
}
