package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// runShim is the shim process: announce itself on fd 3 and wait there
// for its task id (see spawn_linux.go), create and start the container,
// report on fd 3, copy the container's output into the log, wait, record
// the exit. The return value is the shim's exit code (the container's is
// in exit.json).
func runShim(root string) int {
	conn := os.NewFile(shimConnFd, "agent")
	// Not for the container's init (libcontainer would close it anyway).
	unix.CloseOnExec(shimConnFd)
	if _, err := conn.Write([]byte(`{"up":true}`)); err != nil {
		return 1 // the agent is gone already
	}
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil || n == 0 {
		return 0 // dismissed: Close, or the agent went away
	}
	id := string(buf[:n])
	ready := conn
	dir := filepath.Join(root, id)
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "shim %s: %v\n", id, err)
		b, _ := json.Marshal(readyMsg{Error: err.Error()})
		if ready != nil {
			ready.Write(b)
			ready.Close()
		}
		return 1
	}
	if !validID(id) {
		return fail(fmt.Errorf("bad task id %q", id))
	}
	// From now on the shim's own messages go to the task's shim.log.
	if err := redirectOutput(filepath.Join(dir, shimLog)); err != nil {
		return fail(err)
	}
	shimStart, _, err := procStat(os.Getpid())
	if err != nil {
		return fail(err)
	}
	sh := shimOnDisk{ShimPid: os.Getpid(), ShimStart: shimStart}
	if err := writeJSON(filepath.Join(dir, shimFile), sh); err != nil {
		return fail(err)
	}
	var sd specOnDisk
	if err := readJSON(filepath.Join(dir, specFile), &sd); err != nil {
		return fail(err)
	}
	spec := sd.Spec
	cfg, err := libcontainerConfig(&spec, sd.CgroupParent, sd.InitBinary)
	if err != nil {
		return fail(err)
	}
	u, err := resolveUser(spec.Rootfs, spec.User)
	if err != nil {
		return fail(err)
	}
	logf, err := openLogFile(sd.LogPath, spec.Log)
	if err != nil {
		return fail(fmt.Errorf("log file: %w", err))
	}
	defer logf.Close()

	c, err := libcontainer.Create(dir, id, cfg)
	if err != nil {
		return fail(fmt.Errorf("create container: %w", err))
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		_ = c.Destroy()
		return fail(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		_ = c.Destroy()
		return fail(err)
	}
	cwd := spec.Cwd
	if cwd == "" {
		cwd = "/"
	}
	nnp := true
	p := &libcontainer.Process{
		Args:             processArgs(&spec),
		Env:              containerEnv(spec.Env, u.Home),
		Cwd:              cwd,
		UID:              u.Uid,
		GID:              u.Gid,
		AdditionalGroups: u.Sgids,
		Stdout:           outW,
		Stderr:           errW,
		NoNewPrivileges:  &nnp,
		Init:             true,
	}
	if err := c.Run(p); err != nil {
		_ = c.Destroy()
		return fail(fmt.Errorf("start container: %w", err))
	}
	// Only the container keeps the write ends, so EOF means it is gone.
	outW.Close()
	errW.Close()
	pid, err := p.Pid()
	if err != nil {
		_ = p.Signal(syscall.SIGKILL)
		_ = c.Destroy()
		return fail(err)
	}
	sh.Pid = pid
	sh.PidStart, _, _ = procStat(pid)
	sh.StartedAt = time.Now().UTC()
	if st, err := c.State(); err == nil {
		sh.MemCgroup = st.CgroupPaths["memory"]
	}
	if err := writeJSON(filepath.Join(dir, shimFile), sh); err != nil {
		_ = p.Signal(syscall.SIGKILL)
		_, _ = p.Wait()
		_ = c.Destroy()
		return fail(err)
	}
	ready.Write([]byte(`{}`))
	ready.Close()
	ready = nil

	var wg sync.WaitGroup
	for _, s := range []struct {
		name string
		r    *os.File
	}{{"stdout", outR}, {"stderr", errR}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := logf.copyLines(s.name, s.r); err != nil {
				fmt.Fprintf(os.Stderr, "shim %s: %s: %v\n", id, s.name, err)
			}
		}()
	}

	ps, werr := p.Wait()
	ex := ExitStatus{FinishedAt: time.Now().UTC()}
	if ps == nil {
		var ee *exec.ExitError
		if errors.As(werr, &ee) {
			ps = ee.ProcessState
		}
	}
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ex.Signal = int(ws.Signal())
			ex.Code = 128 + ex.Signal
		} else {
			ex.Code = ps.ExitCode()
		}
	} else {
		ex.Code = 255
		ex.Error = fmt.Sprintf("wait: %v", werr)
	}
	ex.OOMKilled = oomKilled(sh.MemCgroup, ex.Signal == int(syscall.SIGKILL))
	// The container is over: free its cgroups and libcontainer's state
	// now rather than at Remove, which may come much later (an agent keeps
	// exited tasks around). Remove still cleans up if this fails.
	if err := c.Destroy(); err != nil {
		fmt.Fprintf(os.Stderr, "shim %s: destroy: %v\n", id, err)
	}

	// In its own pid namespace every other process died with init, so the
	// pipes reach EOF; wait a little for the last lines all the same.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	if err := writeJSON(filepath.Join(dir, exitFile), ex); err != nil {
		fmt.Fprintf(os.Stderr, "shim %s: write exit: %v\n", id, err)
		return 1
	}
	return 0
}

// redirectOutput points fds 1 and 2 at path (appending).
func redirectOutput(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, fd := range []int{1, 2} {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			return err
		}
	}
	return nil
}

// containerEnv adds PATH and HOME unless the task set them.
func containerEnv(env []string, home string) []string {
	out := append([]string(nil), env...)
	has := func(k string) bool {
		for _, e := range env {
			if strings.HasPrefix(e, k+"=") {
				return true
			}
		}
		return false
	}
	if !has("PATH") {
		out = append(out, defaultPath)
	}
	if !has("HOME") && home != "" {
		out = append(out, "HOME="+home)
	}
	return out
}

// oomKilled reads the v1 memory cgroup: memory.oom_control's oom_kill
// counter (kernel ≥ 4.13); failing that, a SIGKILL with a non-zero
// memory.failcnt is taken as an OOM kill.
func oomKilled(memCgroup string, sigkill bool) bool {
	if memCgroup == "" {
		return false
	}
	if b, err := os.ReadFile(filepath.Join(memCgroup, "memory.oom_control")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" {
				n, _ := strconv.Atoi(f[1])
				return n > 0
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(memCgroup, "memory.events")); err == nil { // v2
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" {
				n, _ := strconv.Atoi(f[1])
				return n > 0
			}
		}
	}
	if !sigkill {
		return false
	}
	b, err := os.ReadFile(filepath.Join(memCgroup, "memory.failcnt"))
	if err != nil {
		return false
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n > 0
}
