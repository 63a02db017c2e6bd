// Package logbroker serves the Logs service on every manager: it finds the
// tasks a caller asks for (a service by name, id or unique id prefix, or
// task ids and prefixes) in the manager's own store, groups them by node,
// and streams their logs from each node's agent API (agent/agentapi,
// NodeStatus.agent_addr), all nodes at once, merged into one stream.
//
// It is not forwarded to the leader: any manager's view will do, and a
// slightly stale one only means a task that started a moment ago is
// missing from a non-following read.
//
// # Failing nodes
//
// A node never holds up the others:
//
//   - a node the store marks DOWN, or that has no agent address (it has
//     not connected since it was upgraded), is named in a warning at once
//     and not dialled;
//   - a node that does not answer within ReachTimeout (dial, TLS and the
//     agent's response headers, which it sends before any line) is named
//     in a warning and dropped; the others go on;
//   - a stream that breaks later (the node dies while following) is named
//     in a warning; the others go on (client keepalives notice a dead peer
//     within about 15 s).
//
// When following, a node is never given up on: one that is down is named
// once and followed again as soon as the store shows it ready (store
// watch); a stream that breaks or cannot be opened is retried with
// back-off (1 s doubling to 10 s), resuming after the last line passed on
// so that no line comes twice. The same trouble is named only once.
//
// Without follow the stream ends when every reachable node is done, and
// lines come in time order across all tasks: each agent merges its tasks
// by time, and the broker merges the nodes (logstream.MergeByTime, one
// buffered line per node). With follow lines come as they arrive, each
// task in order; a service's tasks that start while following (a restart,
// a scale-up, a rolling update) are picked up from the store's watch, and
// the stream ends when the caller hangs up.
//
// Tasks of a service that have finished may no longer have logs on their
// node (the agent removes a task's log with the task); their absence is
// not worth a warning, unlike that of a task asked for by id.
//
// The manager dials agents with its own node certificate (agents allow
// TaskLogs to managers only) and verifies that the agent's certificate is
// the node it looked up (logstream.ClientTLSConfig).
package logbroker
