package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestSetupAttachesToBridge checks one attachment from the inside and
// from the outside: what the task namespace holds, what the host side
// looks like, and that host→task and task→task traffic flows (TCP and
// ICMP) through the bridge.
func TestSetupAttachesToBridge(t *testing.T) {
	host := inFreshNetNS(t)
	m := newTestManager(t, Config{MTU: 1400})

	a := setup(t, m, "task-a")
	b := setup(t, m, "task-b")
	if a.Gateway != "10.213.0.1" || !strings.HasPrefix(a.Addresses[0], "10.213.0.") || !strings.HasSuffix(a.Addresses[0], "/24") {
		t.Errorf("attachment a = %+v", a)
	}
	if a.NetNSPath != filepath.Join(m.cfg.StateDir, "netns", "task-a") || a.HostVeth != vethName("task-a") || len(a.HostVeth) > 15 {
		t.Errorf("attachment a = %+v", a)
	}
	if a.Addresses[0] == b.Addresses[0] {
		t.Fatalf("a and b share %s", a.Addresses[0])
	}
	if ok, err := isNetNSFile(a.NetNSPath); !ok || err != nil {
		t.Fatalf("%s is not a netns mount (%v)", a.NetNSPath, err)
	}

	// Host side: the bridge with the gateway, the veth as an up port.
	br, err := host.LinkByName("shoal0")
	if err != nil {
		t.Fatal(err)
	}
	if br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 || br.Attrs().MTU != 1400 {
		t.Errorf("bridge: type %s flags %v mtu %d", br.Type(), br.Attrs().Flags, br.Attrs().MTU)
	}
	addrs, _ := host.AddrList(br, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.213.0.1/24" {
		t.Errorf("bridge addresses %v", addrs)
	}
	hv, err := host.LinkByName(a.HostVeth)
	if err != nil {
		t.Fatal(err)
	}
	if hv.Attrs().MasterIndex != br.Attrs().Index || hv.Attrs().Flags&net.FlagUp == 0 || hv.Attrs().MTU != 1400 {
		t.Errorf("host veth: master %d (bridge %d), flags %v, mtu %d", hv.Attrs().MasterIndex, br.Attrs().Index, hv.Attrs().Flags, hv.Attrs().MTU)
	}

	// Inside: lo up, eth0 with MTU, MAC, address, default route.
	nh := nsHandle(t, a.NetNSPath)
	lo, err := nh.LinkByName("lo")
	if err != nil || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("lo: %v %v", lo, err)
	}
	eth, err := nh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if eth.Attrs().Flags&net.FlagUp == 0 || eth.Attrs().MTU != 1400 || eth.Attrs().HardwareAddr.String() != taskMAC(addrOf(t, a)).String() {
		t.Errorf("eth0: flags %v mtu %d mac %s", eth.Attrs().Flags, eth.Attrs().MTU, eth.Attrs().HardwareAddr)
	}
	eaddrs, _ := nh.AddrList(eth, netlink.FAMILY_V4)
	if len(eaddrs) != 1 || eaddrs[0].IPNet.String() != a.Addresses[0] {
		t.Errorf("eth0 addresses %v, want %s", eaddrs, a.Addresses[0])
	}
	routes, _ := nh.RouteList(nil, netlink.FAMILY_V4)
	var def *netlink.Route
	for i := range routes {
		if routes[i].Dst == nil || routes[i].Dst.String() == "0.0.0.0/0" {
			def = &routes[i]
		}
	}
	if def == nil || def.Gw.String() != "10.213.0.1" || def.LinkIndex != eth.Attrs().Index {
		t.Errorf("default route %+v (routes %v)", def, routes)
	}
	links, _ := nh.LinkList()
	if len(links) != 2 {
		t.Errorf("task netns has %d links, want lo and eth0", len(links))
	}

	// Traffic.
	serveHello(t, a.NetNSPath, "task-a")
	serveHello(t, b.NetNSPath, "task-b")
	if got, err := fetchHello(t, "", addrOf(t, a)); err != nil || got != "hello from task-a" {
		t.Errorf("host → a: %q, %v", got, err)
	}
	if got, err := fetchHello(t, a.NetNSPath, addrOf(t, b)); err != nil || got != "hello from task-b" {
		t.Errorf("a → b: %q, %v", got, err)
	}
	if got, err := fetchHello(t, b.NetNSPath, addrOf(t, a)); err != nil || got != "hello from task-a" {
		t.Errorf("b → a: %q, %v", got, err)
	}
	if got, err := fetchHello(t, a.NetNSPath, netip.MustParseAddr("10.213.0.1")); err == nil {
		t.Errorf("a → gateway:8080 answered %q; nothing listens there", got)
	}
	if err := ping(t, "", addrOf(t, a), addrOf(t, b)); err != nil {
		t.Errorf("ping host → tasks: %v", err)
	}
	if err := ping(t, a.NetNSPath, addrOf(t, b), netip.MustParseAddr("10.213.0.1")); err != nil {
		t.Errorf("ping a → b, gateway: %v", err)
	}
	if err := ping(t, a.NetNSPath, netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Errorf("ping a → lo: %v", err)
	}
}

