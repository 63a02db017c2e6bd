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
