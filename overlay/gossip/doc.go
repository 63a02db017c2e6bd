// Package gossip runs cluster membership over hashicorp/memberlist for Shoal
// nodes: liveness (alive/suspect/dead/left) as seen by the SWIM protocol,
// encrypted with keys the managers hand out on the session, and small
// "hints" (endpoint-change notices) broadcast to every member.
//
// Gossip is never the source of truth: raft decides. The wiring uses it for
//   - liveness corroboration on the leader (dispatcher asks State(nodeID)),
//   - hints that let peers program a new endpoint before the next
//     dispatcher delivery (Broadcast / Config.OnHint).
//
// Usage:
//
//	n, err := gossip.New(gossip.Config{NodeID: id, BindAddr: "0.0.0.0",
//	    AdvertiseAddr: ip, Keys: keys, Logger: log, OnEvent: f, OnHint: h})
//	err = n.Start()
//	_, err = n.Join(peers)         // "host:port" of other nodes
//	err = n.SetKeys(newKeys)       // newest first; rotation without partition
//	n.Members()                    // []Member with State
//	n.Broadcast(hint)              // <= MaxHintSize bytes
//	n.Leave(time.Second); n.Shutdown()
//
// Keys: each key is 16, 24 or 32 bytes (Shoal uses 32). keys[0] is the
// primary key used to encrypt; every key in the list is accepted for
// decryption, so a rotation is: managers prepend a new key (keeping at most
// 2), every node calls SetKeys when it receives the new list; until all
// nodes have it, the old key still decrypts. Incoming and outgoing
// encryption are enforced: a message from a node without a valid key is
// dropped by memberlist and never reaches membership or the hint handler.
//
// Tuning: see tuning.go (DefaultTuning) and bench_test.go for the figures.
package gossip
