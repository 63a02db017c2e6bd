package gossip

import "fmt"

// MaxDirectHints bounds the members SendHint sends a hint to.
const MaxDirectHints = 64

// SendHint sends hint at once, best effort, to up to MaxDirectHints other
// alive members: one encrypted UDP packet each from this node's gossip
// socket, so that a receiver can check the sender (see Sender). Receivers
// may get a hint more than once: hints must be idempotent. Members beyond
// the bound learn the change from the managers.
func (n *Node) SendHint(hint []byte) error {
	if len(hint) == 0 || len(hint) > MaxHintSize {
		return fmt.Errorf("gossip: hint of %d bytes, want 1..%d", len(hint), MaxHintSize)
	}
	pkt, err := n.sealHint(hint)
	if err != nil {
		return fmt.Errorf("gossip: sealing a hint: %w", err)
	}
	n.mu.Lock()
	var to []string
	for id, m := range n.members {
		if id != n.cfg.NodeID && m.State == StateAlive && len(to) < MaxDirectHints {
			to = append(to, m.Addr)
		}
	}
	n.mu.Unlock()
	for _, addr := range to {
		if err := n.transport.sendHintPacket(pkt, addr); err != nil {
			n.log.Debug("sending a hint", "to", addr, "err", err)
		}
	}
	return nil
}
