package vip

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/netnsrun"
)

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

// inNetNS runs fn on a locked thread inside the namespace at path.
func inNetNS(path string, fn func() error) error { return netnsrun.RunPath(path, fn) }

type topo struct {
	client   string   // netns path of the "task" that uses the VIP
	backends []string // netns paths
	addrs    []net.IP // backend addresses
}

// newTopo: a switch namespace with a bridge, a client namespace
// (192.168.250.10) and n backend namespaces (192.168.250.11…) each
// running a TCP server on :7000 that first sends its name then echoes.
func newTopo(t testing.TB, n int) *topo {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b := make([]byte, 3)
	rand.Read(b)
	pfx := "ovvip" + hex.EncodeToString(b)
	var names []string
	add := func(name string) string {
		ipCmd(t, "netns", "add", name)
		names = append(names, name)
		ipCmd(t, "-n", name, "link", "set", "lo", "up")
		return "/run/netns/" + name
	}
	t.Cleanup(func() {
		for _, nm := range names {
			exec.Command("ip", "netns", "del", nm).Run()
		}
	})
	sw := pfx + "-sw"
	add(sw)
	ipCmd(t, "-n", sw, "link", "add", "br0", "type", "bridge")
	ipCmd(t, "-n", sw, "link", "set", "br0", "up")
	attach := func(ns string, i int, addr string) {
		ipCmd(t, "-n", sw, "link", "add", fmt.Sprintf("p%d", i), "type", "veth", "peer", "name", "eth0", "netns", ns)
		ipCmd(t, "-n", sw, "link", "set", fmt.Sprintf("p%d", i), "master", "br0", "up")
		ipCmd(t, "-n", ns, "addr", "add", addr+"/24", "dev", "eth0")
		ipCmd(t, "-n", ns, "link", "set", "eth0", "up")
	}
	tp := &topo{client: add(pfx + "-c")}
	attach(pfx+"-c", 0, "192.168.250.10")
	for i := 1; i <= n; i++ {
		nm := fmt.Sprintf("%s-b%d", pfx, i)
		p := add(nm)
		addr := fmt.Sprintf("192.168.250.%d", 10+i)
		attach(nm, i, addr)
		tp.backends = append(tp.backends, p)
		tp.addrs = append(tp.addrs, net.ParseIP(addr))
		var ln net.Listener
		if err := inNetNS(p, func() (err error) { ln, err = net.Listen("tcp", ":7000"); return }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		name := fmt.Sprintf("b%d", i)
		var pc net.PacketConn
		if err := inNetNS(p, func() (err error) { pc, err = net.ListenPacket("udp", ":7001"); return }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		go func() { // UDP: answers NAME:payload
			buf := make([]byte, 1500)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo([]byte(name+":"+string(buf[:n])), from)
			}
		}()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					fmt.Fprintf(c, "%s\n", name)
					io.Copy(c, c)
				}()
			}
		}()
	}
	return tp
}

type echoConn struct {
	net.Conn
	r       *bufio.Reader
	backend string
}

func (tp *topo) dial(t testing.TB, addr string) (*echoConn, error) {
	t.Helper()
	var c net.Conn
	err := inNetNS(tp.client, func() (err error) { c, err = net.DialTimeout("tcp", addr, 5*time.Second); return })
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	ec := &echoConn{Conn: c, r: bufio.NewReader(c)}
	line, err := ec.r.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("read backend name: %w", err)
	}
	ec.backend = strings.TrimSpace(line)
	return ec, nil
}

func (ec *echoConn) echo(msg string) error {
	ec.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(ec, "%s\n", msg); err != nil {
		return err
	}
	got, err := ec.r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != msg {
		return fmt.Errorf("echo %q, got %q", msg, got)
	}
	return nil
}

const vipAddr = "192.168.250.100"

