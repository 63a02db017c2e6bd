package overlay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netns"

	"github.com/shoal-dev/shoal/overlay/dns"
	"github.com/shoal-dev/shoal/overlay/vip"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

func discNetNS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b := make([]byte, 4)
	rand.Read(b)
	name := "ovdisc-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return "/run/netns/" + name
}

// discQuery asks 127.0.0.11 over TCP from inside ns; rcode -1 when
// nothing listens.
func discQuery(t *testing.T, ns, name string) (rcode int, ips []string) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromPath(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		t.Fatal(err)
	}
	conn, derr := net.DialTimeout("tcp", dns.Address, 2*time.Second)
	if err := netns.Set(orig); err != nil {
		panic(err)
	}
	if derr != nil {
		return -1, nil
	}
	defer conn.Close()
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), mdns.TypeA)
	c := &mdns.Client{Net: "tcp", Timeout: 5 * time.Second}
	r, _, err := c.ExchangeWithConn(m, &mdns.Conn{Conn: conn})
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*mdns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	sort.Strings(ips)
	return r.Rcode, ips
}

func discStates(webBackends ...string) []*shoalv1.NetworkState {
	n1 := &shoalv1.NetworkState{Network: &shoalv1.Network{Meta: &shoalv1.Meta{Id: "n1"}},
		Vips: []*shoalv1.ServiceVIPState{
			{ServiceId: "s1", ServiceName: "web", Address: "10.90.0.2/24", EndpointMode: "vip"},
			{ServiceId: "s2", ServiceName: "db", EndpointMode: "dnsrr"},
		},
		Endpoints: []*shoalv1.Endpoint{
			{TaskId: "w9", ServiceId: "s1", ServiceName: "web", Address: "10.90.0.9/24", State: shoalv1.TaskState_TASK_STATE_STARTING},
			{TaskId: "d1", ServiceId: "s2", ServiceName: "db", Address: "10.90.0.6/24", State: shoalv1.TaskState_TASK_STATE_RUNNING},
		}}
	for i, b := range webBackends {
		n1.Endpoints = append(n1.Endpoints, &shoalv1.Endpoint{TaskId: fmt.Sprint("w", i), ServiceId: "s1", ServiceName: "web",
			Address: b + "/24", State: shoalv1.TaskState_TASK_STATE_RUNNING})
	}
	n2 := &shoalv1.NetworkState{Network: &shoalv1.Network{Meta: &shoalv1.Meta{Id: "n2"}},
		Vips: []*shoalv1.ServiceVIPState{{ServiceId: "s3", ServiceName: "other", Address: "10.91.0.2/24", EndpointMode: "vip"}},
		Endpoints: []*shoalv1.Endpoint{{TaskId: "o1", ServiceId: "s3", ServiceName: "other", Address: "10.91.0.3/24",
			State: shoalv1.TaskState_TASK_STATE_RUNNING}}}
	return []*shoalv1.NetworkState{n1, n2}
}

// TestVIPsFor: only the task's networks, only vip-mode services with an
// address, only RUNNING endpoints of that service as backends.
func TestVIPsFor(t *testing.T) {
	got := VIPsFor(discStates("10.90.0.3", "10.90.0.4"), []string{"n1"})
	if k := vipKey(got); k != "v:10.90.0.2=10.90.0.3,10.90.0.4" {
		t.Fatalf("n1: %s", k)
	}
	if k := vipKey(VIPsFor(discStates(), []string{"n1", "n2"})); k != "v:10.90.0.2=;10.91.0.2=10.91.0.3" {
		t.Fatalf("n1+n2: %s", k)
	}
	if k := vipKey(VIPsFor(discStates("10.90.0.3"), nil)); k != "v:" {
		t.Fatalf("no networks: %s", k)
	}
}

// TestDiscovery: a task's namespace answers its networks' names at
// 127.0.0.11 and holds its VIP rules; an Update changes both; Stop ends
// the server and drops the rules.
func TestDiscovery(t *testing.T) {
	ns := discNetNS(t)
	d := NewDiscovery(dns.Forwarders{Servers: []string{"127.0.0.1:1"}, Timeout: 100 * time.Millisecond}, nil)
	d.Update(discStates("10.90.0.3", "10.90.0.4"))
	if err := d.Start(context.Background(), "t1", ns, []string{"n1"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop("t1") })
	check := func(name string, wantRcode int, want string) {
		t.Helper()
		rc, ips := discQuery(t, ns, name)
		if rc != wantRcode || strings.Join(ips, " ") != want {
			t.Fatalf("%s: rcode %d %q, want %d %q", name, rc, ips, wantRcode, want)
		}
	}
	check("web", mdns.RcodeSuccess, "10.90.0.2")
	check("tasks.web", mdns.RcodeSuccess, "10.90.0.3 10.90.0.4")
	check("db", mdns.RcodeSuccess, "10.90.0.6")
	check("other", mdns.RcodeNameError, "") // another network's service
	if n, err := vip.RuleCount(ns); err != nil || n != 1 {
		t.Fatalf("vip rules: %d, %v", n, err)
	}

	d.Update(discStates("10.90.0.3"))
	check("tasks.web", mdns.RcodeSuccess, "10.90.0.3")
	if got := d.tasks["t1"].vips; got != "v:10.90.0.2=10.90.0.3" {
		t.Fatalf("programmed %s", got)
	}
	d.Update(discStates())
	check("web", mdns.RcodeSuccess, "10.90.0.2")
	if n, err := vip.RuleCount(ns); err != nil || n != 1 { // the reject rule
		t.Fatalf("vip rules with no backend: %d, %v", n, err)
	}

	// Re-adoption: Start again replaces the server.
	if err := d.Start(context.Background(), "t1", ns, []string{"n1", "n2"}); err != nil {
		t.Fatal(err)
	}
	check("other", mdns.RcodeSuccess, "10.91.0.2")
	if got := d.Tasks(); len(got) != 1 {
		t.Fatalf("tasks %q", got)
	}

	if err := d.Stop("t1"); err != nil {
		t.Fatal(err)
	}
	if rc, _ := discQuery(t, ns, "web"); rc != -1 {
		t.Fatalf("server still answers after Stop (rcode %d)", rc)
	}
	if n, err := vip.RuleCount(ns); err != nil || n != 0 {
		t.Fatalf("vip rules after Stop: %d, %v", n, err)
	}
	if err := d.Stop("t1"); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}
