// Package logstream is what the agents' API and the managers' log broker
// share to stream task logs: dialling a node's agent API and verifying that
// the node reached is the one asked for (Dial, ClientTLSConfig), merging
// per-task streams in time order or as they come (MergeByTime, FanIn),
// sending them in batches with the warnings raised meanwhile (SendBatches,
// Warnings), and the warning for a task a node does not hold
// (UnknownTaskWarning), which the broker recognises by equality.
//
// It is a leaf: it imports nothing of Shoal but proto/ and trust/, so both
// agent/agentapi and manager/logbroker may import it without importing each
// other.
package logstream
