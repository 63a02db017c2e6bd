package dns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"reflect"
	"sort"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// newNetNS makes a named namespace (removed at cleanup) and returns its path.
func newNetNS(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b := make([]byte, 4)
	rand.Read(b)
	name := "ovdns-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return "/run/netns/" + name
}

// query asks addr (UDP or TCP) from inside nsPath.
func query(t testing.TB, nsPath, network, addr, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	var conn net.Conn
	err := inNetNS(nsPath, func() error {
		var err error
		conn, err = net.DialTimeout(network, addr, 2*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s in %s: %v", addr, nsPath, err)
	}
	defer conn.Close()
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	c := &mdns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.ExchangeWithConn(m, &mdns.Conn{Conn: conn})
	if err != nil {
		t.Fatalf("query %s %s: %v", network, name, err)
	}
	return r
}

func answerIPs(r *mdns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch a := rr.(type) {
		case *mdns.A:
			out = append(out, a.A.String())
		case *mdns.AAAA:
			out = append(out, a.AAAA.String())
		}
	}
	sort.Strings(out)
	return out
}

// startResolver runs a fake upstream on 127.0.0.1:53 inside its own
// namespace, answering every A query with 192.0.2.53.
func startResolver(t *testing.T) string {
	ns := newNetNS(t)
	var pc net.PacketConn
	err := inNetNS(ns, func() error {
		if err := exec.Command("ip", "-n", ns[len("/run/netns/"):], "link", "set", "lo", "up").Run(); err != nil {
			return err
		}
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:53")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.53")})
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return ns
}

