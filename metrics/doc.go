// Package metrics holds the Prometheus registries and collectors of a
// shoal node, named by Prometheus conventions (shoal_ prefix, _total
// counters, _seconds and _bytes units).
//
// Every node owns one Registry (NewRegistry: Go runtime and process
// metrics plus shoal's); nothing is registered in client_golang's global
// default registry, so tests build as many as they like. The manager
// side (Manager) has event metrics that the raft store, scheduler loop,
// orchestrator and dispatcher feed through small hooks, and a collector
// that reads the store at scrape time: raft state, objects by kind, the
// bolt file's size and, on the leader only (so that sums over all managers
// count each object once), tasks by service and state, nodes by state and
// node resources. The agent side (Agent) reads each running task's cgroup
// and network namespace at scrape time, and counts image pulls.
//
// Scrape-time collection costs one pass over the store's tasks; with
// 100,000 tasks it is measured by BenchmarkManagerScrape (README
// Benchmarks).
//
// Serving: Handler for any mux (the manager's HTTPS API serves it at
// /metrics), and Serve for the node's own --metrics-addr listener.
package metrics
