// Package e2e holds the multi-host scenarios of shoal: every host is a
// network namespace (see package harness), every node a real `shoal`
// process built from ./cmd/shoal, every check goes through the real CLI
// (`--format json`) inside a host's namespace.
//
// Scenarios (one fabric each, run one after another to keep the 2-core
// machine's load low; a few seconds of setup per cluster). Every node runs
// tasks as real containers of the demo image (loaded at start, see
// harness.NodeFlags):
//
//	TestJoinByToken                  init + 2 managers + 2 workers join by token; 5 READY, 3 managers, 1 leader
//	TestServiceRunning               10 replicas → RUNNING, 2 per node, pids in the host's cgroups, HTTP on each task address; scale to 3 stops 7 containers; rm → no task, and no process, cgroup, mount, log, rootfs, runtime state or netns left on any node
//	TestRegistryPull                 docker-registry on h1, image pushed; 3 replicas on 2 workers (--insecure-registry) pinned to the registry digest, pulled by both, RUNNING that digest, answering HTTP
//	TestAgentRestartKeepsContainers  kill -9 of a worker's shoal: containers and shims live on; one exits 42 meanwhile; after `shoal daemon` same task ids and pids RUNNING, the exited one FAILED with exit code 42
//	TestShimKilled                   kill -9 of a task's shim → task FAILED saying so, its container gone, a replacement RUNNING, the other task untouched
//	TestBadInput                     unknown image, unreachable registry, missing command, memory limit above the node's → REJECTED/FAILED with the reason in service ps; 1k limit refused by the API; corrupt archives refused by image load, nothing loaded; a healthy service undisturbed
//	TestLogsNodeDown                 service/task logs with task@node prefixes from two nodes; one powered off → service logs returns promptly with the other's lines and a warning naming it (before and after DOWN, and with -f)
//	TestLeaderFailover               kill -9 the leader; a write through a follower succeeds (time logged); the old leader rejoins
//	TestLeaderFailoverRepeated       N kill -9 rounds of the leader, each a write acknowledged (time logged, p50 and max); then idle with no election (same raft term)
//	TestWrongTokenRefused            altered CA digest, wrong secret, rotated token → join exits non-zero with a clear message
//	TestWorkerCertRefused            a worker's certificate against the control API → PermissionDenied naming the role
//	TestPromoteDemoteRemove          promote, demote, node rm --force; a removed node's certificate is refused
//	TestNodeDown                     power off a worker (its containers die too) → DOWN (time logged), its tasks RUNNING elsewhere; power on → READY (the time is BenchmarkPowerCut's)
//	TestKill9AtRandomMomentsLosesNoAckedWrite  creates in a loop while managers are kill -9'd and restarted; no acknowledged create lost (kill -9 keeps the page cache: a missing fsync is not detected)
//	TestKill9RestartMovesNothing     20 × kill -9 of a worker's shoal + `shoal daemon`: no task replaced, node never DOWN (kill→session open logged)
//	TestKill9LeaderRestartMovesNothing  5 × the same for the leader of 3 managers: no node DOWN, no task replaced
//	TestPlannedRestartMovesNothing   SIGTERM of a worker's shoal: DISCONNECTED "restarting" (node ls: Restarting) with a restart deadline, tasks kept while a crashed node goes DOWN; `shoal daemon` → READY, same tasks
//	TestPlannedLeaderRestartMovesNothing  the same for the leader of 3 managers (its agent's goodbye is committed before its manager stops)
//	BenchmarkPowerCut                10 power cuts of a worker: p50/max of → DOWN and → all its tasks RUNNING elsewhere
//	TestRollingUpdateUnderLoad       4 replicas with an HTTP health check behind their VIP under a client loop from another host; `service update` parallelism 1 start-first → "update completed", COMPLETED 4/4, zero failed requests of any kind (the client never retries)
//	TestRollingUpdateLeaderFailover  3 managers + 2 workers, 6 replicas, parallelism 2, 3 s delay, start-first: kill -9 of the leader between batches, and (health check) while a new task is starting → the new leader completes the rollout (COMPLETED 6/6), one RUNNING new-spec task per slot, never two new-spec tasks in a slot (polled, and in the task history)
//	TestFailedUpdateRollsBack        an update to `exit 1` with failure action rollback → the CLI exits non-zero "update rolled back", ROLLBACK_COMPLETED, the old spec on every replica, the untouched tasks kept
//	BenchmarkRollingUpdate           100 replicas on 5 worker hosts, parallelism 10, start-first, health check, under the same load: update time and failed requests (SHOAL_E2E_ROLLOUT=R/P/W for other sizes)
//
// Running, as root (network namespaces, cgroups, mounts), with iproute2
// and docker-registry installed (scripts/setup.sh does it), and the seccomp
// build tag (the runtime refuses to run containers without it):
//
//	GOFLAGS=-tags=seccomp go test -count=1 -p 1 ./e2e/...            # harness self-test + scenarios
//	GOFLAGS=-tags=seccomp go test -count=1 -v -run TestNodeDown ./e2e/
//
// The shoal binary is built once per run (or taken from $SHOAL_E2E_BINARY).
// A scenario needs: `shoal init|join|daemon` as foreground processes that
// write DATA/node.json; admin credentials in DATA/admin of the first
// manager; the client commands `token show|rotate`, `node ls`, `service
// create|scale|ps|ls|rm|inspect|logs`, `task ls|logs`, `image load|ls`
// with `--format json` printing protojson (a JSON array for lists);
// `--data-dir` and `--host/--cert-dir` global flags; task status with pid,
// addresses and image digest; the agent's layout in the data dir
// (agent/tasks/<id>, agent/logs/<id>.log, runtime/<id>/shim.json,
// network/netns/<id>) and task cgroups <cgroup parent>/<task id>.
//
// When a test fails, the tail of every process log and of each host's CLI
// log (every CLI call with its result) is printed. Timings worth watching
// (failover, node-down detection, restarts) are t.Log'ged; performance
// claims belong to benchmarks (BenchmarkPowerCut here, the bench command
// for the rest), not to assertions. The few bounds asserted are generous
// deadlines against hangs (`service logs` with a node down returns within
// 10 s, say). "No election" is judged by the raft term (Host.RaftTerm),
// not by who leads.
package e2e
