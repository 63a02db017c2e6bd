package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// ExecOutputMax is how much of an exec'd command's output Exec returns.
const ExecOutputMax = 4096

// Exec runs args inside task id's running container — its namespaces,
// cgroup, capabilities, user, environment and working directory, as
// `runc exec` does — and returns the exit code and the first
// ExecOutputMax bytes of its combined stdout and stderr. Health checks
// use it. When ctx ends first the command and every process it started
// that is still its descendant are killed and ctx.Err() is returned, with
// the output so far: a probe leaves nothing behind.
//
// The process runs through an exec helper (exechelper_linux.go): shoal-shim,
// not the agent's binary, is its init.
//
// The output goes to a memfd, not a pipe: a command that leaves a
// background child holding its stdout open still counts as done when it
// exits, and the memfd's pages are charged to the container's cgroup.
func (r *Libcontainer) Exec(ctx context.Context, id string, args []string) (int, []byte, error) {
	if !validID(id) {
		return -1, nil, fmt.Errorf("%w: task id %q", ErrInvalidArgument, id)
	}
	if len(args) == 0 {
		return -1, nil, fmt.Errorf("%w: task %q: exec without args", ErrInvalidArgument, id)
	}
	dir := r.dir(id)
	var sd specOnDisk
	if err := readJSON(filepath.Join(dir, specFile), &sd); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return -1, nil, fmt.Errorf("task %q: %w", id, ErrNotFound)
		}
		return -1, nil, fmt.Errorf("task %q: %w", id, err)
	}
	if _, err := libcontainer.Load(dir, id); err != nil {
		return -1, nil, fmt.Errorf("task %q: load: %w", id, err)
	}
	spec := sd.Spec
	u, err := resolveUser(spec.Rootfs, spec.User)
	if err != nil {
		return -1, nil, err
	}
	fd, err := unix.MemfdCreate("shoal-exec", unix.MFD_CLOEXEC)
	if err != nil {
		return -1, nil, fmt.Errorf("memfd: %w", err)
	}
	out := os.NewFile(uintptr(fd), "shoal-exec-output")
	defer out.Close()
	cwd := spec.Cwd
	if cwd == "" {
		cwd = "/"
	}
	h, err := r.startExecHelper(ctx, execRequest{
		Dir: dir, ID: id, Args: args, Env: containerEnv(spec.Env, u.Home), Cwd: cwd,
		UID: u.Uid, GID: u.Gid, AdditionalGroups: u.Sgids,
		Stdin: -1, Stdout: execHelperFirstFd, Stderr: execHelperFirstFd, ConsoleSocket: -1,
	}, []*os.File{out})
	if err != nil {
		return -1, nil, err
	}
	select {
	case <-h.done:
	case <-ctx.Done():
		h.kill()
		_, _, _ = h.wait()
		return -1, readHead(out), ctx.Err()
	}
	code, _, err := h.wait()
	if err != nil {
		return -1, readHead(out), fmt.Errorf("task %q: exec %q: %w", id, args[0], err)
	}
	return code, readHead(out), nil
}

func readHead(f *os.File) []byte {
	b := make([]byte, ExecOutputMax)
	n, _ := f.ReadAt(b, 0)
	return b[:n]
}

// killTree stops pid and its descendants (so that none forks while the
// tree is walked), then kills them all.
func killTree(pid int) {
	stopped := map[int]bool{}
	for range 10 { // until the tree stops growing
		grew := false
		for _, p := range append([]int{pid}, descendants(pid)...) {
			if !stopped[p] {
				_ = unix.Kill(p, unix.SIGSTOP)
				stopped[p] = true
				grew = true
			}
		}
		if !grew {
			break
		}
	}
	for p := range stopped {
		_ = unix.Kill(p, unix.SIGKILL)
	}
	// SIGKILL is delivered at once but a process takes a moment to die:
	// wait (boundedly) until none of them runs any more. A descendant left
	// a zombie is dead; whoever inherited it reaps it.
	deadline := time.Now().Add(5 * time.Second)
	for p := range stopped {
		for p != pid && time.Now().Before(deadline) {
			if _, state, err := procStat(p); err != nil || state == 'Z' || state == 'X' {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// descendants lists pid's descendants from /proc (parent links).
func descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}
