package gossip

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"sync"

	"github.com/hashicorp/memberlist"
)

// Hints travel in packets of their own beside memberlist's, on the same
// UDP socket: memberlist hands a delegate a user message without saying
// which address sent it (and piggybacks it on packets of any kind), so a
// hint inside memberlist could not be bound to its sender. A hint packet
// is
//
//	hintMagic | nonce (12) | AES-GCM(key, nonce, idLen | nodeID | hint, ad = hintMagic)
//
// sealed with the key memberlist encrypts with and opened with any key of
// the keyring, like memberlist's own packets. hintMagic is no first byte
// of memberlist's (encryption versions 0 and 1, label header 244).
const hintMagic = 0xE5

// Sender is the member a hint came from: a node id whose gossip address,
// as memberlist knows it, is the packet's source.
type Sender struct {
	NodeID string
	Addr   netip.AddrPort // the packet's source: the member's gossip address
}

// sealHint builds a hint packet from this node.
func (n *Node) sealHint(hint []byte) ([]byte, error) {
	return sealHintPacket(n.keyring.GetPrimaryKey(), n.cfg.NodeID, hint)
}

// sealHintPacket seals hint from nodeID with key.
func sealHintPacket(key []byte, nodeID string, hint []byte) ([]byte, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	plain := make([]byte, 0, 1+len(nodeID)+len(hint))
	plain = append(plain, byte(len(nodeID)))
	plain = append(plain, nodeID...)
	plain = append(plain, hint...)
	out := make([]byte, 1+gcm.NonceSize(), 1+gcm.NonceSize()+len(plain)+gcm.Overhead())
	out[0] = hintMagic
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return gcm.Seal(out, out[1:], plain, out[:1]), nil
}

// openHint returns the claimed sender id and the hint of a hint packet,
// trying every installed key.
func openHint(keys [][]byte, pkt []byte) (string, []byte, error) {
	for _, k := range keys {
		gcm, err := newGCM(k)
		if err != nil {
			continue
		}
		if len(pkt) < 1+gcm.NonceSize()+gcm.Overhead() {
			return "", nil, errors.New("short hint packet")
		}
		plain, err := gcm.Open(nil, pkt[1:1+gcm.NonceSize()], pkt[1+gcm.NonceSize():], pkt[:1])
		if err != nil {
			continue
		}
		if len(plain) < 1 || int(plain[0]) == 0 || 1+int(plain[0]) >= len(plain) {
			return "", nil, errors.New("malformed hint packet")
		}
		return string(plain[1 : 1+int(plain[0])]), plain[1+int(plain[0]):], nil
	}
	return "", nil, errors.New("no key opens the hint packet")
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// receiveHint checks a hint packet and hands its hint to OnHint. A hint
// is accepted only from a member this node sees alive whose gossip
// address is the packet's source; anything else is dropped and counted
// (HintsRejected).
func (n *Node) receiveHint(p *memberlist.Packet) {
	reject := func(why string, args ...any) {
		n.rejected.Add(1)
		n.log.Debug("hint dropped: "+why, args...)
	}
	src, ok := p.From.(*net.UDPAddr)
	if !ok {
		reject("not from a UDP address", "from", p.From)
		return
	}
	from := src.AddrPort()
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	id, hint, err := openHint(n.keyring.GetKeys(), p.Buf)
	if err != nil {
		reject(err.Error(), "from", from)
		return
	}
	if id == n.cfg.NodeID {
		return
	}
	n.mu.Lock()
	m, known := n.members[id]
	n.mu.Unlock()
	if !known || m.State != StateAlive {
		reject("the claimed sender is not an alive member", "node", id, "from", from)
		return
	}
	if ap, err := netip.ParseAddrPort(m.Addr); err != nil || netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) != from {
		reject("the packet does not come from the claimed sender's gossip address", "node", id, "member_addr", m.Addr, "from", from)
		return
	}
	if n.cfg.OnHint != nil {
		n.cfg.OnHint(Sender{NodeID: id, Addr: from}, hint)
	}
}

// HintsRejected counts the hints dropped since Start: undecryptable,
// from an address that is not the claimed member's, or sent through
// memberlist's user messages (which say nothing of their sender).
func (n *Node) HintsRejected() uint64 { return n.rejected.Load() }

// hintTransport is memberlist's UDP/TCP transport with hint packets taken
// out of the packet stream (with their source address) before memberlist
// sees them.
type hintTransport struct {
	*memberlist.NetTransport
	packets chan *memberlist.Packet
	stop    chan struct{}
	once    sync.Once
	done    chan struct{}
}

// newHintTransport binds addr:port (port 0: a free port, retried as
// memberlist does) and starts relaying packets: hint packets to onHint,
// the rest to memberlist.
func newHintTransport(addr string, port int, logger *log.Logger, onHint func(*memberlist.Packet)) (*hintTransport, error) {
	limit := 1
	if port == 0 {
		limit = 10 // TCP and UDP must get the same free port: racy
	}
	var nt *memberlist.NetTransport
	var err error
	for range limit {
		if nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{addr}, BindPort: port, Logger: logger}); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("gossip: transport on %s:%d: %w", addr, port, err)
	}
	t := &hintTransport{NetTransport: nt, packets: make(chan *memberlist.Packet), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(t.done)
		for {
			select {
			case <-t.stop:
				return
			case p := <-nt.PacketCh():
				if len(p.Buf) > 0 && p.Buf[0] == hintMagic {
					onHint(p)
					continue
				}
				select {
				case t.packets <- p:
				case <-t.stop:
					return
				}
			}
		}
	}()
	return t, nil
}

// PacketCh is memberlist's packets, without the hint packets.
func (t *hintTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// Shutdown closes the sockets (the relay keeps draining meanwhile, so
// the listeners can end) and then stops the relay.
func (t *hintTransport) Shutdown() error {
	err := t.NetTransport.Shutdown()
	t.once.Do(func() { close(t.stop) })
	<-t.done
	return err
}

// sendHintPacket sends one sealed hint to addr ("host:port").
func (t *hintTransport) sendHintPacket(pkt []byte, addr string) error {
	_, err := t.WriteTo(pkt, addr)
	return err
}

var _ memberlist.NodeAwareTransport = (*hintTransport)(nil)
