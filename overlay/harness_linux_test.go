package overlay

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// The harness: an "underlay" namespace with a bridge, "hosts" joined to
// it by veths (192.168.250.N/24 on their eth0), and task namespaces.
// Every name has the prefix ovlt<pid>; everything goes in t.Cleanup.

type harness struct {
	t      testing.TB
	prefix string
	under  string
}

func needRoot(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8) for the test harness")
	}
}

func run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

var seq int

func newHarness(t testing.TB) *harness {
	needRoot(t)
	seq++
	h := &harness{t: t, prefix: fmt.Sprintf("ovlt%d-%d", os.Getpid(), seq)}
	h.under = h.prefix + "u"
	h.addNS(h.under)
	run(t, "ip", "-n", h.under, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", h.under, "link", "set", "br0", "up")
	return h
}

func (h *harness) addNS(name string) {
	run(h.t, "ip", "netns", "add", name)
	h.t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	run(h.t, "ip", "-n", name, "link", "set", "lo", "up")
}

// host makes host number i (192.168.250.i) and returns its namespace name.
func (h *harness) host(i int) string {
	name := fmt.Sprintf("%sh%d", h.prefix, i)
	h.addNS(name)
	u := fmt.Sprintf("h%d", i)
	run(h.t, "ip", "-n", h.under, "link", "add", u, "type", "veth", "peer", "name", "eth0", "netns", name)
	run(h.t, "ip", "-n", h.under, "link", "set", u, "master", "br0", "up")
	run(h.t, "ip", "-n", name, "addr", "add", fmt.Sprintf("192.168.250.%d/24", i), "dev", "eth0")
	run(h.t, "ip", "-n", name, "link", "set", "eth0", "up")
	return name
}

// task makes a task namespace and returns its name and path.
func (h *harness) task(n string) (string, string) {
	name := h.prefix + "t" + n
	h.addNS(name)
	return name, "/var/run/netns/" + name
}

func vtep(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 168, 250, byte(i)}) }

func (h *harness) manager(hostNS string, i int) *Manager {
	h.t.Helper()
	ns, err := netns.GetFromName(hostNS)
	if err != nil {
		h.t.Fatal(err)
	}
	defer ns.Close()
	m, err := New(Config{NetNS: ns, VTEP: vtep(i), Uplink: "eth0",
		LocalSubnet: netip.MustParsePrefix(fmt.Sprintf("10.99.%d.0/24", i)), EnableForwarding: true})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { m.Close() })
	return m
}

func testNet(id string, vni uint32, subnet string, internal bool) *shoalv1.Network {
	return &shoalv1.Network{Meta: &shoalv1.Meta{Id: id}, Vni: vni, Subnet: subnet,
		Spec: &shoalv1.NetworkSpec{Name: id, Driver: "overlay", Subnet: subnet, Internal: internal}}
}

// macOf derives a MAC from an IPv4 address as the managers do (02:42:a.b.c.d).
func macOf(addr string) string {
	a := netip.MustParseAddr(addr).As4()
	return net.HardwareAddr{0x02, 0x42, a[0], a[1], a[2], a[3]}.String()
}

func ep(task, addr string, host int) *shoalv1.Endpoint {
	return &shoalv1.Endpoint{TaskId: task, Address: addr + "/24", Mac: macOf(addr),
		NodeId: fmt.Sprintf("node%d", host), NodeAddr: vtep(host).String()}
}

func att(n *shoalv1.Network, addr string) *shoalv1.NetworkAttachment {
	return &shoalv1.NetworkAttachment{NetworkId: n.GetMeta().GetId(), Address: addr + "/24", Mac: macOf(addr)}
}

// inNS runs f on a thread in the named namespace.
func inNS(t testing.TB, name string, f func()) {
	t.Helper()
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cur, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(cur)
	f()
}

// dialFrom connects from the task namespace to addr, retrying until the
// deadline (the first ARP may take a moment).
func dialFrom(t testing.TB, ns, addr string, within time.Duration) (net.Conn, error) {
	var c net.Conn
	var err error
	deadline := time.Now().Add(within)
	inNS(t, ns, func() {
		for {
			d := net.Dialer{Timeout: 300 * time.Millisecond}
			c, err = d.Dial("tcp", addr)
			if err == nil || time.Now().After(deadline) {
				return
			}
		}
	})
	return c, err
}

func listenIn(t testing.TB, ns, addr string) net.Listener {
	var l net.Listener
	var err error
	inNS(t, ns, func() { l, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { // echo
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l
}

func echo(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := ioReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, got %q", msg, buf)
	}
	return nil
}

func ioReadFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// fdb returns MAC -> remote VTEP of the NTF_SELF entries on the vxlan
// device of vni in host namespace hostNS, and IP -> MAC of its
// neighbours.
func entries(t testing.TB, hostNS string, vni uint32) (fdb map[string]string, neigh map[string]string) {
	t.Helper()
	ns, err := netns.GetFromName(hostNS)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(VXLANName(vni))
	if err != nil {
		t.Fatal(err)
	}
	fdb, neigh = map[string]string{}, map[string]string{}
	fs, _ := h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	for _, f := range fs {
		if f.Flags&netlink.NTF_SELF != 0 && f.IP != nil && f.Flags&netlink.NTF_MASTER == 0 {
			fdb[f.HardwareAddr.String()] = f.IP.String()
		}
	}
	ns4, _ := h.NeighList(l.Attrs().Index, unix.AF_INET)
	for _, n := range ns4 {
		if n.State&netlink.NUD_PERMANENT != 0 {
			neigh[n.IP.String()] = n.HardwareAddr.String()
		}
	}
	return fdb, neigh
}

func handleIn(t testing.TB, name string) *netlink.Handle {
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

var bg = context.Background()
