package gossip

// MaxDirectHints bounds the members SendHint sends a hint to directly.
const MaxDirectHints = 64

// SendHint queues hint for gossip as Broadcast does and also sends it at
// once, best effort (one UDP packet, encrypted like all gossip), to up to
// MaxDirectHints other members, so that they have it within a round trip
// rather than at the next gossip interval. Receivers may get a hint more
// than once: hints must be idempotent.
func (n *Node) SendHint(hint []byte) error {
	if err := n.Broadcast(hint); err != nil {
		return err
	}
	msg := make([]byte, 0, len(n.cfg.NodeID)+len(hint)+1)
	msg = append(msg, byte(len(n.cfg.NodeID)))
	msg = append(msg, n.cfg.NodeID...)
	msg = append(msg, hint...)
	sent := 0
	for _, m := range n.ml.Members() {
		if m.Name == n.cfg.NodeID {
			continue
		}
		if sent == MaxDirectHints {
			break
		}
		if err := n.ml.SendBestEffort(m, msg); err != nil {
			n.log.Debug("sending a hint", "to", m.Name, "err", err)
		}
		sent++
	}
	return nil
}
