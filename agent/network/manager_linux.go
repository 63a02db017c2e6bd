package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Manager attaches tasks to the node bridge. Its methods are safe for
// concurrent use; calls for one task id are serialised.
type Manager struct {
	cfg      Config
	log      *slog.Logger
	gateway  netip.Addr
	netnsDir string
	hostNS   netns.NsHandle  // the namespace New was called in: "the host"
	host     *netlink.Handle // NETLINK_ROUTE socket in hostNS, usable from any thread
	bridge   int             // bridge ifindex in hostNS
	ipam     *allocator
	reaper   *vethReaper
	locks    taskLocks

	// hook is set by tests only: it is called after each Setup step
	// and, when it returns an error, Setup fails there.
	hook func(step string) error

	mu     sync.Mutex     // guards closed and ops.Add, so Close waits for every call
	closed bool           // guarded by mu
	ops    sync.WaitGroup // Setup and Teardown calls in progress
}

// New validates cfg, loads the IPAM state from cfg.StateDir and creates
// or adopts the bridge in the calling thread's network namespace, which
// is the "host" side of every attachment from then on. It also removes
// leftovers of a crash: netns files and bridge veths of tasks that hold
// no address.
func New(cfg Config) (*Manager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "network", "bridge", cfg.Bridge),
		gateway:  gatewayOf(cfg.Subnet),
		netnsDir: filepath.Join(cfg.StateDir, netnsSubdir),
	}
	if err := os.MkdirAll(m.netnsDir, 0o755); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	state, err := loadIPAM(filepath.Join(cfg.StateDir, ipamFile), cfg.Subnet)
	if err != nil {
		return nil, err
	}

	// No namespace switch here: only the current thread's namespace is
	// read, so the thread must not change under us.
	runtime.LockOSThread()
	m.hostNS, err = netns.Get()
	if err == nil {
		m.host, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		if err == nil {
			m.reaper, err = newVethReaper(m.host, reapGroup())
			if err != nil {
				m.host.Close()
			}
		}
		if err != nil {
			m.hostNS.Close()
		}
	}
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("open host network namespace: %w", err)
	}

	idx, created, err := ensureBridge(m.host, cfg.Bridge, cfg.Subnet, cfg.MTU)
	if err != nil {
		m.reaper.stop()
		m.host.Close()
		m.hostNS.Close()
		return nil, err
	}
	ours := make(map[string]bool, len(state.byTask))
	for id := range state.byTask {
		ours[vethName(id)] = true
	}
	if err := claimBridge(m.host, idx, cfg.StateDir, ours); err != nil {
		m.reaper.stop()
		m.host.Close()
		m.hostNS.Close()
		return nil, err
	}
	m.bridge = idx
	m.sweep(state)
	m.ipam = newAllocator(filepath.Join(cfg.StateDir, ipamFile), state)
	m.log.Info("node network ready", "subnet", cfg.Subnet.String(), "gateway", m.gateway.String(),
		"bridge_created", created, "attachments", len(state.byTask))
	return m, nil
}

// enter registers a call; false once the Manager is closed.
func (m *Manager) enter() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.ops.Add(1)
	return true
}

