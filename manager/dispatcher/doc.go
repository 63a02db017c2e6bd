// Package dispatcher keeps one session per node on the leader.
//
// A session is a bidirectional gRPC stream. The agent opens it with a hello
// (its description and address, refused past specrules.AgentHello's bounds
// before anything is written); the dispatcher answers with a welcome, the
// node's full task assignment set, and from then on diffs of that set as the
// store changes. The agent heartbeats on the same stream and sends task
// status updates in batches; the dispatcher coalesces status updates from all
// sessions into one raft entry per flush, one entry in flight at a time:
// what arrives while it is committed waits for the next, keyed by node and
// task, so a task whose ACCEPTED and RUNNING both arrive meanwhile is
// written once, RUNNING (at most maxPendingStatuses held: past that the
// sessions wait on the writer's queue; when the writer's ctx ends it waits
// for the commit in flight). A session watches the store
// through raftstore's WatchNode, which routes a task event to its node's
// sessions only (no per-session work for other nodes' tasks), keeping its
// node's tasks and
// node, tasks on networks, other nodes once the cluster has a network, and
// the other kinds (sessionEvents), so thousands of sessions do not each
// handle every task event, nor every other session's opening. The session
// takes its events from the subscription's queue itself (Ready, Take: no
// pump goroutine per session) and sends all that is queued as one diff;
// between batches it looks at its receiver, so an agent's goodbye is not
// held behind a burst (sessionend.go). A node a whole ring behind is cut
// off and resyncs (a fresh session, a fresh full set).
// The echo of a status its own agent reported while starting a task
// (ACCEPTED … RUNNING, nothing else changed against what the agent was
// sent) is not sent at all (echoes.go; SwarmKit's dispatcher sends
// assignments and removals only): the agent acts on desired state and
// spec, resends every status it holds on each new session, and gets its
// full set, stored statuses included, when it reconnects. Everything
// else is sent, in order. A session whose status
// report waits on a full status queue keeps its node seen and
// acknowledged meanwhile (queueStatus): the manager is the slow one.
//
// Session openings are written READY by one writer (openings.go), every
// opening waiting when a write starts in one raft entry (up to 512); an
// opening whose session has ended meanwhile (replaced by the node's next
// one) is not written, so a node's stale hello never overwrites the live
// session's.
//
// A status is written with raftstore's WriteTx.UpdateTaskStatus: the entry
// carries the task's id, version and new status, not the whole task, and
// the stored task's new version shares its spec and networks with the old.
//
// After the full assignment set the session sends the node's networks
// (SessionMessage.networks, full=true) and, after every burst of relevant
// store changes, the networks whose state changed and those the node left
// (full=false). NodeNetworks (networks.go) is the per-node computation:
// which networks, their endpoints (tasks ASSIGNED..RUNNING on nodes not
// DOWN, with the node's underlay address) and VIPs; networks.go documents
// the choices and the chunking. The per-node states are computed once for
// all sessions (netCache), from the newest view, and reused by every
// session whose view is no newer.
//
// Liveness is tracked in memory (heartbeats are not written to raft): any
// message of a session counts as a heartbeat (an agent skips its
// heartbeats while its statuses go out and messages come back, never
// silent longer than a period), and a node that
// sends nothing for HeartbeatPeriod * DownAfterMissed is marked DOWN,
// where the period a session is told grows with the node count beyond 500
// nodes (scaledPeriod: the leader answers about 1,000 heartbeats a second
// whatever the cluster's size; a node is judged by the period it was told,
// and gossip saying dead still marks it DOWN after two configured periods;
// an open session learns a new period, as the cluster grows or after
// a change of the heartbeat_period_ms setting, in a heartbeat's acknowledgement
// (ackFor; one goes out with a status batch too, as does a changed manager
// list, since a busy agent sends no heartbeat); a longer one counts at once, a shorter one from the first
// heartbeat saying the agent uses it: an agent of the previous release names
// no period and is judged by its welcome's until its next session),
// and the orchestrator then replaces its tasks. A new leader gives every node
// that long to reconnect before marking it down. The monitor (four times a
// period as the setting now says, and at least once a second) reads the nodes and their gossip states before taking the lock
// every heartbeat takes, and does not count its own stalls against the
// nodes (stallCredit): a leader starved of CPU for two seconds read no
// heartbeat meanwhile, and had marked every node DOWN at once. The agent
// gives up on a silent manager after as many periods as the manager's
// default threshold (agent/session.go), not fewer.
//
// Only the session loop sends on a session's stream. Its receiver reads
// the agent's messages and leaves heartbeat acknowledgements and a new
// manager list in the session's outbox (outbox.go: one coalescing slot
// each; a plain acknowledgement never replaces one naming a period, the
// newest list wins), which the loop sends when idle and between batches.
// A receiver that sent itself waited behind a send stuck on an agent not
// reading (gRPC's write quota), stopped reading the heartbeats the agent
// sends from another goroutine, and the node was judged DOWN while alive.
//
// The welcome names the managers; when the raft configuration changes
// while sessions are open, each is sent the new list (SessionMessage.managers)
// with its next heartbeat acknowledgement (managers.go), so agents and
// their node.json follow the managers without a new session.
//
// Only the leader runs sessions; a follower answers errdefs.NotLeader
// (UNAVAILABLE, the leader's address in an ErrorInfo detail) so the agent
// goes straight there, as does a leader's session when leadership ends,
// however busy it was (subEnded).
package dispatcher
