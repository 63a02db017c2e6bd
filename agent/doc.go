// Package agent is everything that runs on a worker (every node runs one).
//
// This version holds the node's session with the leader's dispatcher: it
// sends a hello and heartbeats, receives the node's assignment set (full,
// then diffs) and reports task status in batches. It reconnects by itself,
// following the leader address a follower answers with (errdefs.NotLeader)
// and rotating through the known managers, so an agent survives leader
// failover without help.
//
// Running containers comes with the executor and runtime (agent/runtime);
// until then the agent acknowledges only what needs no runtime: a task it
// holds that is told to shut down is reported SHUTDOWN, since nothing runs
// for it on this node.
package agent