// Setup gives taskID its network namespace, attached to the bridge, and
// returns the attachment. It is idempotent: for a task that is already
// set up (also by an earlier agent process) it checks and repairs the
// pieces and returns the same attachment, keeping a live namespace (a
// container may be in it). If it fails, it removes what it made.
func (m *Manager) Setup(ctx context.Context, taskID string) (att Attachment, err error) {
	if err := validateTaskID(taskID); err != nil {
		return Attachment{}, err
	}
	if !m.enter() {
		return Attachment{}, ErrClosed
	}
	defer m.ops.Done()
	unlock, err := m.locks.lock(ctx, taskID)
	if err != nil {
		return Attachment{}, fmt.Errorf("set up network of task %q: %w", taskID, err)
	}
	defer unlock()

	start := time.Now()
	log := m.log.With("task_id", taskID)
	var undo []func() error // what this call made, undone in reverse on failure
	defer func() {
		if err == nil {
			return
		}
		for i := len(undo) - 1; i >= 0; i-- {
			if uerr := undo[i](); uerr != nil {
				log.Warn("undo of failed network setup", "err", uerr)
			}
		}
		err = fmt.Errorf("set up network of task %q: %w", taskID, err)
	}()
	step := func(name string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if m.hook != nil {
			return m.hook(name)
		}
		return nil
	}

	addr, fresh, err := m.ipam.allocate(taskID)
	if err != nil {
		return Attachment{}, err
	}
	if fresh {
		undo = append(undo, func() error { return m.ipam.release(taskID) })
	}
	if err := step("allocate"); err != nil {
		return Attachment{}, err
	}

	nsPath := filepath.Join(m.netnsDir, taskID)
	hostVeth := vethName(taskID)
	nsFD, nsH, nsCreated, err := m.openOrCreateNetNS(nsPath, hostVeth)
	if err != nil {
		return Attachment{}, err
	}
	defer nsFD.Close()
	defer nsH.Close()
	if nsCreated {
		undo = append(undo, func() error { return removeNetNSFile(nsPath) })
	}
	if err := step("netns"); err != nil {
		return Attachment{}, err
	}

	vethIdx, vethCreated, err := m.ensureVeth(nsFD, nsH, hostVeth, addr, !nsCreated)
	if vethCreated {
		undo = append(undo, func() error { return deleteHostVeth(m.host, hostVeth) })
	}
	if err != nil {
		return Attachment{}, err
	}
	if err := step("veth"); err != nil {
		return Attachment{}, err
	}

	if err := m.configureTaskNS(nsH, addr); err != nil {
		return Attachment{}, err
	}
	if err := m.waitPortReady(ctx, vethIdx); err != nil {
		return Attachment{}, err
	}
	if err := step("configure"); err != nil {
		return Attachment{}, err
	}

	log.Debug("task network set up", "address", addr.String(), "host_veth", hostVeth,
		"netns_created", nsCreated, "veth_created", vethCreated, "took", time.Since(start))
	return Attachment{
		NetNSPath: nsPath,
		Addresses: []string{netip.PrefixFrom(addr, m.cfg.Subnet.Bits()).String()},
		Gateway:   m.gateway.String(),
		HostVeth:  hostVeth,
	}, nil
}

// openOrCreateNetNS opens the live namespace at path, re-mounts a lost
// one that a process still lives in, or makes a new one there
// (replacing a stale plain file).
func (m *Manager) openOrCreateNetNS(path, hostVeth string) (fd netns.NsHandle, h *netlink.Handle, created bool, err error) {
	live, err := isNetNSFile(path)
	if err != nil {
		return netns.None(), nil, false, err
	}
	if !live {
		live = m.recoverNetNS(path, hostVeth)
	}
	if live {
		fd, err = netns.GetFromPath(path)
		if err != nil {
			return netns.None(), nil, false, fmt.Errorf("open netns %s: %w", path, err)
		}
		h, err = newHandleIn(fd)
		if err != nil {
			fd.Close()
			return netns.None(), nil, false, fmt.Errorf("netlink in netns %s: %w", path, err)
		}
		return fd, h, false, nil
	}
	if err := removeNetNSFile(path); err != nil {
		return netns.None(), nil, false, err
	}
	fd, h, err = createNetNS(path)
	return fd, h, err == nil, err
}

// recoverNetNS handles a netns file that is no longer a mount while the
// task's host veth still exists: the agent ran in a mount namespace that
// is gone (as under `ip netns exec`, which the e2e hosts use) and the
// container may well still run in the old namespace. The veth tells which
// namespace its peer is in (by nsid); if a process lives there, the
// namespace is mounted on path again and the task keeps its network.
func (m *Manager) recoverNetNS(path, hostVeth string) bool {
	l, err := lookupHostVeth(m.host, hostVeth)
	if err != nil || l == nil || l.Attrs().NetNsID < 0 {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(m.hostNS), &st); err != nil {
		return false
	}
	fd, ok := findNetNSByID(m.host, l.Attrs().NetNsID, st.Ino)
	if !ok {
		return false
	}
	defer fd.Close()
	if err := mountNetNS(fd, path); err != nil {
		m.log.Warn("re-mount lost task netns", "path", path, "err", err)
		return false
	}
	m.log.Info("re-mounted a lost task netns found through a process in it", "path", path, "veth", hostVeth)
	return true
}

