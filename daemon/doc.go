// Package daemon is the one ordered constructor of a node process: it turns
// `shoal init`, `shoal join`, `shoal daemon` and `shoal dev` into a running
// node — credentials, state file, the manager (when the node's certificate
// says manager) and the agent — and reacts to role changes (promote/demote)
// by renewing the certificate and starting or stopping the manager.
//
// Data dir layout: node.json (State), certs/{ca.crt,node.crt,node.key},
// admin/{ca.crt,admin.crt,admin.key} (init only), raft/ (managers),
// bootstrap.pb (init, until the cluster object is committed).
package daemon
