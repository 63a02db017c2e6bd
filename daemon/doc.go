// Package daemon is the one ordered constructor of a node process: it turns
// `shoal init`, `shoal join`, `shoal daemon` and `shoal dev` into a running
// node — credentials, state file, the manager (when the node's certificate
// says manager) and the agent — and reacts to role changes (promote/demote)
// by renewing the certificate and starting or stopping the manager.
//
// The data dir's layout and node.json are the datadir package's; the
// manager builds its bootstrap objects (manager.NewBootstrap). A node
// started with --no-executor runs agent/nullexec instead of the container
// executor (Options.NoExecutor); Options.Seams are for tests only.
//
// The agent side's network data plane is an overlay.Manager on the node's
// advertise address; when that address cannot carry VXLAN (loopback, as
// `shoal dev` advertises 127.0.0.1, or no interface holds it) the Manager
// runs bridge-only (overlay.Config.BridgeOnly): bridge and host networks,
// names, VIPs and host-mode ports work, tasks on overlay networks are
// rejected, and no gossip hints are sent or taken. `shoal dev` prints how
// to try a bridge network (devHint).
//
// While a node is a manager, its data dir's audit.log (JSON lines, 0600)
// receives the audit records of the execs it relays (manager/opsapi); the
// agent serves AgentAPI.Exec through the libcontainer runtime (exec.go).
//
// Every node process runs idlemem: once it is idle (little allocated in
// 5 s) with heap still reclaimable, that heap goes back to the kernel, and
// so do the OS threads and grown goroutine stacks a burst left, so an idle
// node's RSS follows what it holds rather than its last burst.
package daemon
