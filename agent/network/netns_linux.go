package network

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"

	"github.com/shoal-dev/shoal/netnsrun"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// onNetNSThread is netnsrun.Run: fn on a thread moved into target (or a
// brand-new namespace when target is not open), the caller never moved.
func onNetNSThread(target netns.NsHandle, fn func() error) error { return netnsrun.Run(target, fn) }

// DialContextIn opens a connection from inside the network namespace at
// nsPath (a bind-mounted netns file such as /run/netns/NAME) without
// moving the caller: a socket stays in the namespace it was made in,
// whichever thread uses it later. Tests and benchmarks use it to reach
// addresses that exist only inside a namespace they made.
func DialContextIn(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	defer target.Close()
	var c net.Conn
	err = onNetNSThread(target, func() error {
		var d net.Dialer
		var derr error
		c, derr = d.DialContext(ctx, network, addr)
		return derr
	})
	return c, err
}

// newHandleIn opens a NETLINK_ROUTE handle bound to ns.
func newHandleIn(ns netns.NsHandle) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := onNetNSThread(ns, func() error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	return h, err
}

// createNetNS makes a new network namespace, bind-mounts it on path (a
// new file) and returns an fd of it and a netlink handle inside it. The
// bind mount keeps the namespace alive with no process in it; the
// runtime joins it by path.
func createNetNS(path string) (netns.NsHandle, *netlink.Handle, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return netns.None(), nil, fmt.Errorf("create netns file: %w", err)
	}
	f.Close()
	fd := netns.None()
	var h *netlink.Handle
	err = onNetNSThread(netns.None(), func() error {
		var err error
		if fd, err = netns.Get(); err != nil {
			return err
		}
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err == nil {
		// The fd's magic link resolves to the namespace itself, so the
		// mount needs no thread to be inside it.
		err = mountNetNS(fd, path)
	}
	if err != nil {
		if h != nil {
			h.Close()
		}
		if fd.IsOpen() {
			fd.Close()
		}
		os.Remove(path)
		return netns.None(), nil, fmt.Errorf("create network namespace: %w", err)
	}
	return fd, h, nil
}

// isNetNSFile tells whether path is a live netns bind mount (an nsfs
// file). After a reboot, or when the agent ran in a mount namespace that
// is gone (`ip netns exec`), the file is still there but plain.
func isNetNSFile(path string) (bool, error) {
	var st unix.Statfs_t
	err := unix.Statfs(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Type == unix.NSFS_MAGIC, nil
}

// removeNetNSFile unmounts path (lazily, in case the runtime still has
// it open) and deletes it. A missing or unmounted file is fine. The
// namespace itself goes away once nothing else (a process, an fd, another
// mount) refers to it.
func removeNetNSFile(path string) error {
	for range 8 { // stacked mounts, if anyone ever mounted twice
		err := unix.Unmount(path, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break
		}
		if err != nil {
			return fmt.Errorf("unmount netns %s: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove netns file: %w", err)
	}
	return nil
}

// findNetNSByID returns an fd of the network namespace that has id nsid
// as seen from h's namespace, found through a process that lives in it
// (nsids cannot be opened directly). Processes in the host's own
// namespace (hostIno) and namespaces already looked at are skipped
// cheaply by inode, so only a few netlink queries are made.
func findNetNSByID(h *netlink.Handle, nsid int, hostIno uint64) (netns.NsHandle, bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return netns.None(), false
	}
	seen := map[uint64]bool{hostIno: true}
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		p := "/proc/" + e.Name() + "/ns/net"
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		fd, err := netns.GetFromPath(p)
		if err != nil {
			continue
		}
		if id, err := h.GetNetNsIdByFd(int(fd)); err == nil && id == nsid {
			return fd, true
		}
		fd.Close()
	}
	return netns.None(), false
}

// mountNetNS bind-mounts the namespace fd on path, creating the file if
// needed.
func mountNetNS(fd netns.NsHandle, path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("create netns file: %w", err)
	}
	f.Close()
	src := "/proc/self/fd/" + strconv.Itoa(int(fd))
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount netns on %s: %w", path, err)
	}
	return nil
}
