package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A shim is the shoal binary re-executed; its Go start-up (runtime and
// package initialisation of a large binary, ~20 ms on a small VM) was the
// biggest single cost of Start. So the runtime keeps one spare shim that
// has already started and waits for a task; Start hands it the task id
// and a new spare is spawned in the background. The spare is an ordinary
// shim in its own session with nothing of a task yet; it exits when told
// to (Close) or when the agent goes away (its end of the socket closes).
//
// Agent and shim talk over a SOCK_SEQPACKET socketpair, the shim's fd 3:
//
//	shim → agent  {"up":true}        started, waiting for a task
//	agent → shim  <task id>          one message
//	shim → agent  {} or {"error":…}  container started, or why not
//
// after which the shim closes it. A shim spawned for a task directly (no
// spare, or spares disabled) follows the same protocol.

// WithSpareShim turns the spare shim on (the default) or off. Off, every
// Start waits for a new shim's start-up; on, one idle shim process is kept
// per runtime (started after the first Start, or by Prepare).
func WithSpareShim(on bool) Option {
	return func(r *Libcontainer) error {
		r.noSpare = !on
		return nil
	}
}

// shimEnv is added to a shim's environment (see spawnShim).
var shimEnv = []string{"GOMAXPROCS=1", "GOGC=off"}

// shimConnFd is the shim's end of the socketpair.
const shimConnFd = 3

// shimProc is a shim we spawned and have not yet handed a task to.
type shimProc struct {
	cmd  *exec.Cmd
	conn *os.File      // our end of the socketpair
	msgs chan readyMsg // messages after "up"; closed on EOF
	up   chan struct{} // closed when the shim said it is up
	dead chan struct{} // closed once it has exited and been reaped
}

// spawnShim starts a shim process for r.root.
func (r *Libcontainer) spawnShim() (*shimProc, error) {
	exe, err := r.sealedShim()
	if err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	// Our end non-blocking, so that Go's poller waits on it instead of a
	// thread; the shim's end stays blocking.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, err
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "shim-conn"), os.NewFile(uintptr(fds[1]), "shim-conn")
	defer theirs.Close()
	cmd := exec.Command("/proc/self/fd/"+strconv.Itoa(shimExeFd), ShimVerb, r.root)
	cmd.Args[0] = ShimBinaryName
	cmd.Dir = "/"
	// One P and no GC: the shim does one thing at a time and lives
	// until it execs the supervisor, and libcontainer passes GOMAXPROCS
	// on to the container's init, which then starts fewer threads (each
	// one more to signal when the init changes its uid and gids).
	cmd.Env = append(os.Environ(), shimEnv...)
	// Stdout and stderr are /dev/null until the shim knows its task and
	// points them at the task's shim.log.
	cmd.ExtraFiles = []*os.File{theirs, exe} // fds 3 and 4: shimConnFd, shimExeFd
	// Own session: no signal from the agent's terminal or process group
	// reaches the shim, and it outlives the agent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		ours.Close()
		return nil, fmt.Errorf("start shim: %w", err)
	}
	s := &shimProc{cmd: cmd, conn: ours, msgs: make(chan readyMsg, 1), up: make(chan struct{}), dead: make(chan struct{})}
	// Reap the shim if it exits while we live, so that a dead shim is not
	// a zombie that still looks alive.
	go func() { _ = cmd.Wait(); close(s.dead) }()
	go s.readLoop()
	return s, nil
}

// readLoop turns the shim's messages into s.up and s.msgs.
func (s *shimProc) readLoop() {
	defer close(s.msgs)
	buf := make([]byte, 64<<10)
	upSeen := false
	for {
		n, err := s.conn.Read(buf)
		if err != nil || n == 0 {
			return
		}
		var m readyMsg
		if err := json.Unmarshal(buf[:n], &m); err != nil {
			m = readyMsg{Error: fmt.Sprintf("bad message from shim: %v", err)}
		}
		if m.Up && !upSeen {
			upSeen = true
			close(s.up)
			continue
		}
		s.msgs <- m
		return
	}
}