func TestSetupIsIdempotent(t *testing.T) {
	inFreshNetNS(t)
	m := newTestManager(t, Config{})
	first := setup(t, m, "t1")
	ino := nsInode(t, first.NetNSPath)
	second := setup(t, m, "t1")
	if fmt.Sprint(first) != fmt.Sprint(second) {
		t.Errorf("second Setup %+v, first %+v", second, first)
	}
	if nsInode(t, second.NetNSPath) != ino {
		t.Error("second Setup replaced the namespace")
	}
	if got := m.List(); !slices.Equal(got, []string{"t1"}) {
		t.Errorf("List = %v", got)
	}
}

// TestRestart: a new Manager on the same state dir (an agent restart)
// adopts the bridge, keeps the addresses, returns the same attachment
// with the same live namespace, and allocates new tasks elsewhere.
func TestRestart(t *testing.T) {
	host := inFreshNetNS(t)
	dir := t.TempDir()
	registerUnmountAll(t, dir)
	m1, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	a1 := setup(t, m1, "t1")
	a2 := setup(t, m1, "t2")
	ino := nsInode(t, a1.NetNSPath)
	br1, _ := host.LinkByName("shoal0")
	serveHello(t, a1.NetNSPath, "t1")
	if err := m1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m1.Setup(context.Background(), "t9"); !errors.Is(err, ErrClosed) {
		t.Errorf("Setup after Close: %v", err)
	}
	// Close leaves everything in place.
	if _, err := host.LinkByName(a1.HostVeth); err != nil {
		t.Errorf("veth gone after Close: %v", err)
	}
	if got, err := fetchHello(t, "", addrOf(t, a1)); err != nil || got != "hello from t1" {
		t.Errorf("host → t1 with no manager: %q, %v", got, err)
	}

	m2 := newTestManager(t, Config{StateDir: dir})
	br2, _ := host.LinkByName("shoal0")
	if br1.Attrs().Index != br2.Attrs().Index || br1.Attrs().HardwareAddr.String() != br2.Attrs().HardwareAddr.String() {
		t.Errorf("bridge replaced: %v → %v", br1.Attrs(), br2.Attrs())
	}
	if got := m2.List(); !slices.Equal(got, []string{"t1", "t2"}) {
		t.Errorf("List after restart = %v", got)
	}
	again := setup(t, m2, "t1")
	if fmt.Sprint(again) != fmt.Sprint(a1) {
		t.Errorf("Setup after restart = %+v, want %+v", again, a1)
	}
	if nsInode(t, again.NetNSPath) != ino {
		t.Error("Setup after restart replaced a live namespace")
	}
	a3 := setup(t, m2, "t3")
	if a3.Addresses[0] == a1.Addresses[0] || a3.Addresses[0] == a2.Addresses[0] {
		t.Errorf("t3 got %s, already t1's or t2's", a3.Addresses[0])
	}
	if got, err := fetchHello(t, "", addrOf(t, a1)); err != nil || got != "hello from t1" {
		t.Errorf("host → t1 after restart: %q, %v", got, err)
	}
}

