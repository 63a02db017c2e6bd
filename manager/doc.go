// Package manager wires everything a manager node runs, in order: one TLS
// listener multiplexed by ALPN (gRPC and raft), the raft store, the gRPC
// services (control API, dispatcher, node CA, raft membership) behind the
// role authorizer and the leader-forwarding interceptor, and — while this
// manager leads — the leader-only loops (cluster bootstrap, orchestrator and
// scheduler, dispatcher liveness and status writer, membership reconciler).
//
// The subpackages hold each part; this package only orders them, and sets
// the gRPC server's performance options (grpcserver.go: stream workers
// that keep their grown stacks from call to call; no read buffer per
// connection).
package manager
