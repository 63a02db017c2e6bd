package network

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestIPAMState(t *testing.T) {
	s := newIPAMState(netip.MustParsePrefix("10.0.0.0/29"))
	if s.size != 5 || s.first.String() != "10.0.0.2" || s.last.String() != "10.0.0.6" {
		t.Fatalf("range %s-%s size %d", s.first, s.last, s.size)
	}
	for i, want := range []string{"10.0.0.2", "10.0.0.3", "10.0.0.4"} {
		a, fresh, err := s.allocate(fmt.Sprint("t", i))
		if err != nil || !fresh || a.String() != want {
			t.Fatalf("allocate t%d = %s %v %v, want %s", i, a, fresh, err, want)
		}
	}
	if a, fresh, _ := s.allocate("t1"); fresh || a.String() != "10.0.0.3" {
		t.Errorf("re-allocate t1 = %s fresh=%v", a, fresh)
	}
	// Next-fit: a freed address comes back only after the others.
	s.release("t0")
	for _, want := range []string{"10.0.0.5", "10.0.0.6", "10.0.0.2"} {
		if a, _, err := s.allocate("n" + want); err != nil || a.String() != want {
			t.Errorf("allocate = %s %v, want %s", a, err, want)
		}
	}
	_, _, err := s.allocate("full")
	if !errors.Is(err, ErrSubnetExhausted) || !strings.Contains(err.Error(), "all 5 task addresses") {
		t.Errorf("allocate on a full subnet: %v", err)
	}
	if _, ok := s.release("nobody"); ok {
		t.Error("released an unknown task")
	}
}

func TestIPAMBoundaries(t *testing.T) {
	for _, tc := range []struct {
		subnet, first, last, gw, bcast string
		size                           int
	}{
		{"10.213.0.0/24", "10.213.0.2", "10.213.0.254", "10.213.0.1", "10.213.0.255", 253},
		{"192.168.250.0/30", "192.168.250.2", "192.168.250.2", "192.168.250.1", "192.168.250.3", 1},
		{"10.0.0.0/8", "10.0.0.2", "10.255.255.254", "10.0.0.1", "10.255.255.255", 1<<24 - 3},
	} {
		p := netip.MustParsePrefix(tc.subnet)
		s := newIPAMState(p)
		if s.first.String() != tc.first || s.last.String() != tc.last || s.size != tc.size ||
			gatewayOf(p).String() != tc.gw || broadcastOf(p).String() != tc.bcast {
			t.Errorf("%s: %s-%s size %d gw %s bcast %s", tc.subnet, s.first, s.last, s.size, gatewayOf(p), broadcastOf(p))
		}
	}
}