// TestRestartLostNamespace: the agent ran in a mount namespace that is
// gone (ip netns exec) or the node rebooted, so the netns file is a
// plain file again while the old veth may linger. If a process (the
// container) still lives in the old namespace, Setup mounts that one
// again and keeps its network; otherwise it rebuilds the attachment with
// the same address.
func TestRestartLostNamespace(t *testing.T) {
	t.Run("container still running", func(t *testing.T) {
		host := inFreshNetNS(t)
		m := newTestManager(t, Config{})
		a := setup(t, m, "t1")
		serveHello(t, a.NetNSPath, "t1") // its socket lives on in the namespace
		// The "container": a process in the namespace, which says when it
		// is in there.
		sleeper := exec.Command("nsenter", "--net="+a.NetNSPath, "sh", "-c", "echo ready; exec sleep 600")
		out, err := sleeper.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
		if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
			t.Fatalf("nsenter: %q %v", line, err)
		}
		oldIno := nsInode(t, a.NetNSPath)
		oldVeth, _ := host.LinkByName(a.HostVeth)
		if err := unix.Unmount(a.NetNSPath, unix.MNT_DETACH); err != nil {
			t.Fatal(err)
		}

		b := setup(t, m, "t1")
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("attachment %+v, want %+v", b, a)
		}
		if nsInode(t, b.NetNSPath) != oldIno {
			t.Error("Setup made a new namespace instead of re-mounting the container's")
		}
		if v, _ := host.LinkByName(b.HostVeth); v == nil || v.Attrs().Index != oldVeth.Attrs().Index {
			t.Errorf("veth replaced: %v", v)
		}
		if got, err := fetchHello(t, "", addrOf(t, b)); err != nil || got != "hello from t1" {
			t.Errorf("host → t1: %q, %v", got, err)
		}
	})

	t.Run("namespace gone", func(t *testing.T) {
		host := inFreshNetNS(t)
		m := newTestManager(t, Config{})
		a := setup(t, m, "t1")
		// Keep the old namespace alive with an fd only (no process), so
		// that its veth lingers, then drop the mount.
		old, err := netns.GetFromPath(a.NetNSPath)
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		if err := unix.Unmount(a.NetNSPath, unix.MNT_DETACH); err != nil {
			t.Fatal(err)
		}
		if ok, _ := isNetNSFile(a.NetNSPath); ok {
			t.Fatal("still a netns after unmount")
		}
		oldVeth, _ := host.LinkByName(a.HostVeth)

		b := setup(t, m, "t1")
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("rebuilt attachment %+v, want %+v", b, a)
		}
		if ok, err := isNetNSFile(b.NetNSPath); !ok {
			t.Fatalf("no live netns after Setup (%v)", err)
		}
		newVeth, _ := host.LinkByName(b.HostVeth)
		if oldVeth == nil || newVeth == nil || oldVeth.Attrs().Index == newVeth.Attrs().Index {
			t.Errorf("veth not replaced: old %v new %v", oldVeth, newVeth)
		}
		serveHello(t, b.NetNSPath, "t1")
		if got, err := fetchHello(t, "", addrOf(t, b)); err != nil || got != "hello from t1" {
			t.Errorf("host → rebuilt t1: %q, %v", got, err)
		}
	})
}

