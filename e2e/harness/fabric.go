package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/agent/runtime/hostclean"
)

// Subnet is the fabric's underlay: host n (1-based, in AddHost order) gets
// Subnet.(10+n)/24. Only addresses of this subnet, inside namespaces a test
// created, and loopback are ever used.
const (
	SubnetPrefix = "192.168.250."
	SubnetBits   = 24
	firstHostOct = 11
	maxHosts     = 200
)

// bridgeName is the switch's bridge inside the switch namespace, and
// hostIface the host end of each host's veth inside its namespace.
const (
	bridgeName = "br0"
	hostIface  = "eth0"
)

var hostNameRe = regexp.MustCompile(`^[a-z0-9]{1,8}$`)

// Fabric is one test's set of "hosts": network namespaces wired to a bridge
// that lives in a switch namespace of its own, so nothing of the root
// namespace is touched. Everything it creates is removed in t.Cleanup.
type Fabric struct {
	// ID is 6 random hex digits naming the fabric's namespaces.
	ID string
	// SwitchNS holds the bridge; its ports are the hosts' peer veths.
	SwitchNS string
	// Dir is the fabric's temp dir: one subdir per host, logs/.
	Dir string

	t    testing.TB
	lock *os.File

	mu    sync.Mutex // guards hosts and cleaned
	hosts []*Host
	// cleaned is set once cleanup ran; later AddHost calls fail.
	cleaned bool
}

// RequireRoot fails (never skips) the test when not run as root: a skipped
// e2e test must not look like a passing one.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the e2e tests need root (network namespaces, veths, bridges): run them as root, e.g. `sudo go test ./e2e/...`")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("the e2e tests need iproute2's `ip` on PATH (Debian package iproute2; scripts/setup.sh installs it)")
	}
}

