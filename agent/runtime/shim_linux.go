package runtime

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	// We run from it; /proc/self/exe keeps it alive.
	unix.Close(shimExeFd)
	// Executed as /proc/self/fd/4, we would be "4" in ps.
	_ = os.WriteFile("/proc/self/comm", []byte(ShimBinaryName), 0)
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
	var cgroups []string
	if st, err := c.State(); err == nil {
		for _, p := range st.CgroupPaths {
			cgroups = append(cgroups, p)
		}
	}
	logf.Close()
	// Become the C supervisor (supervisor/supervise_linux.c): same pid,
	// so the container stays our child and shim.json stays true; what
	// stays alive for the task's life is a few pages of C, not this Go
	// process. It tells the agent the task runs, copies the output into
	// the log, waits and records the exit.
	args := superviseArgs{
		TaskDir: dir, ContainerState: filepath.Join(dir, id), LogPath: sd.LogPath,
		LogMaxBytes: logf.maxBytes, LogMaxFiles: logf.maxFiles,
		Stdout: int(outR.Fd()), Stderr: int(errR.Fd()), Pid: pid, Ready: shimConnFd,
		MemCgroup: sh.MemCgroup, Cgroups: cgroups,
	}
	err = execSupervisor("/proc/self/exe", args)
	// Still here: the exec failed, and the container must not run
	// unsupervised.
	_ = p.Signal(syscall.SIGKILL)
	_, _ = p.Wait()
	_ = c.Destroy()
	return fail(fmt.Errorf("start the supervisor: %w", err))
}

// superviseVerb is argv[1] of the supervisor (supervisor.Verb: this
// package does not import the C).
const superviseVerb = "__shoal-supervise"

// superviseArgs is what the C supervisor is told, in its argv.
type superviseArgs struct {
	TaskDir        string // exit.json goes there
	ContainerState string // libcontainer's state dir, removed after the exit
	LogPath        string
	LogMaxBytes    int64
	LogMaxFiles    int
	Stdout, Stderr int // read ends of the container's output pipes
	Pid            int // the container's init, our child
	Ready          int // the agent's socket, told {} once supervised; -1: none
	MemCgroup      string
	Cgroups        []string // removed after the exit
}

// argv is the supervisor's command line (see supervise_linux.c).
func (a superviseArgs) argv() []string {
	argv := []string{ShimBinaryName, superviseVerb, a.TaskDir, a.ContainerState, a.LogPath,
		strconv.FormatInt(a.LogMaxBytes, 10), strconv.Itoa(a.LogMaxFiles),
		strconv.Itoa(a.Stdout), strconv.Itoa(a.Stderr), strconv.Itoa(a.Pid), strconv.Itoa(a.Ready),
		a.MemCgroup}
	seen := map[string]bool{}
	for _, c := range a.Cgroups {
		if c != "" && !seen[c] {
			seen[c] = true
			argv = append(argv, c)
		}
	}
	return argv
}

// execSupervisor replaces this process with the supervisor linked into
// exe (the shim's own binary); it returns only on failure. The fds it is
// given must survive the exec.
func execSupervisor(exe string, a superviseArgs) error {
	for _, fd := range []int{a.Stdout, a.Stderr, a.Ready} {
		if fd < 0 {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("fd %d: %w", fd, err)
		}
	}
	return syscall.Exec(exe, a.argv(), nil)
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