func TestTeardown(t *testing.T) {
	host := inFreshNetNS(t)
	m := newTestManager(t, Config{})
	ctx := context.Background()
	a := setup(t, m, "t1")
	keep := setup(t, m, "t2")
	if err := m.Teardown(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	assertGone(t, m, host, "t1")
	b, err := os.ReadFile(filepath.Join(m.cfg.StateDir, ipamFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"t1"`) || strings.Contains(string(b), strings.TrimSuffix(a.Addresses[0], "/24")+`"`) {
		t.Errorf("t1 still in persisted IPAM state:\n%s", b)
	}
	// Idempotent, unknown ids too.
	if err := m.Teardown(ctx, "t1"); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
	if err := m.Teardown(ctx, "never-set-up"); err != nil {
		t.Errorf("Teardown of unknown task: %v", err)
	}
	if err := m.Teardown(ctx, "../x"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Teardown of bad id: %v", err)
	}
	// The other task is untouched, and t1 can come back.
	if err := ping(t, "", addrOf(t, keep)); err != nil {
		t.Errorf("t2 after t1's teardown: %v", err)
	}
	again := setup(t, m, "t1")
	if err := ping(t, "", addrOf(t, again)); err != nil {
		t.Errorf("t1 set up again: %v", err)
	}
}

// TestExhaustion uses a /29: .1 is the gateway, .0 and .7 are network and
// broadcast, so exactly five tasks fit.
func TestExhaustion(t *testing.T) {
	host := inFreshNetNS(t)
	m := newTestManager(t, Config{Subnet: netip.MustParsePrefix("192.168.250.0/29"), Bridge: "br-test"})
	var got []string
	for i := range 5 {
		got = append(got, setup(t, m, fmt.Sprintf("t%d", i)).Addresses[0])
	}
	want := []string{"192.168.250.2/29", "192.168.250.3/29", "192.168.250.4/29", "192.168.250.5/29", "192.168.250.6/29"}
	if !slices.Equal(got, want) {
		t.Errorf("addresses %v, want %v", got, want)
	}
	_, err := m.Setup(context.Background(), "t5")
	if !errors.Is(err, ErrSubnetExhausted) || !strings.Contains(err.Error(), "192.168.250.0/29") || !strings.Contains(err.Error(), `"t5"`) {
		t.Fatalf("sixth Setup: %v", err)
	}
	t.Logf("exhaustion error: %v", err)
	assertGone(t, m, host, "t5")

	if err := m.Teardown(context.Background(), "t2"); err != nil {
		t.Fatal(err)
	}
	if a := setup(t, m, "t5"); a.Addresses[0] != "192.168.250.4/29" {
		t.Errorf("after freeing .4, t5 got %s", a.Addresses[0])
	}
}

// TestSetupFailureCleansUp fails Setup after each step and checks that
// nothing is left and that a later Setup works.
func TestSetupFailureCleansUp(t *testing.T) {
	for _, step := range []string{"allocate", "netns", "veth", "configure"} {
		t.Run(step, func(t *testing.T) {
			host := inFreshNetNS(t)
			m := newTestManager(t, Config{})
			boom := errors.New("injected failure")
			m.hook = func(s string) error {
				if s == step {
					return boom
				}
				return nil
			}
			if _, err := m.Setup(context.Background(), "t1"); !errors.Is(err, boom) {
				t.Fatalf("Setup: %v", err)
			}
			assertGone(t, m, host, "t1")
			m.hook = nil
			a := setup(t, m, "t1")
			if err := ping(t, "", addrOf(t, a)); err != nil {
				t.Error(err)
			}
		})
	}

	t.Run("repair keeps what existed", func(t *testing.T) {
		host := inFreshNetNS(t)
		m := newTestManager(t, Config{})
		a := setup(t, m, "t1")
		ino := nsInode(t, a.NetNSPath)
		m.hook = func(s string) error {
			if s == "configure" {
				return errors.New("injected")
			}
			return nil
		}
		if _, err := m.Setup(context.Background(), "t1"); err == nil {
			t.Fatal("Setup succeeded")
		}
		// A failed re-Setup must not destroy the working attachment.
		if nsInode(t, a.NetNSPath) != ino || !slices.Contains(m.List(), "t1") {
			t.Error("failed repair removed the existing namespace or address")
		}
		if _, err := host.LinkByName(a.HostVeth); err != nil {
			t.Errorf("failed repair removed the veth: %v", err)
		}
		if err := ping(t, "", addrOf(t, a)); err != nil {
			t.Error(err)
		}
	})

	t.Run("veth name taken by a foreign link", func(t *testing.T) {
		host := inFreshNetNS(t)
		m := newTestManager(t, Config{})
		attrs := netlink.NewLinkAttrs()
		attrs.Name = vethName("t1")
		if err := host.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			t.Fatal(err)
		}
		_, err := m.Setup(context.Background(), "t1")
		if !errors.Is(err, ErrFailedPrecondition) {
			t.Fatalf("Setup: %v", err)
		}
		if _, err := os.Stat(filepath.Join(m.netnsDir, "t1")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns file left: %v", err)
		}
		if len(m.List()) != 0 {
			t.Errorf("address left: %v", m.List())
		}
		if l, err := host.LinkByName(attrs.Name); err != nil || l.Type() != "bridge" {
			t.Errorf("foreign link touched: %v %v", l, err)
		}
	})

	t.Run("cancelled context", func(t *testing.T) {
		host := inFreshNetNS(t)
		m := newTestManager(t, Config{})
		ctx, cancel := context.WithCancel(context.Background())
		m.hook = func(s string) error {
			if s == "veth" {
				cancel()
			}
			return nil
		}
		if _, err := m.Setup(ctx, "t1"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Setup: %v", err)
		}
		assertGone(t, m, host, "t1")
	})
}

// TestConcurrentSetup100 starts 100 tasks at once, checks every one is
// reachable, then tears them all down at once. Times are logged (see
// also the benchmarks), never asserted.
func TestConcurrentSetup100(t *testing.T) {
	host := inFreshNetNS(t)
	m := newTestManager(t, Config{})
	ctx := context.Background()
	const n = 100
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("task-%03d", i)
	}
	atts := make([]Attachment, n)
	durs := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range ids {
		wg.Go(func() {
			t0 := time.Now()
			atts[i], errs[i] = m.Setup(ctx, ids[i])
			durs[i] = time.Since(t0)
		})
	}
	wg.Wait()
	wall := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("setup of %d concurrent tasks: wall %v (%v per task), per call %s", n, wall, wall/n, stats(durs))

	seen := map[string]string{}
	var addrs []netip.Addr
	for i, a := range atts {
		if prev, dup := seen[a.Addresses[0]]; dup {
			t.Errorf("%s given to %s and %s", a.Addresses[0], prev, ids[i])
		}
		seen[a.Addresses[0]] = ids[i]
		addrs = append(addrs, addrOf(t, a))
	}
	if got := m.List(); !slices.Equal(got, ids) {
		t.Errorf("List has %d ids", len(got))
	}
	if err := ping(t, "", addrs...); err != nil {
		t.Errorf("ping all from host: %v", err)
	}
	if err := ping(t, atts[0].NetNSPath, addrs[1:]...); err != nil {
		t.Errorf("ping all from task 0: %v", err)
	}
	serveHello(t, atts[n-1].NetNSPath, ids[n-1])
	if got, err := fetchHello(t, atts[0].NetNSPath, addrs[n-1]); err != nil || got != "hello from "+ids[n-1] {
		t.Errorf("task 0 → task 99: %q, %v", got, err)
	}

	start = time.Now()
	for i := range ids {
		wg.Go(func() {
			t0 := time.Now()
			errs[i] = m.Teardown(ctx, ids[i])
			durs[i] = time.Since(t0)
		})
	}
	wg.Wait()
	wall = time.Since(start)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("teardown of %d concurrent tasks: wall %v (%v per task), per call %s", n, wall, wall/n, stats(durs))
	for _, id := range ids {
		assertGone(t, m, host, id)
	}
	if entries, _ := os.ReadDir(m.netnsDir); len(entries) != 0 {
		t.Errorf("%d files left in netns dir", len(entries))
	}
}

