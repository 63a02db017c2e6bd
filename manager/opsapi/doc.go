// Package opsapi serves the Ops API on every manager (not forwarded to the
// leader): TaskExec runs a process inside a running task's container and
// TaskStats reports tasks' resource use. Both find the task in the
// manager's own store and relay to the agent API of the node that holds it
// (AgentAPI.Exec, AgentAPI.Stats), dialled with the manager's node
// certificate; a node that is down or does not answer within ReachTimeout
// is named at once, never waited for.
//
// TaskExec (exec.go) refuses before dialling anything: a bad start
// message (InvalidArgument naming the field), an unknown task (NotFound),
// a task that is not running (FailedPrecondition naming its state), a
// task whose node is down, gone or without an agent address (Unavailable
// naming the node). The forwarded start carries the task's full id. When
// the caller hangs up the agent stream is cancelled, which kills the
// process there.
//
// Every exec, run or refused, is one record in the audit log
// (Config.Audit; the daemon points it at audit.log, JSON lines, in the
// manager's data dir): the caller's identity (certificate name and role),
// task, service, node, argv, tty, stdin, user, workdir, exit code and
// signal, duration and error. Never stdin or output.
package opsapi
