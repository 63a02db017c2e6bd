package overlay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// vxlanFrame builds a VXLAN packet (the UDP payload) carrying an
// Ethernet/IPv4/UDP frame from src to dst:dport with payload.
func vxlanFrame(vni uint32, dstMAC net.HardwareAddr, src, dst netip.Addr, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+14+20+8+len(payload))
	b[0] = 0x08 // VNI present
	binary.BigEndian.PutUint32(b[4:], vni<<8)
	b = append(b, dstMAC...)
	b = append(b, 0x02, 0x00, 0x5e, 0x00, 0x00, 0x66) // any source MAC
	b = append(b, 0x08, 0x00)
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	b = append(b, ip...)
	udp := make([]byte, 8) // checksum 0: none (IPv4)
	binary.BigEndian.PutUint16(udp[0:], 5555)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	b = append(b, udp...)
	return append(b, payload...)
}

// TestTaskCannotInjectVXLAN: a task with egress through its node (masqueraded
// onto the node's address, which every peer's VXLAN filter accepts) must not
// be able to hand a peer a VXLAN packet of its own making: it would inject
// frames into any overlay network, its own or not, with any source. The
// forged frame is addressed to a task on host 2; nothing may reach it, while
// host 1's own tunnel to host 2 still carries traffic.
func TestTaskCannotInjectVXLAN(t *testing.T) {
	h := newHarness(t)
	h1, h2 := h.host(1), h.host(2)
	m1, m2 := h.manager(h1, 1), h.manager(h2, 2)
	n := testNet("netj", 4710, "10.78.0.0/24", false)
	st := []*shoalv1.NetworkState{{Network: n, Endpoints: []*shoalv1.Endpoint{ep("j1", "10.78.0.2", 1), ep("j2", "10.78.0.3", 2)}}}
	for _, m := range []*Manager{m1, m2} {
		if err := m.Reconcile(bg, st); err != nil {
			t.Fatal(err)
		}
	}
	t1, p1 := h.task("j1")
	t2, p2 := h.task("j2")
	rogue, _ := h.task("jr")
	nodeLocal(t, h1, rogue, 1, 9)
	if _, err := m1.Attach(bg, p1, att(n, "10.78.0.2"), n); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Attach(bg, p2, att(n, "10.78.0.3"), n); err != nil {
		t.Fatal(err)
	}
	var pc net.PacketConn
	var err error
	inNS(t, t2, func() { pc, err = net.ListenPacket("udp4", "10.78.0.3:7010") })
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	got := make(chan string, 16)
	go func() {
		buf := make([]byte, 1500)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				close(got)
				return
			}
			got <- from.String() + " " + string(buf[:k])
		}
	}()

	// The tunnel works: host 1's task reaches host 2's over it. UDP is
	// best effort (the first datagram may go while the task resolves its
	// peer), so send again until one arrives.
	deadline := time.After(10 * time.Second)
	resend := time.NewTicker(250 * time.Millisecond)
	defer resend.Stop()
	sendUDP(t, t1, "10.78.0.3:7010", 1)
tunnel:
	for {
		select {
		case m := <-got:
			t.Logf("through the tunnel: %s", m)
			break tunnel
		case <-resend.C:
			sendUDP(t, t1, "10.78.0.3:7010", 1)
		case <-deadline:
			t.Fatal("host 1's task never reached host 2's over the overlay")
		}
	}

	// The rogue task (no overlay network) forges VXLAN to host 2.
	pkt := vxlanFrame(4710, mustMAC(t, macOf("10.78.0.3")), netip.MustParseAddr("10.78.0.66"), netip.MustParseAddr("10.78.0.3"), 7010, []byte("injected"))
	inNS(t, rogue, func() {
		c, err := net.Dial("udp4", vtep(2).String()+":4789")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for range 5 {
			c.Write(pkt)
		}
	})
	// Then a datagram through the tunnel as a marker: whatever the forged
	// packets did has happened by the time it arrives. (Datagrams of the
	// check above may still arrive first: only "marker" ends the wait.)
	inNS(t, t1, func() {
		c, err := net.Dial("udp4", "10.78.0.3:7010")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("marker"))
	})
	markerDeadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-got:
			if strings.HasSuffix(m, "injected") {
				t.Fatalf("a task without the network injected a frame into it through host 2's VXLAN: %s", m)
			}
			if strings.HasSuffix(m, "marker") {
				return
			}
		case <-markerDeadline:
			t.Fatal("the marker never arrived")
		}
	}
}

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
