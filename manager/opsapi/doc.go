// Package opsapi serves the Ops API on every manager (not forwarded to the
// leader): TaskExec runs a process inside a running task's container and
// TaskStats reports tasks' resource use. Both find the task in the
// manager's own store and relay to the agent API of the node that holds it
// (AgentAPI.Exec, AgentAPI.Stats), dialled with the manager's node
// certificate; a node that is down or does not answer within ReachTimeout
// is named at once, never waited for.
//
// Every exec is recorded in the audit log (Config.Audit) with the
// caller's identity, the task, the command and how it ended.
package opsapi