func TestServeInNetNS(t *testing.T) {
	taskNS := newNetNS(t)
	resNS := startResolver(t)
	view := NewView()
	view.Update(testStates())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := Serve(ctx, taskNS, []string{"n1"}, view, Forwarders{Servers: []string{"127.0.0.1"}, NetNSPath: resNS, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	for _, proto := range []string{"udp", "tcp"} {
		for _, c := range []struct {
			name  string
			rcode int
			want  []string
		}{
			{"web", mdns.RcodeSuccess, []string{"10.1.0.2"}},                     // vip mode
			{"db", mdns.RcodeSuccess, []string{"10.1.0.20", "10.1.0.21"}},        // dnsrr
			{"tasks.web", mdns.RcodeSuccess, []string{"10.1.0.10", "10.1.0.11"}}, // all tasks
			{"www", mdns.RcodeSuccess, []string{"10.1.0.2"}},                     // service alias
			{"front", mdns.RcodeSuccess, []string{"10.1.0.11"}},                  // endpoint alias
			{"secret", mdns.RcodeNameError, nil},                                 // other network
			{"nosuch", mdns.RcodeNameError, nil},
			{"tasks.nosuch", mdns.RcodeNameError, nil},
			{"example.test", mdns.RcodeSuccess, []string{"192.0.2.53"}}, // forwarded
		} {
			r := query(t, taskNS, proto, Address, c.name, mdns.TypeA)
			if r.Rcode != c.rcode || !reflect.DeepEqual(answerIPs(r), c.want) {
				t.Errorf("%s %s: rcode %s answers %v; want %s %v", proto, c.name,
					mdns.RcodeToString[r.Rcode], answerIPs(r), mdns.RcodeToString[c.rcode], c.want)
			}
			for _, rr := range r.Answer {
				if c.name != "example.test" && rr.Header().Ttl != TTL {
					t.Errorf("%s: TTL %d", c.name, rr.Header().Ttl)
				}
			}
		}
	}
	// A cluster name with no AAAA: NOERROR, no data (not NXDOMAIN).
	if r := query(t, taskNS, "udp", Address, "web", mdns.TypeAAAA); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("AAAA web: %v", r)
	}

	// An update is seen by the next query.
	st := testStates()
	st[0].Endpoints = append(st[0].Endpoints, ep("db", "10.1.0.22/24"))
	view.Update(st)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := answerIPs(query(t, taskNS, "udp", Address, "db", mdns.TypeA))
		if reflect.DeepEqual(got, []string{"10.1.0.20", "10.1.0.21", "10.1.0.22"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("db after update: %v", got)
		}
	}
	// Removing the service: NXDOMAIN.
	view.Update([]*shoalv1.NetworkState{st[1]})
	if r := query(t, taskNS, "udp", Address, "db", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Errorf("db after removal: %v", r)
	}

	// Close releases the sockets: a second server can bind.
	srv.Close()
	srv2, err := Serve(ctx, taskNS, []string{"n2"}, view, Forwarders{Servers: []string{"127.0.0.1"}, NetNSPath: resNS})
	if err != nil {
		t.Fatalf("serve again after Close: %v", err)
	}
	defer srv2.Close()
	if got := answerIPs(query(t, taskNS, "tcp", Address, "secret", mdns.TypeA)); !reflect.DeepEqual(got, []string{"10.2.0.2"}) {
		t.Errorf("secret on n2: %v", got)
	}
}

func TestForwardTimeout(t *testing.T) {
	taskNS := newNetNS(t)
	emptyNS := newNetNS(t) // nobody answers there
	view := NewView()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := Serve(ctx, taskNS, nil, view, Forwarders{Servers: []string{"127.0.0.1:53"}, NetNSPath: emptyNS, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if r := query(t, taskNS, "udp", Address, "example.test", mdns.TypeA); r.Rcode != mdns.RcodeServerFailure {
		t.Errorf("unreachable upstream: %s", mdns.RcodeToString[r.Rcode])
	}
	// Cancelling ctx stops the server: its address can be bound again.
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		srv2, err := Serve(context.Background(), taskNS, nil, view, Forwarders{Servers: []string{"127.0.0.1:1"}})
		if err == nil {
			srv2.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("address still taken after ctx cancel: %v", err)
		}
	}
}

// A large answer over UDP is truncated (TC); over TCP it is complete.
func TestTruncation(t *testing.T) {
	taskNS := newNetNS(t)
	view := NewView()
	var eps []*shoalv1.Endpoint
	for i := 1; i <= 100; i++ {
		eps = append(eps, ep("big", fmt.Sprintf("10.3.0.%d/24", i)))
	}
	view.Update([]*shoalv1.NetworkState{netState("n3", []*shoalv1.ServiceVIPState{{ServiceName: "big", EndpointMode: "dnsrr"}}, eps...)})
	srv, err := Serve(context.Background(), taskNS, []string{"n3"}, view, Forwarders{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	r := query(t, taskNS, "udp", Address, "big", mdns.TypeA)
	if !r.Truncated || len(r.Answer) >= 100 {
		t.Errorf("UDP: truncated %v with %d answers", r.Truncated, len(r.Answer))
	}
	if r := query(t, taskNS, "tcp", Address, "big", mdns.TypeA); r.Truncated || len(r.Answer) != 100 {
		t.Errorf("TCP: truncated %v with %d answers", r.Truncated, len(r.Answer))
	}
}

// Updates racing with queries (run with -race).
func TestConcurrentUpdates(t *testing.T) {
	taskNS := newNetNS(t)
	view := NewView()
	view.Update(testStates())
	srv, err := Serve(context.Background(), taskNS, []string{"n1"}, view, Forwarders{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			view.Update(testStates())
		}
	}()
	for i := 0; i < 50; i++ {
		if got := answerIPs(query(t, taskNS, "udp", Address, "web", mdns.TypeA)); !reflect.DeepEqual(got, []string{"10.1.0.2"}) {
			t.Fatalf("web: %v", got)
		}
	}
	<-done
}

// TestForwardBounded: a task flooding the server with names to forward
// while the upstream never answers gets SERVFAIL at once beyond
// MaxForwards queries in flight, instead of the agent holding one
// goroutine and one upstream socket per query for the whole timeout
// (unbounded: a task could exhaust the agent's memory and sockets).
func TestForwardBounded(t *testing.T) {
	taskNS := newNetNS(t)
	holeNS := newNetNS(t)
	// An upstream that reads nothing and answers nothing.
	var hole net.PacketConn
	if err := inNetNS(holeNS, func() error {
		if err := exec.Command("ip", "-n", holeNS[len("/run/netns/"):], "link", "set", "lo", "up").Run(); err != nil {
			return err
		}
		var err error
		hole, err = net.ListenPacket("udp", "127.0.0.1:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	srv, err := Serve(context.Background(), taskNS, nil, NewView(), Forwarders{Servers: []string{"127.0.0.1:53"}, NetNSPath: holeNS, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var conn net.Conn
	if err := inNetNS(taskNS, func() (err error) { conn, err = net.Dial("udp", Address); return err }); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 4 * MaxForwards
	for i := 0; i < n; i++ {
		m := new(mdns.Msg)
		m.SetQuestion(fmt.Sprintf("q%d.example.test.", i), mdns.TypeA)
		b, _ := m.Pack()
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	// At least n-MaxForwards SERVFAILs come back long before the minute.
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 512)
	got := 0
	for got < n-MaxForwards {
		k, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("%d SERVFAILs of the %d expected: %v", got, n-MaxForwards, err)
		}
		var r mdns.Msg
		if r.Unpack(buf[:k]) == nil && r.Rcode == mdns.RcodeServerFailure {
			got++
		}
	}
}

// TestInternalNotForwarded: a task on an --internal network has no
// egress, so the server must not forward names outside the cluster for
// it (the agent's query to the node's resolvers carries the name out:
// DNS exfiltration); its cluster names still answer. A task on a normal
// network still gets forwarded answers.
func TestInternalNotForwarded(t *testing.T) {
	resNS := startResolver(t)
	view := NewView()
	priv := netState("priv", []*shoalv1.ServiceVIPState{{ServiceName: "db", EndpointMode: "dnsrr"}}, ep("db", "10.3.0.10/24"))
	priv.Network.Spec = &shoalv1.NetworkSpec{Internal: true}
	view.Update(append(testStates(), priv))
	fwd := Forwarders{Servers: []string{"127.0.0.1"}, NetNSPath: resNS, Timeout: 2 * time.Second}
	for _, c := range []struct {
		nets  []string
		name  string
		rcode int
		want  []string
	}{
		{[]string{"priv"}, "leak.example.test", mdns.RcodeRefused, nil},
		{[]string{"n1", "priv"}, "leak.example.test", mdns.RcodeRefused, nil},
		{[]string{"unknown"}, "leak.example.test", mdns.RcodeRefused, nil}, // not delivered yet: closed
		{[]string{"priv"}, "db", mdns.RcodeSuccess, []string{"10.3.0.10"}},
		{[]string{"n1"}, "ok.example.test", mdns.RcodeSuccess, []string{"192.0.2.53"}},
	} {
		taskNS := newNetNS(t)
		srv, err := Serve(context.Background(), taskNS, c.nets, view, fwd)
		if err != nil {
			t.Fatal(err)
		}
		r := query(t, taskNS, "udp", Address, c.name, mdns.TypeA)
		srv.Close()
		if r.Rcode != c.rcode || !reflect.DeepEqual(answerIPs(r), c.want) {
			t.Errorf("%v %s: %s %v, want %s %v", c.nets, c.name, mdns.RcodeToString[r.Rcode], answerIPs(r), mdns.RcodeToString[c.rcode], c.want)
		}
	}
}
