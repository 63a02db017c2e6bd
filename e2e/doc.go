// Package e2e holds the multi-host scenarios of shoal: every host is a
// network namespace (see package harness), every node a real `shoal`
// process built from ./cmd/shoal, every check goes through the real CLI
// (`--format json`) inside a host's namespace.
//
// Scenarios (one fabric each, run one after another to keep the 2-core
// machine's load low; about a minute of setup per five-node cluster at most):
//
//	TestJoinByToken            init + 2 managers + 2 workers join by token; 5 READY, 3 managers, 1 leader
//	TestServiceAssigned        10 replicas → ASSIGNED, 2 per node; scale to 3; rm → no tasks
//	TestLeaderFailover         kill -9 the leader; a write through a follower succeeds (time logged); the old leader rejoins
//	TestWrongTokenRefused      altered CA digest, wrong secret, rotated token → join exits non-zero with a clear message
//	TestWorkerCertRefused      a worker's certificate against the control API → PermissionDenied naming the role
//	TestNodeDown               power off a worker → DOWN (time logged), its tasks move; power on → READY
//	TestKill9NoAckedWriteLost  creates in a loop while managers are kill -9'd and restarted; no acknowledged create lost
//
// Running, as root (network namespaces), with iproute2 installed
// (scripts/setup.sh does it):
//
//	go test -count=1 -p 1 ./e2e/...            # harness self-test + scenarios
//	go test -count=1 -v -run TestNodeDown ./e2e/
//
// The shoal binary is built once per run (or taken from $SHOAL_E2E_BINARY).
// A scenario needs: `shoal init|join|daemon` as foreground processes that
// write DATA/node.json; admin credentials in DATA/admin of the first
// manager; the client commands `token show|rotate`, `node ls`, `service
// create|scale|ps|ls|rm`, `task ls` with `--format json` printing protojson
// (a JSON array for lists); `--data-dir` and `--host/--cert-dir` global
// flags. When a test fails, the tail of every process log and of each
// host's CLI log (every CLI call with its result) is printed. Timings worth
// watching (failover, node-down detection) are t.Log'ged, never asserted:
// performance claims belong to benchmarks.
package e2e