func (s *shimProc) isDead() bool {
	select {
	case <-s.dead:
		return true
	default:
		return false
	}
}

// dismiss ends a shim that has no task: closing our end tells it to
// exit; if it does not within a few seconds, it is killed.
func (s *shimProc) dismiss() {
	s.conn.Close()
	select {
	case <-s.dead:
		return
	case <-time.After(5 * time.Second):
	}
	_ = s.cmd.Process.Kill()
	<-s.dead
}

// takeSpare returns the spare shim if there is a live one.
func (r *Libcontainer) takeSpare() *shimProc {
	r.mu.Lock()
	s := r.spare
	r.spare = nil
	r.mu.Unlock()
	if s != nil && s.isDead() {
		s.conn.Close()
		return nil
	}
	return s
}

// refillSpare spawns a spare shim in the background unless there is one
// (or one is being made), spares are off, or the runtime is closed.
func (r *Libcontainer) refillSpare() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.noSpare || r.closed || r.spare != nil || r.refillDone != nil {
		return
	}
	done := make(chan struct{})
	r.refillDone = done
	go func() {
		defer close(done)
		s, err := r.spawnShim()
		r.mu.Lock()
		r.refillDone = nil
		if err != nil {
			r.mu.Unlock()
			r.log.Warn("could not start a spare shim", "err", err)
			return
		}
		if r.closed || r.spare != nil {
			r.mu.Unlock()
			s.dismiss()
			return
		}
		r.spare = s
		r.mu.Unlock()
	}()
}

// waitRefill waits for a background refill in flight, if any.
func (r *Libcontainer) waitRefill() {
	r.mu.Lock()
	d := r.refillDone
	r.mu.Unlock()
	if d != nil {
		<-d
	}
}

// errSpareDied: Prepare's spare exited before it was up.
var errSpareDied = errors.New("spare shim exited during start-up")

// Prepare makes sure a spare shim is up, so that the next Start does not
// pay for a shim's start-up; an agent may call it once when it starts.
// It returns at once if spares are off (WithSpareShim(false)).
func (r *Libcontainer) Prepare(ctx context.Context) error {
	r.waitRefill()
	r.mu.Lock()
	if r.noSpare || r.closed {
		r.mu.Unlock()
		return nil
	}
	if r.spare != nil && r.spare.isDead() {
		r.spare.conn.Close()
		r.spare = nil
	}
	if r.spare == nil {
		s, err := r.spawnShim() // one fork+exec: short enough to hold mu
		if err != nil {
			r.mu.Unlock()
			return err
		}
		r.spare = s
	}
	s := r.spare
	r.mu.Unlock()
	select {
	case <-s.up:
		return nil
	case <-s.dead:
		return errSpareDied
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close dismisses the spare shim and drops the sealed shim binary. Tasks and their shims are not touched:
// they outlive the runtime (and the agent) by design.
func (r *Libcontainer) Close() error {
	r.mu.Lock()
	r.closed = true
	s := r.spare
	r.spare = nil
	r.mu.Unlock()
	if s != nil {
		s.dismiss()
	}
	r.waitRefill() // a refill in flight sees closed and dismisses its shim
	r.exeMu.Lock()
	if r.shimExe != nil {
		r.shimExe.Close() // running shims keep their own reference
		r.shimExe = nil
	}
	r.exeMu.Unlock()
	return nil
}

// errShimGone: the shim went away without a word, before starting.
var errShimGone = errors.New("shim exited before starting the container")

// handOver gives shim s the task id and waits for its verdict.
func (s *shimProc) handOver(ctx context.Context, id string) error {
	if _, err := s.conn.Write([]byte(id)); err != nil {
		if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) {
			return errShimGone
		}
		return fmt.Errorf("send task to shim: %w", err)
	}
	select {
	case m, ok := <-s.msgs:
		if !ok {
			return errShimGone
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
		return nil
	case <-ctx.Done():
		_ = s.cmd.Process.Kill()
		return ctx.Err()
	}
}