func randomID() string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// NewFabric creates a switch namespace with a bridge and registers the
// removal of everything the fabric will hold: processes are killed first,
// then the namespaces are deleted; when the test failed, the tail of every
// process log is printed before that.
func NewFabric(t testing.TB) *Fabric {
	t.Helper()
	RequireRoot(t)
	// TempDir before Cleanup: cleanups run last-in first-out, so the logs
	// are still there when the fabric's cleanup prints them.
	dir := t.TempDir()
	f := &Fabric{t: t, Dir: dir}
	var err error
	for range 5 {
		f.ID = randomID()
		if f.lock, err = lockFabric(f.ID, hostclean.RealDir(dir)); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("fabric lock: %v", err)
	}
	f.SwitchNS = Prefix + "sw-" + f.ID
	t.Cleanup(f.cleanup)
	if err := os.MkdirAll(f.LogDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	steps := [][]string{
		{"netns", "add", f.SwitchNS},
		{"-n", f.SwitchNS, "link", "set", "lo", "up"},
		// STP off and no forward delay: a port forwards as soon as it is up,
		// so LinkUp heals a partition at once.
		{"-n", f.SwitchNS, "link", "add", bridgeName, "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		{"-n", f.SwitchNS, "link", "set", bridgeName, "up"},
	}
	for _, s := range steps {
		if _, err := ip(ctx, s...); err != nil {
			t.Fatalf("creating the fabric: %v", err)
		}
	}
	return f
}

// LogDir holds one log file per process and one per host for CLI calls.
func (f *Fabric) LogDir() string { return filepath.Join(f.Dir, "logs") }

// Hosts returns the fabric's hosts in creation order.
func (f *Fabric) Hosts() []*Host {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Host(nil), f.hosts...)
}

// AddHost creates a host: a namespace "shl-<id>-<name>" with lo up and
// eth0 at the next address of the subnet, whose veth peer "p-<name>" is a
// port of the fabric's bridge. name is 1-8 of [a-z0-9].
func (f *Fabric) AddHost(name string) *Host {
	f.t.Helper()
	if !hostNameRe.MatchString(name) {
		f.t.Fatalf("host name %q: want 1-8 characters of [a-z0-9]", name)
	}
	f.mu.Lock()
	if f.cleaned {
		f.mu.Unlock()
		f.t.Fatal("AddHost after the fabric was cleaned up")
	}
	for _, h := range f.hosts {
		if h.Name == name {
			f.mu.Unlock()
			f.t.Fatalf("host %q already exists", name)
		}
	}
	n := len(f.hosts)
	if n >= maxHosts {
		f.mu.Unlock()
		f.t.Fatalf("at most %d hosts per fabric", maxHosts)
	}
	h := &Host{
		Name:    name,
		NS:      Prefix + f.ID + "-" + name,
		IP:      fmt.Sprintf("%s%d", SubnetPrefix, firstHostOct+n),
		Dir:     filepath.Join(f.Dir, name),
		DataDir: filepath.Join(f.Dir, name, "data"),
		f:       f,
		peer:    "p-" + name,
	}
	f.hosts = append(f.hosts, h)
	f.mu.Unlock()

	if err := os.MkdirAll(h.Dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	ctx := context.Background()
	steps := [][]string{
		{"netns", "add", h.NS},
		{"-n", h.NS, "link", "set", "lo", "up"},
		// Created inside the switch namespace with its peer placed straight
		// into the host's: the root namespace never sees either end.
		{"-n", f.SwitchNS, "link", "add", h.peer, "type", "veth", "peer", "name", hostIface, "netns", h.NS},
		{"-n", f.SwitchNS, "link", "set", h.peer, "master", bridgeName},
		{"-n", f.SwitchNS, "link", "set", h.peer, "up"},
		{"-n", h.NS, "addr", "add", fmt.Sprintf("%s/%d", h.IP, SubnetBits), "dev", hostIface},
		{"-n", h.NS, "link", "set", hostIface, "up"},
	}
	for _, s := range steps {
		if _, err := ip(ctx, s...); err != nil {
			f.t.Fatalf("creating host %s: %v", name, err)
		}
	}
	return h
}

// AddHosts adds hosts named prefix1..prefixN.
func (f *Fabric) AddHosts(prefix string, n int) []*Host {
	f.t.Helper()
	hs := make([]*Host, n)
	for i := range n {
		hs[i] = f.AddHost(fmt.Sprintf("%s%d", prefix, i+1))
	}
	return hs
}

// cleanup runs even when the test failed: kill every process the hosts
// started (the harness's, then whatever else is in their namespaces: shims),
// kill every process in the hosts' cgroups (containers outlive a killed
// node), print logs if the test failed, unmount everything mounted below
// the fabric's directory (deepest first), remove the hosts' cgroups, delete
// the namespaces (hosts first, then the switch), release the lock.
func (f *Fabric) cleanup() {
	f.mu.Lock()
	f.cleaned = true
	hosts := append([]*Host(nil), f.hosts...)
	f.mu.Unlock()
	ctx := context.Background()
	var (
		emu  sync.Mutex // guards errs
		errs []string
	)
	fail := func(h *Host, err error) {
		if err != nil {
			emu.Lock()
			errs = append(errs, fmt.Sprintf("host %s: %v", h.Name, err))
			emu.Unlock()
		}
	}
	forHosts := func(fn func(h *Host)) {
		var wg sync.WaitGroup
		for _, h := range hosts {
			wg.Go(func() { fn(h) })
		}
		wg.Wait()
	}
	forHosts(func(h *Host) { fail(h, h.Crash()) })
	forHosts(func(h *Host) {
		if netnsExists(h.NS) {
			fail(h, killNetns(ctx, h.NS))
		}
		fail(h, hostclean.KillCgroups(ctx, h.CgroupParent()))
	})
	for _, h := range hosts {
		h.closeCLILog()
	}
	if f.t.Failed() {
		f.printLogs()
	}
	if err := hostclean.UnmountUnder(hostclean.RealDir(f.Dir)); err != nil {
		errs = append(errs, err.Error())
	}
	forHosts(func(h *Host) { fail(h, hostclean.RemoveCgroups(ctx, h.CgroupParent())) })
	for _, h := range hosts {
		if err := deleteNetns(ctx, h.NS); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if err := deleteNetns(ctx, f.SwitchNS); err != nil {
		errs = append(errs, err.Error())
	}
	unlockFabric(f.lock, f.ID)
	if len(errs) > 0 {
		f.t.Errorf("fabric %s cleanup: %s", f.ID, strings.Join(errs, "; "))
	}
}

// logTailLines is how much of each log a failed test prints.
const logTailLines = 60

func (f *Fabric) printLogs() {
	ents, err := os.ReadDir(f.LogDir())
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(f.LogDir(), e.Name())
		tail, err := TailFile(p, logTailLines)
		if err != nil {
			continue
		}
		f.t.Logf("===== %s (last %d lines) =====\n%s", p, logTailLines, tail)
	}
}

// TailFile returns the last n lines of a file.
func TailFile(path string, n int) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n"), nil
}

// killWait bounds the wait for a process to exit after SIGKILL.
const killWait = 10 * time.Second