func stats(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return fmt.Sprintf("min %v median %v mean %v max %v", s[0], s[len(s)/2], sum/time.Duration(len(s)), s[len(s)-1])
}

func TestNewValidation(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"relative state dir", Config{StateDir: "state"}, "absolute"},
		{"no state dir", Config{}, "absolute"},
		{"long bridge name", Config{StateDir: dir, Bridge: "a-very-long-bridge"}, "bridge name"},
		{"bridge name with slash", Config{StateDir: dir, Bridge: "br/0"}, "bridge name"},
		{"bridge named like a veth", Config{StateDir: dir, Bridge: vethName("x")}, "veth"},
		{"IPv6", Config{StateDir: dir, Subnet: netip.MustParsePrefix("fd00::/64")}, "IPv4"},
		{"too small", Config{StateDir: dir, Subnet: netip.MustParsePrefix("10.0.0.0/31")}, "prefix length"},
		{"too large", Config{StateDir: dir, Subnet: netip.MustParsePrefix("10.0.0.0/7")}, "prefix length"},
		{"host bits", Config{StateDir: dir, Subnet: netip.MustParsePrefix("10.213.0.5/24")}, "10.213.0.0/24"},
		{"MTU", Config{StateDir: dir, MTU: 20}, "MTU"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want invalid argument mentioning %q", err, tc.want)
			}
		})
	}
}

