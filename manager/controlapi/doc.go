// Package controlapi implements the shoal.v1.Control gRPC service: the
// operator API that the CLI and dashboards use.
//
// Every method runs on the leader (the manager's forwarding interceptor sends
// unary calls from followers there), so reads are linearizable: they go
// through raftstore.ReadLinearizable. Writes validate the request first —
// errors name the field path and the reason, e.g.
// `spec.replicas: must be >= 0, got -1` — and then apply one raft entry with
// the version the caller read (optimistic concurrency).
//
// Handlers return errdefs classes (validation: InvalidArgument with field
// paths); the server's errdefs interceptor maps them to gRPC codes.
package controlapi
