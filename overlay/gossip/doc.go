// Package gossip runs cluster membership over hashicorp/memberlist for Shoal
// nodes: liveness (alive/suspect/dead/left) as seen by the SWIM protocol,
// encrypted with keys the managers hand out on the session, and small
// "hints" (endpoint-change notices) broadcast to every member.
//
// Gossip is never the source of truth: raft decides. The wiring uses it for
//   - liveness corroboration on the leader (dispatcher asks State(nodeID)),
//   - hints that let peers program a new endpoint before the next
//     dispatcher delivery (SendHint / Config.OnHint).
//
// Usage:
//
//	n, err := gossip.New(gossip.Config{NodeID: id, BindAddr: "0.0.0.0",
//	    AdvertiseAddr: ip, Keys: keys, Logger: log, OnEvent: f, OnHint: h})
//	err = n.Start()
//	_, err = n.Join(peers)         // "host:port" of other nodes
//	err = n.SetKeys(newKeys)       // newest first; rotation without partition
//	n.Members()                    // []Member with State
//	n.SendHint(hint)               // <= MaxHintSize bytes
//	n.Leave(time.Second); n.Shutdown()
//
// Keys: each key is 16, 24 or 32 bytes (Shoal uses 32). Every key in the
// list is accepted for decryption and the node encrypts with the oldest
// one. The managers (manager/gossipkeys) rotate by prepending a new key
// and keeping the older ones, and drop the older ones a grace period
// later: so every node accepts a new key before any node encrypts with
// it, and a node that missed one rotation, or two in a row, still
// understands and is understood by the others. After the drop, a node
// holding only dropped keys (a removed node) is ignored by everyone.
// Incoming and outgoing encryption are enforced: a message from a node
// without a valid key is dropped by memberlist and never reaches
// membership or the hint handler.
//
// Hints (hints.go): memberlist does not tell a delegate who sent a user
// message, so hints do not travel as memberlist messages. SendHint seals
// the hint (AES-GCM with the current key, the sender's node id inside)
// into a packet of its own, sent from the node's gossip socket straight to
// up to MaxDirectHints alive members; the transport (memberlist's
// NetTransport, wrapped) takes those packets out before memberlist sees
// them. A hint is handed to OnHint with its Sender only if it opens with
// an installed key and the packet's source is the gossip address of the
// alive member it names; anything else — and any memberlist user message —
// is dropped and counted (HintsRejected). (UDP sources can be spoofed by
// a key holder on the same link; the binding stops a key holder from
// using its own socket to speak for another member.)
//
// States: memberlist v0.6.0 tells delegates only join/update/leave, and
// leave is the same call for dead and left nodes (Node.State is never
// filled in). So Members/State come from the event delegate: alive on
// join/update; on leave, "left" if the node had announced it was leaving
// (Leave sets its meta to "leaving" and pushes it out first), else "dead".
// Suspicion is not visible through memberlist's public API: a suspect
// member shows alive until it is declared dead (StateSuspect is kept in
// the API for a later memberlist).
//
// Members' node structs are only read inside memberlist's callbacks
// (reading memberlist.Members() results later races with its updates).
//
// Tuning: see tuning.go (DefaultTuning, with the measurements that chose
// it) and bench_test.go (go test -run '^$' -bench FailureDetection
// -benchtime=2x ./overlay/gossip/).
package gossip