func TestBridgeAdoption(t *testing.T) {
	t.Run("reuses a bridge with the gateway address", func(t *testing.T) {
		host := inFreshNetNS(t)
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "shoal0"
		if err := host.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			t.Fatal(err)
		}
		br, _ := host.LinkByName("shoal0")
		gw := &netlink.Addr{IPNet: prefixToIPNet(netip.MustParsePrefix("10.213.0.1/24"))}
		if err := host.AddrAdd(br, gw); err != nil {
			t.Fatal(err)
		}
		m := newTestManager(t, Config{})
		if m.bridge != br.Attrs().Index {
			t.Errorf("bridge index %d, existing %d", m.bridge, br.Attrs().Index)
		}
		a := setup(t, m, "t1")
		if err := ping(t, "", addrOf(t, a)); err != nil {
			t.Error(err)
		}
	})
	t.Run("adds the gateway to a bare bridge", func(t *testing.T) {
		host := inFreshNetNS(t)
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "shoal0"
		if err := host.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			t.Fatal(err)
		}
		m := newTestManager(t, Config{})
		a := setup(t, m, "t1")
		if err := ping(t, "", addrOf(t, a)); err != nil {
			t.Error(err)
		}
	})
	for _, tc := range []struct {
		name   string
		prep   func(t *testing.T, h *netlink.Handle)
		substr string
	}{
		{"not a bridge", func(t *testing.T, h *netlink.Handle) {
			attrs := netlink.NewLinkAttrs()
			attrs.Name = "shoal0"
			if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "shoal0-peer"}); err != nil {
				t.Fatal(err)
			}
		}, "not a bridge"},
		{"bridge with another address", func(t *testing.T, h *netlink.Handle) {
			attrs := netlink.NewLinkAttrs()
			attrs.Name = "shoal0"
			if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
				t.Fatal(err)
			}
			br, _ := h.LinkByName("shoal0")
			if err := h.AddrAdd(br, &netlink.Addr{IPNet: prefixToIPNet(netip.MustParsePrefix("10.99.0.1/24"))}); err != nil {
				t.Fatal(err)
			}
		}, "10.99.0.1/24"},
		{"subnet used by another link", func(t *testing.T, h *netlink.Handle) {
			attrs := netlink.NewLinkAttrs()
			attrs.Name = "uplink"
			if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "uplink-peer"}); err != nil {
				t.Fatal(err)
			}
			l, _ := h.LinkByName("uplink")
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: prefixToIPNet(netip.MustParsePrefix("10.213.0.77/16"))}); err != nil {
				t.Fatal(err)
			}
		}, `"uplink"`},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			host := inFreshNetNS(t)
			tc.prep(t, host)
			_, err := New(Config{StateDir: t.TempDir()})
			if !errors.Is(err, ErrFailedPrecondition) || !strings.Contains(err.Error(), tc.substr) {
				t.Fatalf("New: %v", err)
			}
			t.Logf("refusal: %v", err)
		})
	}
	t.Run("refuses another subnet while tasks hold addresses", func(t *testing.T) {
		inFreshNetNS(t)
		m := newTestManager(t, Config{})
		setup(t, m, "t1")
		m.Close()
		_, err := New(Config{StateDir: m.cfg.StateDir, Bridge: "other0", Subnet: netip.MustParsePrefix("10.214.0.0/24")})
		if !errors.Is(err, ErrFailedPrecondition) {
			t.Fatalf("New: %v", err)
		}
		t.Logf("refusal: %v", err)
	})
}

