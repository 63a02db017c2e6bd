// Package datadir owns the layout of a node's data dir and its state file,
// node.json. Every reader and writer of the data dir (the daemon, the
// client, the CLI, the e2e harness) takes paths and the node.json shape from
// here, so the layout is written down once:
//
//	node.json            Node: identity, addresses, managers, agent options
//	certs/               node credentials: ca.crt, node.crt, node.key
//	admin/               admin credentials (init only): ca.crt, admin.crt, admin.key
//	bootstrap.pb         init's first raft objects, until they are committed
//	raft/                managers: raft log, stable store, snapshots
//	agent/               the executor's state (state.db, task dirs, logs)
//	images/              the image and layer store
//	runtime/             libcontainer state and shims
//	network/             the node network's state
//
// node.json is written atomically (WriteFileAtomic): a crash at any point
// leaves the old file or the new one under the final name, never a part.
package datadir
