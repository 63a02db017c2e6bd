// Command bench measures whole-cluster figures of shoal, with real `shoal`
// processes on loopback addresses, and the same figures of a real etcd
// cluster as a reference. It is its own Go module (so that the etcd client
// stays out of shoal's dependencies) and is run from this folder:
//
//	cd bench && go run . [flags]
//
// # Committed writes per second (default mode)
//
// For every cluster size in -managers (default "1,3") a shoal cluster is
// started from the real binary: `shoal init` on 127.0.0.21 and `shoal join`
// with the manager token on 127.0.0.22, .23, ...; the benchmark waits until
// GetCluster shows every manager as a voter and a leader. One service per
// worker is created with 0 replicas (so no tasks churn). Each cell then runs
// C concurrent workers (C from -concurrency, default "1,16,256") for
// -warmup plus -duration: a worker sends PatchService for its own service
// (-write patch, the default: labels_add of its one label, what `shoal
// service update --label-add` sends), or UpdateService with the whole spec
// (-write update, what every build before PatchService measured; the
// report's description names the write), changing a 100-byte label value
// and naming the version returned by its previous write (optimistic
// concurrency), and starts the next call as soon as the previous one
// returns (closed loop). -write patch against a build without PatchService
// stops with an error naming -write update. Workers ask for the brief
// reply (view SERVICE_VIEW_BRIEF: the service without its specs, as the
// worker keeps the spec it sends); a shoal from before the field answers
// with the whole service, which the worker reads the same, so -shoal-bin
// compares builds with the same client. Clients connect to the leader
// directly (found with GetCluster: leader_id and members), so no call pays
// for a follower's forwarding hop. Raft's log store fsyncs as in
// production.
//
// The reference is a 3-member etcd cluster (-etcd-bin, Debian's etcd 3.4),
// each member on its own loopback address (127.0.0.31-33), data in a temp
// dir, default fsync; the workers Put a 100-byte value to one key each,
// through a client connected to the etcd leader. By default etcd serves
// plain HTTP to its client and its peers; with -etcd-tls both run with
// mutual TLS (a throwaway CA, ECDSA P-256 certificates, client certificates
// required), as shoal's API and raft traffic always do. Both clients hold
// one gRPC connection to the leader (shoal's client.Dial, etcd's clientv3
// with the leader as its only endpoint) and default gRPC settings.
//
// A worker records every completed call's latency in its own preallocated
// slice (no lock on the hot path); percentiles are computed after the cell.
// Throughput counts the calls that completed inside the measured window.
// The cluster's CPU time (user + system of every member, from
// /proc/PID/stat) is read when the window opens and when it closes; the
// difference over the calls counted is the CPU/op column, the figure that
// decides throughput once the cores are saturated (and the one least
// moved by other load on the machine). The same is read per member (the
// "CPU per write by process" table: the leader against each follower), and
// for the benchmark process itself (getrusage: the client CPU/op column).
// The writers' client side is the same kind of cost for both systems
// (gRPC, TLS, encoding the request) and shares the same two cores, so a
// saturated machine's writes/s is (cores) / (members' + client CPU per
// write): the "whole machine CPU/op" column.
// The result is a markdown table per system and one that sets 3-manager
// shoal and 3-member etcd side by side at each concurrency, and, with
// -json FILE, the same as JSON.
//
// One run moves by ±20 % from minute to minute on a shared 2-core machine,
// so the README's writes figure is several runs: -runs N -json-dir DIR
// repeats the throughput cells N times (each run's clusters and etcd
// started afresh), writes DIR/shoal-NN.json per run and ends with one
// table: per concurrency the range of shoal's writes/s, the range and
// median of the per-run shoal/etcd ratios, p99s and in how many runs
// shoal's was above etcd's, CPU per write. -base-bin B runs another build
// as often, interleaved (this build first in odd runs, B first in even
// ones), into DIR/base-NN.json and a column of its own. -summarize GLOBS
// [-summarize-base GLOBS] makes the same table again from such files.
//
// The nodes of these control-plane figures run with --no-executor: no task
// becomes a container, and nothing is created on the host.
//
// With -agents N each shoal cluster of the cells gets N simulated agents
// (agent/simagent) before its writers' services are created: real node
// identities, joined with the worker token through the managers' NodeCA
// (16 at a time), and the real agent session code over mTLS, one session
// each on the leader's dispatcher (opened 50 at a time), heartbeating
// through every cell and closed after the last. The benchmark waits until
// ListNodes shows N workers READY. -agents-network also creates an overlay
// network (bench-net, subnet from the cluster's pool: it exists only in
// the store, the simulated agents program nothing) and a service of N
// replicas on it, one per worker (node.role==worker, at most one per
// node), and waits until all N tasks are RUNNING with an attachment, so
// that every session holds network state. The agents run in the benchmark
// process: their CPU is in the client CPU/op column; before the cells the
// process's CPU is read over 3 s with the agents connected and no write,
// and the leader's in the same window (the header's "idle" figures; in the
// JSON meta agents_idle_cpu_ms_per_s and agents_leader_idle_cpu_ms_per_s,
// beside agents and agents_network). -agents needs -only shoal or all
// (etcd has no agents).
//
// With -pprof DIR every shoal node serves Go's pprof handlers on its own
// address (SHOAL_DEBUG_ADDR=<ip>:6061; a SHOAL_DEBUG_ADDR in the
// benchmark's environment would reach every node and only the first could
// bind it), and each shoal cell takes a CPU profile of every manager at
// once for its measured window (whole seconds):
// DIR/shoal-<N>m-c<C>-<node>-<leader|follower>.pb.gz. A write's CPU is
// spread over all of them: the followers decode, append, sync and apply
// every entry too. `go tool pprof -top -cum BIN FILE` per node; the
// samples of a profile over the cell's writes are that node's CPU per
// write. Profiling costs a few percent of CPU: take figures from runs
// without it. The same cells of etcd profile its members (started with
// --enable-pprof; plain HTTP only: DIR/etcd-c<C>-<member>-<role>.pb.gz),
// and every cell of either system profiles the benchmark process itself
// over the window (DIR/<shoal-<N>m|etcd>-c<C>-bench.pb.gz): the writers'
// client side. SHOAL_METRICS=1 in the benchmark's environment reaches the
// nodes too (raft's own timings; kill -USR1 a node to print them).
//
// # Containers (-containers N [-replicas R])
//
// `shoal dev` (manager + agent in one process, real containers) runs in a
// network namespace the benchmark makes (so the node bridge and the task
// addresses exist only there; the client dials from a thread switched into
// it), with its own cgroup parent and the demo image built from this
// repository. N times: CreateService with 1 replica of demo:latest, timed
// until the watch stream shows its task RUNNING, then RemoveService until
// the task is gone. Then R replicas at once, timed until all R are RUNNING
// on the one agent, with the node process' RSS before (idle) and after, and
// the proportional set size of the R task shims. Everything it started is
// killed and removed at the end (containers, mounts, cgroups, namespace).
//
// # Memory that stays flat (-soak N [-soak-tasks T])
//
// The same `shoal dev` set-up as -containers, with SHOAL_DEBUG_ADDR on
// 127.0.0.1:6060 inside the namespace. N rounds of: one service of T
// replicas (default 100) created → all RUNNING (watch) → removed → every
// task gone from the store → idle: until the node's processes, mounts,
// cgroups and task state dirs are back to where they were before the first
// round (a minute at most; what is left then shows in the table), then
// -soak-settle (default 5 s) of nothing. Then, once before the first round
// and after each: VmRSS of the node process, split into RssAnon (Go heap,
// stacks, runtime) and RssFile (the binary's text, bbolt's mmaps), read
// before anything forces a GC; HeapInuse and HeapAlloc from the pprof heap
// profile asked for with gc=1 (what is still referenced); goroutines (pprof);
// open file descriptors, by kind; mounts under the data dir; cgroups below
// the cgroup parent (the parent itself, made with the first task, is not
// counted); entries of <data-dir>/runtime; processes below the node process
// or in its cgroups (a spare shim is always there). -soak-pprof DIR keeps
// the heap profile of every round (`go tool pprof -base DIR/heap-001.pb.gz
// DIR/heap-050.pb.gz` shows what round 50 holds that round 1 did not;
// GODEBUG=memprofilerate=4096 in the benchmark's environment reaches the
// node and makes the profile fine-grained) and its goroutines with their
// stacks (DIR/goroutine-NNN.txt, debug=2).
//
// RSS is what the kernel counts, not what Go uses: the runtime keeps freed
// heap pages for reuse and returns them lazily (the background scavenger
// keeps about the heap goal, which is 4× the live heap at shoal's GOGC=300),
// so an idle node's RSS reflects the peak of its last rounds as much as
// what it still holds, until the node's idle release (daemon/idlemem:
// under 4 MiB allocated in 5 s and ≥ 4 MiB (or half the live heap)
// reclaimable, free or not yet collected) hands it back; a round's sample taken before that shows the
// peak. The live heap (HeapAlloc after a GC) is the figure a leak moves.
// The JSON (-json) also splits the anonymous RSS as it was when read, from
// the MemStats of a heap profile asked for without a GC:
// idle_heap_held_bytes (HeapSys − HeapReleased) and of it
// idle_heap_objects_bytes (live objects and garbage since the last GC),
// idle_stack_bytes (StackInuse), idle_runtime_bytes (the runtime's
// metadata, as reserved: spans, caches, GC bitmaps, profiling buckets).
//
// # Leader failover (-failover N)
//
// On a 3-manager cluster, N times: find the leader, kill -9 its process,
// and time until the first write (GetService then UpdateService, through a
// client that has all three managers as hosts) succeeds; then restart the
// killed manager with `shoal daemon --data-dir D` and wait until it is a
// voter, READY and reachable again before the next run.
//
// # Node down detection (-nodedown N)
//
// One manager plus one worker (joined with the worker token on 127.0.0.25),
// N times: kill -9 the worker and time until ListNodes (polled every 10 ms)
// shows it NODE_STATE_DOWN; restart it with `shoal daemon` and wait until it
// is READY again.
//
// # Node death → its tasks running elsewhere
//
// Needs real containers and a real power cut (processes, containers and
// link of a host gone at once), so it runs in the e2e netns harness rather
// than here, as a Go benchmark: on 1 manager + 3 workers with 6 replicas,
// 10 power cuts of the worker holding the most tasks, p50 and max of the
// time to DOWN and to every replica RUNNING on another node:
//
//	GOFLAGS=-tags=seccomp go test -count=1 -p 1 -run '^$' -bench PowerCut -benchtime 1x ./e2e/
//
// # One big service (-bigservice N)
//
// Three managers (-shoal-ips) with --no-executor, each also a node (its
// agent holds its assignment set and reports SHUTDOWN for tasks told to
// stop, but runs nothing). A Watch of tasks is opened on the leader, then
// one CreateService of N replicas; the sample is the time until the watch
// has seen N tasks ASSIGNED (desired RUNNING). Then: the leader's RSS
// (VmRSS before and at convergence, peak sampled every 50 ms, VmHWM), a
// ListTasks from the leader to count the ASSIGNED tasks per node, an
// UpdateService to max_replicas+1 that must be refused naming the setting,
// and RemoveService timed until every task is deleted. Finally the nodes'
// logs since the service was created are searched for a watch cut (slow
// consumer), a resync, a session that ended, an entry refused as too
// large, an election or a node marked down, and the counts are reported.
// The leader's RSS depends on GOGC (shoal sets 300 unless GOGC is set;
// GOGC is passed through to the nodes).
//
// -failover, -nodedown and -bigservice run instead of the throughput
// benchmark unless -only is given as well.
//
// # Housekeeping
//
// Unless -shoal-bin is given, ../cmd/shoal is built with `go build` into the
// temp dir. Every process the benchmark starts runs in its own process group
// and is killed (SIGKILL to the group) on exit, on error and on SIGINT or
// SIGTERM; the temp dir (data dirs and each process's log) is removed unless
// -keep is given. When something fails, the tail of each process's log is
// printed. Only loopback addresses (127.0.0.0/8) are ever used.
//
// Everything runs on one machine: the shoal or etcd members, and the load
// generator, share its cores, so the numbers are for comparing shoal with
// etcd (and shoal with itself over time) on the same machine, not absolute
// capacities.
package main