// TestBridgeMACStable: the gateway's MAC must not follow the ports.
func TestBridgeMACStable(t *testing.T) {
	host := inFreshNetNS(t)
	m := newTestManager(t, Config{})
	before, _ := host.LinkByName("shoal0")
	for i := range 5 {
		setup(t, m, fmt.Sprintf("t%d", i))
	}
	m.Teardown(context.Background(), "t0")
	after, _ := host.LinkByName("shoal0")
	if before.Attrs().HardwareAddr.String() != after.Attrs().HardwareAddr.String() {
		t.Errorf("bridge MAC changed from %s to %s", before.Attrs().HardwareAddr, after.Attrs().HardwareAddr)
	}
}

// TestSweep: leftovers of a crash (a netns file and a veth on the bridge
// of tasks without an address) are removed by New; tasks with an
// address, and foreign ports of the bridge, are kept.
func TestSweep(t *testing.T) {
	host := inFreshNetNS(t)
	m := newTestManager(t, Config{})
	keep := setup(t, m, "keep")
	lost := setup(t, m, "lost")
	m.Close()
	// Forget "lost" behind the manager's back, as if ipam.json had been
	// rolled back by a crash or an operator.
	state, err := loadIPAM(filepath.Join(m.cfg.StateDir, ipamFile), m.cfg.Subnet)
	if err != nil {
		t.Fatal(err)
	}
	state.release("lost")
	data, _ := state.marshal()
	if err := writeFileAtomic(filepath.Join(m.cfg.StateDir, ipamFile), data); err != nil {
		t.Fatal(err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "foreign"
	attrs.MasterIndex = m.bridge
	if err := host.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "foreign-peer"}); err != nil {
		t.Fatal(err)
	}
	if err := host.LinkSetMasterByIndex(&netlink.Veth{LinkAttrs: attrs}, m.bridge); err != nil {
		t.Fatal(err)
	}

	m2 := newTestManager(t, Config{StateDir: m.cfg.StateDir})
	assertGone(t, m2, host, "lost")
	if _, err := host.LinkByName(keep.HostVeth); err != nil {
		t.Errorf("kept task's veth: %v", err)
	}
	if ok, _ := isNetNSFile(keep.NetNSPath); !ok {
		t.Error("kept task's netns gone")
	}
	if _, err := host.LinkByName("foreign"); err != nil {
		t.Errorf("foreign port: %v", err)
	}
	_ = lost
}

// TestHostNamespaceUntouched: the manager works in the namespace New was
// called in, even when Setup runs on goroutines whose threads are in
// another namespace (the process's).
func TestHostNamespaceUntouched(t *testing.T) {
	host := inFreshNetNS(t)
	// A bridge name of its own: a node running on this machine has shoal0
	// in the process's namespace, which says nothing about this test.
	const bridge = "br-untouched"
	m := newTestManager(t, Config{Bridge: bridge})
	var (
		a      Attachment
		err    error
		procNS netns.NsHandle
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A thread of the process's own namespace, not the test's.
		runtime.LockOSThread()
		procNS, _ = netns.Get()
		runtime.UnlockOSThread()
		a, err = m.Setup(context.Background(), "t1")
	}()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	defer procNS.Close()
	if _, err := host.LinkByName(a.HostVeth); err != nil {
		t.Errorf("veth not in the test namespace: %v", err)
	}
	if procNS.Equal(mustGetNS(t)) {
		t.Fatal("the goroutine ran in the test namespace")
	}
	h, err := newHandleIn(procNS)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.LinkByName(a.HostVeth); !isNotFound(err) {
		t.Errorf("veth found in the process namespace: %v", err)
	}
	if _, err := h.LinkByName(bridge); err == nil {
		t.Errorf("bridge found in the process namespace")
	}
}

func mustGetNS(t *testing.T) netns.NsHandle {
	ns, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}