// Teardown removes taskID's attachment: the veth pair, the netns bind
// mount and file, and then its address. It is idempotent; whatever is
// already gone is skipped. If a step fails the address stays allocated,
// so the task is still in List and Teardown can be retried.
func (m *Manager) Teardown(ctx context.Context, taskID string) error {
	if err := validateTaskID(taskID); err != nil {
		return err
	}
	if !m.enter() {
		return ErrClosed
	}
	defer m.ops.Done()
	unlock, err := m.locks.lock(ctx, taskID)
	if err != nil {
		return fmt.Errorf("tear down network of task %q: %w", taskID, err)
	}
	defer unlock()

	start := time.Now()
	// The veth goes first and synchronously: the kernel would delete it
	// with the namespace, but asynchronously, and a Setup of the same
	// task right after needs the name.
	var errs []error
	if err := m.reaper.delete(ctx, vethName(taskID)); err != nil {
		errs = append(errs, err)
	}
	if err := removeNetNSFile(filepath.Join(m.netnsDir, taskID)); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := m.ipam.release(taskID); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down network of task %q: %w", taskID, err)
	}
	m.log.Debug("task network torn down", "task_id", taskID, "took", time.Since(start))
	return nil
}

// NetNSPath is where task taskID's namespace is mounted while it exists
// (nothing is checked or created).
func (m *Manager) NetNSPath(taskID string) string { return filepath.Join(m.netnsDir, taskID) }

// List returns the ids of the tasks that have an attachment (an address
// in the persisted IPAM state), sorted. A restarted agent compares it
// with its tasks and tears down the others.
func (m *Manager) List() []string {
	return m.ipam.list()
}

// Close waits for calls in progress and releases the Manager's handles.
// The bridge and the attachments stay: running containers keep their
// network, and a new Manager on the same StateDir takes them over.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.ops.Wait()
	m.ipam.stop()
	m.reaper.stop()
	m.host.Close()
	return m.hostNS.Close()
}

// sweep removes what a crash may have left of tasks without an address:
// netns files, and task veths on our bridge. Failures are only logged:
// they cost a little memory, not correctness.
func (m *Manager) sweep(state *ipamState) {
	entries, err := os.ReadDir(m.netnsDir)
	if err != nil {
		m.log.Warn("sweep netns dir", "err", err)
	}
	for _, e := range entries {
		if _, ok := state.byTask[e.Name()]; ok {
			continue
		}
		if err := removeNetNSFile(filepath.Join(m.netnsDir, e.Name())); err != nil {
			m.log.Warn("remove stale netns file", "file", e.Name(), "err", err)
		} else {
			m.log.Info("removed stale netns file", "file", e.Name())
		}
	}

	ours := make(map[string]bool, len(state.byTask))
	for id := range state.byTask {
		ours[vethName(id)] = true
	}
	var links []netlink.Link
	for i := 0; i < 10; i++ {
		links, err = m.host.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		m.log.Warn("sweep stale veths: list links", "err", err)
		return
	}
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "veth" || a.MasterIndex != m.bridge || !isVethName(a.Name) || ours[a.Name] {
			continue
		}
		if err := m.host.LinkDel(l); err != nil && !isNotFound(err) {
			m.log.Warn("delete stale veth", "veth", a.Name, "err", err)
		} else {
			m.log.Info("deleted stale veth", "veth", a.Name)
		}
	}
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// reapGroup picks the netdev group that Teardown's batched deletions use:
// random, so that two Managers in one namespace never delete each
// other's links, and away from small numbers people pick by hand.
func reapGroup() uint32 {
	return 1<<24 + mathrand.Uint32N(1<<30)
}

// Isolate marks task taskID's port on the node bridge isolated
// (IFLA_BRPORT_ISOLATED): the bridge forwards nothing between two isolated
// ports, only between one and the node (egress, the gateway) or a port
// that is not isolated. The agent isolates every task on overlay networks,
// so that tasks of two different overlay networks on one node cannot reach
// each other through their node-local addresses, around the overlay's
// isolation. Idempotent; the flag lives on the host veth, so it survives
// an agent restart with the task.
func (m *Manager) Isolate(taskID string) error {
	name := vethName(taskID)
	l, err := lookupHostVeth(m.host, name)
	if err != nil {
		return err
	}
	if l == nil {
		return fmt.Errorf("task %s has no veth %q on the node bridge", taskID, name)
	}
	if err := m.host.LinkSetIsolated(l, true); err != nil {
		return fmt.Errorf("isolate veth %q: %w", name, err)
	}
	return nil
}
