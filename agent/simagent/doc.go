// Package simagent runs simulated nodes for `shoal bench schedule`: each is
// a real node identity (its own key and certificate, obtained by token
// join through the managers' NodeCA) driving the real agent session code
// (agent.Agent: one gRPC connection over mTLS to the leader's dispatcher,
// hello, heartbeats at the period the welcome names, chunked assignment
// sets, status batches, reconnection and leader following), with an
// executor that runs nothing but reports what a fast real one would.
//
// What the executor (Executor) reports: ACCEPTED for a task that should
// run as soon as its assignment arrives, and RUNNING in the status batch
// after that one (the intermediate PREPARING and STARTING of a real agent
// are skipped: a container start is not what this measures); SHUTDOWN for
// a task told to stop. A full set (a new session, maybe a new leader)
// forgets what was reported and reports again what the store lacks.
//
// Counters count what the agents were sent: the first sight of a task
// counts it ASSIGNED (the dispatcher forwards a node's task only once its
// assignment is committed), and a copy of it RUNNING counts it RUNNING,
// which now comes only in a full set (a new session): the dispatcher no
// longer echoes an agent's own statuses back. `shoal bench schedule`
// times committed progress from the store (ListTasks counts), not from
// these counters.
//
// Identities are kept in one JSON file (SaveIdentities/LoadIdentities) so
// repeated benchmark runs against the same managers skip the join. The
// file holds private keys: it is written 0600 and never logged.
//
// Costs per simulated node in the benchmark process: one agent.Agent (its
// receive, heartbeat and status goroutines plus gRPC's per-connection
// ones), one TLS configuration with its own certificate, and the node's
// held task set.
package simagent
