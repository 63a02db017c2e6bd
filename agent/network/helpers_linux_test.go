package network

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inFreshNetNS moves the calling test goroutine into a new, empty network
// namespace for the rest of the test: the test's "host". The thread is
// never unlocked, so Go destroys it when the test goroutine ends and no
// other goroutine ever runs in this namespace by accident; the namespace
// and everything in it (bridge, host veths) vanish with it. Only the
// calling goroutine is inside: work done on other goroutines must use
// handles (which is what Manager does anyway).
func inFreshNetNS(tb testing.TB) *netlink.Handle {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (network namespaces)")
	}
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		tb.Fatalf("unshare netns: %v", err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(h.Close)
	// lo up, so that the host side can also talk to itself.
	if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: loopbackIndex}}); err != nil {
		tb.Fatal(err)
	}
	return h
}

// newTestManager makes a Manager in the caller's (test) namespace and
// makes sure that whatever the test does, the state dir's netns mounts
// are gone before t.TempDir removes the dir.
func newTestManager(tb testing.TB, cfg Config) *Manager {
	tb.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = tb.TempDir()
	}
	registerUnmountAll(tb, cfg.StateDir)
	m, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// registerUnmountAll unmounts every netns file under dir at cleanup
// (registered after TempDir, so it runs before the dir is removed).
func registerUnmountAll(tb testing.TB, dir string) {
	tb.Cleanup(func() {
		entries, _ := os.ReadDir(filepath.Join(dir, netnsSubdir))
		for _, e := range entries {
			if err := removeNetNSFile(filepath.Join(dir, netnsSubdir, e.Name())); err != nil {
				tb.Errorf("cleanup: %v", err)
			}
		}
	})
}

// inNetNS runs fn on a thread inside the namespace bind-mounted at path.
func inNetNS(tb testing.TB, path string, fn func() error) error {
	tb.Helper()
	fd, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer fd.Close()
	return onNetNSThread(fd, fn)
}

// nsHandle returns a netlink handle inside the namespace at path.
func nsHandle(tb testing.TB, path string) *netlink.Handle {
	tb.Helper()
	fd, err := netns.GetFromPath(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer fd.Close()
	h, err := newHandleIn(fd)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(h.Close)
	return h
}

func nsInode(tb testing.TB, path string) uint64 {
	tb.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		tb.Fatal(err)
	}
	return st.Ino
}

func addrOf(tb testing.TB, a Attachment) netip.Addr {
	tb.Helper()
	if len(a.Addresses) != 1 {
		tb.Fatalf("attachment %+v: want one address", a)
	}
	p, err := netip.ParsePrefix(a.Addresses[0])
	if err != nil {
		tb.Fatal(err)
	}
	return p.Addr()
}

const testPort = 8080

// serveHello listens on :8080 inside the namespace at path and answers
// every connection with "hello from <name>". It stops at cleanup.
func serveHello(tb testing.TB, path, name string) {
	tb.Helper()
	var ln net.Listener
	if err := inNetNS(tb, path, func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", testPort))
		return err
	}); err != nil {
		tb.Fatalf("listen in %s: %v", name, err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello from "+name)
			c.Close()
		}
	}()
}

// fetchHello connects to dst:8080 from the namespace at path ("" for the
// test's own namespace) and returns what the server said.
func fetchHello(tb testing.TB, path string, dst netip.Addr) (string, error) {
	tb.Helper()
	var c net.Conn
	dial := func() (err error) {
		c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(dst, testPort).String(), 5*time.Second)
		return err
	}
	var err error
	if path == "" {
		err = dial() // the test goroutine is locked in the test namespace
	} else {
		err = inNetNS(tb, path, dial)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// ping sends one ICMP echo request to each of dsts from the namespace at
// path ("" for the test's own) and waits until every one has answered
// (or 5 s have passed, which is a failure).
func ping(tb testing.TB, path string, dsts ...netip.Addr) error {
	tb.Helper()
	var conn net.PacketConn
	open := func() (err error) {
		conn, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}
	var err error
	if path == "" {
		err = open()
	} else {
		err = inNetNS(tb, path, open)
	}
	if err != nil {
		return err
	}
	defer conn.Close()

	id := uint16(rand.Uint32())
	waiting := map[netip.Addr]bool{}
	for i, dst := range dsts {
		waiting[dst] = true
		msg := echoRequest(id, uint16(i))
		if _, err := conn.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return fmt.Errorf("send echo to %s: %w", dst, err)
		}
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for len(waiting) > 0 {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("%d of %d echo replies missing (e.g. %v): %w", len(waiting), len(dsts), firstKey(waiting), err)
		}
		// Echo reply: type 0, code 0, our id.
		if n < 8 || buf[0] != 0 || buf[1] != 0 || binary.BigEndian.Uint16(buf[4:]) != id {
			continue
		}
		a, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		delete(waiting, a.Unmap())
	}
	return nil
}

func firstKey(m map[netip.Addr]bool) netip.Addr {
	for k := range m {
		return k
	}
	return netip.Addr{}
}

func echoRequest(id, seq uint16) []byte {
	b := make([]byte, 8, 8+16)
	b[0] = 8 // echo request
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	b = append(b, bytes.Repeat([]byte{0x5a}, 16)...)
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[2:], ^uint16(sum))
	return b
}

// assertGone checks that nothing of taskID's attachment is left.
func assertGone(tb testing.TB, m *Manager, host *netlink.Handle, taskID string) {
	tb.Helper()
	if _, err := host.LinkByName(vethName(taskID)); !isNotFound(err) {
		tb.Errorf("veth %s of %q still there (err %v)", vethName(taskID), taskID, err)
	}
	if _, err := os.Stat(filepath.Join(m.netnsDir, taskID)); !errors.Is(err, os.ErrNotExist) {
		tb.Errorf("netns file of %q still there (stat: %v)", taskID, err)
	}
	for _, id := range m.List() {
		if id == taskID {
			tb.Errorf("%q still has an address", taskID)
		}
	}
}

func setup(tb testing.TB, m *Manager, taskID string) Attachment {
	tb.Helper()
	a, err := m.Setup(context.Background(), taskID)
	if err != nil {
		tb.Fatalf("Setup(%q): %v", taskID, err)
	}
	return a
}