func TestIPAMPersistence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ipamFile)
	subnet := netip.MustParsePrefix("10.213.0.0/24")
	st, err := loadIPAM(path, subnet)
	if err != nil {
		t.Fatal(err)
	}
	a := newAllocator(path, st)
	x, _, _ := a.allocate("x")
	y, _, _ := a.allocate("y")
	a.allocate("z")
	if err := a.release("z"); err != nil {
		t.Fatal(err)
	}
	a.stop()
	if _, _, err := a.allocate("late"); !errors.Is(err, ErrClosed) {
		t.Errorf("allocate after stop: %v", err)
	}

	st2, err := loadIPAM(path, subnet)
	if err != nil {
		t.Fatal(err)
	}
	if st2.byTask["x"] != x || st2.byTask["y"] != y || len(st2.byTask) != 2 {
		t.Errorf("reloaded %v, want x=%s y=%s", st2.byTask, x, y)
	}
	// next-fit position survives too: z's freed .4 is not reused first.
	if n, _, _ := st2.allocate("w"); n.String() != "10.213.0.5" {
		t.Errorf("after reload allocated %s, want 10.213.0.5", n)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}

	if _, err := loadIPAM(path, netip.MustParsePrefix("10.214.0.0/24")); !errors.Is(err, ErrFailedPrecondition) {
		t.Errorf("load with another subnet: %v", err)
	}
	for name, content := range map[string]string{
		"corrupt":   `{"version":1,`,
		"version":   `{"version":2,"subnet":"10.213.0.0/24","allocations":{}}`,
		"outside":   `{"version":1,"subnet":"10.213.0.0/24","allocations":{"a":"10.9.0.3"}}`,
		"gateway":   `{"version":1,"subnet":"10.213.0.0/24","allocations":{"a":"10.213.0.1"}}`,
		"broadcast": `{"version":1,"subnet":"10.213.0.0/24","allocations":{"a":"10.213.0.255"}}`,
		"duplicate": `{"version":1,"subnet":"10.213.0.0/24","allocations":{"a":"10.213.0.9","b":"10.213.0.9"}}`,
	} {
		os.WriteFile(path, []byte(content), 0o600)
		if _, err := loadIPAM(path, subnet); !errors.Is(err, ErrFailedPrecondition) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// An empty table in another subnet is simply replaced.
	os.WriteFile(path, []byte(`{"version":1,"subnet":"10.9.0.0/24","allocations":{}}`), 0o600)
	if _, err := loadIPAM(path, subnet); err != nil {
		t.Errorf("empty table of another subnet: %v", err)
	}
}

// TestAllocatorConcurrent: many goroutines at once get distinct
// addresses, all persisted, with fewer writes than requests.
func TestAllocatorConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), ipamFile)
	subnet := netip.MustParsePrefix("10.213.0.0/24")
	a := newAllocator(path, newIPAMState(subnet))
	defer a.stop()
	const n = 253
	addrs := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { addrs[i], _, errs[i] = a.allocate(fmt.Sprint("t", i)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	for _, ad := range addrs {
		if seen[ad] || !subnet.Contains(ad) {
			t.Errorf("bad or duplicate %s", ad)
		}
		seen[ad] = true
	}
	if _, _, err := a.allocate("one-more"); !errors.Is(err, ErrSubnetExhausted) {
		t.Errorf("254th allocation: %v", err)
	}
	if got := len(a.list()); got != n {
		t.Errorf("list has %d", got)
	}
	st, err := loadIPAM(path, subnet)
	if err != nil || len(st.byTask) != n {
		t.Fatalf("persisted %d allocations, %v", len(st.byTask), err)
	}
}

// TestAllocatorWriteFailure: a failed write undoes the batch.
func TestAllocatorWriteFailure(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "missing-dir", ipamFile)
	a := newAllocator(path, newIPAMState(netip.MustParsePrefix("10.213.0.0/24")))
	defer a.stop()
	if _, _, err := a.allocate("t1"); err == nil || !strings.Contains(err.Error(), "persist") {
		t.Fatalf("allocate with an unwritable state dir: %v", err)
	}
	if len(a.list()) != 0 {
		t.Errorf("list = %v", a.list())
	}
	os.Mkdir(filepath.Join(dir, "missing-dir"), 0o755)
	if ad, _, err := a.allocate("t1"); err != nil || ad.String() != "10.213.0.2" {
		t.Errorf("allocate after fixing the dir: %s %v", ad, err)
	}
}

func TestVethName(t *testing.T) {
	a, b := vethName("task-1"), vethName("task-2")
	if a == b || len(a) > 15 || !isVethName(a) || a != vethName("task-1") {
		t.Errorf("vethName: %q %q", a, b)
	}
	for _, n := range []string{"shoal0", "eth0", "sh0123456789aZ", "sh0123456789abc"} {
		if isVethName(n) {
			t.Errorf("isVethName(%q)", n)
		}
	}
	if m := taskMAC(netip.MustParseAddr("10.213.0.5")).String(); m != "02:53:0a:d5:00:05" {
		t.Errorf("taskMAC = %s", m)
	}
}
