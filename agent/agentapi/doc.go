// Package agentapi is the gRPC server every node's agent runs on its own
// listener (NodeStatus.agent_addr): the AgentAPI service of
// proto/shoalv1/logs.proto.
//
//   - TaskLogs streams the logs of tasks held by this node (agent/logs),
//     in batches of up to 256 lines or 50 ms. Without follow, lines of all
//     the tasks asked for arrive in time order (a k-way merge of the
//     per-task files); with follow they arrive as written, each task in
//     order, until every task's log is removed or the caller hangs up. A
//     task that has exited keeps its log until the agent removes the task.
//     Tasks this node does not know are named in a warning, not an error:
//     a manager asks by what its (possibly stale) store says.
//   - Exec (exec.go) runs a process in one of the node's running tasks for
//     a manager relaying `shoal task exec` (an Execer, the daemon's adapter
//     of agent/runtime): headers first (so the manager can time the node's
//     answer), then the start message; stdin, resizes and close_stdin flow
//     in, stdout/stderr chunks out, the exit status last. Bounded: argv and
//     env size, stdin message size, MaxExecsPerTask at once. A caller that
//     hangs up has the process killed.
//   - LoadImage receives an image archive in chunks into a temp file in the
//     image store's tmp/ area (capped in size, and refused before the disk
//     fills), then loads it; ListImages and RemoveImage list and untag.
//   - Stats samples the running tasks' cgroups and network namespaces
//     (Config.Usage) every StatsInterval (1 s) and sends CPU % over the
//     interval, memory used and its limit, pids and network bytes: once,
//     or per interval while the manager listens. Headers go out at once,
//     so a relaying manager knows the node answers before the first
//     sample. Tasks not here or not running are warnings.
//
// Only holders of cluster certificates get in (the listener requires a
// client certificate verified against the cluster CA), and trust.AgentPolicy
// decides per method: TaskLogs, Exec and Stats for managers, images for
// admins and managers, nothing for workers.
//
// Clients dial a node's agent with logstream.Dial: node certificates carry
// a role name (manager.shoal or worker.shoal) rather than a host name, and
// a node's role can change, so the client verifies the chain against the
// cluster CA itself and checks that the certificate names the node it
// meant to reach.
//
// Wiring on a node:
//
//	srv := agentapi.New(agentapi.Config{NodeID: id, Tasks: ex.Tasks, LogPath: ex.LogPath, Images: store, Logger: log})
//	go agentapi.Serve(ctx, agentAddr, certs, srv) // until ctx ends
package agentapi
