// Package gossipkeys plans the cluster's gossip keys and runs the
// leader-side timer that drops superseded ones.
//
// The keys live in raft (Cluster.gossip_keys, newest first) and reach every
// node on its dispatcher session. A rotation — `cluster update
// --rotate-gossip-key`, or the one RemoveNode commits in the same raft
// entry as the removal — prepends a new key and keeps the older ones
// (Rotate), so a node that has not yet received one rotation, or two, is
// still understood by every other node. Nodes encrypt with the oldest key
// of their list and accept them all (overlay/gossip), so nobody switches
// to the new key before everybody accepts it.
//
// The Dropper (leader only, Run(ctx)) watches the cluster object: after
// each rotation it waits the grace period (Grace: twice the time the
// dispatcher takes to mark a silent node down, at least MinGrace) and then
// drops every key older than that rotation's (Drop), in one raft entry.
// From then on the keys a removed node held decrypt nothing and its gossip
// is ignored by every node. The timer lives in memory and survives
// nothing: a new leader that finds more than one key starts a full grace
// period for them, so a pending drop is finished late, never lost.
//
//	keys, err := gossipkeys.Rotate(c.GetGossipKeys())   // inside a store.Update
//	go gossipkeys.NewDropper(store, log).Run(ctx)        // while leading
package gossipkeys