func TestVIPSpreadAndBackendRemoval(t *testing.T) {
	tp := newTopo(t, 3)
	v := []VIP{{Addr: net.ParseIP(vipAddr), Backends: tp.addrs}}
	if err := Program(tp.client, v); err != nil {
		t.Fatal(err)
	}
	if err := Program(tp.client, v); err != nil { // idempotent
		t.Fatal(err)
	}
	if n, err := RuleCount(tp.client); err != nil || n != 1 {
		t.Fatalf("rules after two Programs: %d, %v", n, err)
	}

	// New connections are spread: numgen inc over 3 backends, 9 conns.
	count := map[string]int{}
	var conns []*echoConn
	for i := 0; i < 9; i++ {
		c, err := tp.dial(t, vipAddr+":7000")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.echo(fmt.Sprintf("hello %d", i)); err != nil {
			t.Fatal(err)
		}
		count[c.backend]++
		conns = append(conns, c)
	}
	for _, b := range []string{"b1", "b2", "b3"} {
		if count[b] != 3 {
			t.Errorf("connections per backend: %v; want 3 each", count)
			break
		}
	}

	// Remove b2 (192.168.250.12): connections to b1 and b3 keep working.
	if err := Program(tp.client, []VIP{{Addr: net.ParseIP(vipAddr), Backends: []net.IP{tp.addrs[0], tp.addrs[2]}}}); err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		if c.backend == "b2" {
			continue
		}
		if err := c.echo(fmt.Sprintf("still %d", i)); err != nil {
			t.Errorf("established connection to %s after removing b2: %v", c.backend, err)
		}
	}
	// New connections only reach b1 and b3.
	for i := 0; i < 6; i++ {
		c, err := tp.dial(t, vipAddr+":7000")
		if err != nil {
			t.Fatal(err)
		}
		if c.backend == "b2" {
			t.Errorf("new connection %d reached the removed backend", i)
		}
		if err := c.echo("after"); err != nil {
			t.Error(err)
		}
	}

	// No backend: refused at once, not sent anywhere.
	if err := Program(tp.client, []VIP{{Addr: net.ParseIP(vipAddr)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.dial(t, vipAddr+":7000"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connection to a VIP with no backend: %v; want connection refused", err)
	}
	if n, err := RuleCount(tp.client); err != nil || n != 1 {
		t.Errorf("rules with one empty VIP: %d, %v", n, err)
	}

	if err := Clear(tp.client); err != nil {
		t.Fatal(err)
	}
	if err := Clear(tp.client); err != nil { // idempotent
		t.Fatal(err)
	}
	if n, err := RuleCount(tp.client); err != nil || n != 0 {
		t.Errorf("rules after Clear: %d, %v", n, err)
	}
}

func TestProgramRejectsBadInput(t *testing.T) {
	for _, v := range [][]VIP{
		{{Addr: net.ParseIP("fd00::1")}},
		{{Addr: net.ParseIP("10.0.0.1"), Backends: []net.IP{net.ParseIP("fd00::2")}}},
		{{Addr: net.ParseIP("10.0.0.1")}, {Addr: net.ParseIP("10.0.0.1")}},
	} {
		if _, err := normalise(v); err == nil {
			t.Errorf("normalise(%v): no error", v)
		}
	}
}

// Many VIPs in one transaction: the acks must not overflow the socket
// (ENOBUFS was seen with 100 VIPs before the buffer was raised).
func TestProgramManyVIPs(t *testing.T) {
	tp := newTopo(t, 0)
	var vs []VIP
	for v := 0; v < 500; v++ {
		x := VIP{Addr: net.IPv4(10, 9, byte(v/250), byte(v%250+1))}
		for i := 0; i < 10; i++ {
			x.Backends = append(x.Backends, net.IPv4(10, 10, byte(v%250), byte(i+1)))
		}
		vs = append(vs, x)
	}
	if err := Program(tp.client, vs); err != nil {
		t.Fatal(err)
	}
	if n, err := RuleCount(tp.client); err != nil || n != 500 {
		t.Fatalf("rules: %d, %v; want 500", n, err)
	}
}

// UDP through the VIP: replies come back (conntrack un-NATs the source,
// so a connected socket accepts them) and flows are spread.
func TestVIPUDP(t *testing.T) {
	tp := newTopo(t, 2)
	if err := Program(tp.client, []VIP{{Addr: net.ParseIP(vipAddr), Backends: tp.addrs}}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for i := 0; i < 4; i++ {
		var c net.Conn
		if err := inNetNS(tp.client, func() (err error) { c, err = net.Dial("udp", vipAddr+":7001"); return }); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := fmt.Sprintf("ping%d", i)
		var got string
		deadline := time.Now().Add(10 * time.Second)
		for got == "" && time.Now().Before(deadline) { // UDP: resend until answered
			c.Write([]byte(msg))
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			buf := make([]byte, 100)
			if n, err := c.Read(buf); err == nil {
				got = string(buf[:n])
			}
		}
		name, payload, ok := strings.Cut(got, ":")
		if !ok || payload != msg {
			t.Fatalf("UDP reply %q", got)
		}
		seen[name]++
	}
	if seen["b1"] == 0 || seen["b2"] == 0 {
		t.Errorf("UDP flows per backend: %v", seen)
	}
}
