package datadir

import "path/filepath"

// Dir is the root of a node's data dir (--data-dir).
type Dir string

// NodeFile is node.json, the node's state (Node).
func (d Dir) NodeFile() string { return filepath.Join(string(d), "node.json") }

// Certs holds the node's credentials (ca.crt, node.crt, node.key).
func (d Dir) Certs() string { return filepath.Join(string(d), "certs") }

// Admin holds the admin credentials `shoal init` writes.
func (d Dir) Admin() string { return filepath.Join(string(d), "admin") }

// BootstrapFile holds init's first raft objects until raft commits them.
func (d Dir) BootstrapFile() string { return filepath.Join(string(d), "bootstrap.pb") }

// Raft is a manager's raft directory.
func (d Dir) Raft() string { return filepath.Join(string(d), "raft") }

// Agent is the executor's directory (task state, task dirs, logs).
func (d Dir) Agent() string { return filepath.Join(string(d), "agent") }

// Images is the image store's directory.
func (d Dir) Images() string { return filepath.Join(string(d), "images") }

// Runtime is the container runtime's state directory.
func (d Dir) Runtime() string { return filepath.Join(string(d), "runtime") }

// Network is the node network's state directory.
func (d Dir) Network() string { return filepath.Join(string(d), "network") }
