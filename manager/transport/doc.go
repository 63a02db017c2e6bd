// Package transport serves a manager's single TLS port: every connection is
// handshaken once, with the node's certificate store (trust.CertStore), and
// routed by its ALPN protocol — "h2" to the gRPC server, "shoal-raft" to
// hashicorp/raft's NetworkTransport. One port means one firewall rule and one
// advertised address for both the API and raft.
//
// Wiring on a manager:
//
//	mux := transport.NewMux(ln, certs.ServerTLSConfig(), logger)
//	srv := grpc.NewServer(grpc.Creds(transport.ServerCreds()), ...)
//	go srv.Serve(mux.GRPC())
//	stream := transport.NewRaftStreamLayer(mux.Raft(), advertiseAddr, func() *tls.Config {
//		return certs.ClientTLSConfig(trust.ManagerServerName, trust.ALPNRaft)
//	})
//	trans := raft.NewNetworkTransport(stream, 3, 10*time.Second, logOutput)
//	err := mux.Serve(ctx) // until ctx ends
//
// gRPC sees connections already handshaken, so ServerCreds only wraps them;
// the per-method role checks are trust.Authorizer's. Raft has no per-call
// authorization, so the mux admits only verified manager certificates of the
// cluster CA to it, and with Mux.AdmitRaft(RaftAdmission(...)) only those of
// current voters, checked again whenever bytes arrive on the connection.
//
// That re-check reads the latest raft configuration every time (an atomic
// load in hashicorp/raft) but the store's side (the peer's node object and
// the cluster's removed list) only when it may have changed:
// CachedCheck reuses a verdict while StoreGeneration has not moved, and the
// generation is bumped inside the store's apply of any node or cluster
// change (a watch filter that refuses every event), so a write that
// demotes or removes a manager, or changes the role its certificate
// claims, has moved it before the write returns, and the peer's next read
// is refused (TestCachedAdmissionCutsTheNextRPC). After a snapshot
// restore, or while the watch is not in place, every check is a full one.
//
// The same generation keeps the manager's index of the cluster's admin
// certificates (CachedAdmins, read by the authorizer on every admin API
// call): it is built again from a store view only after a node or cluster
// change, so a revoked or removed admin certificate is refused by the
// next call after the write returns (TestCachedAdminsCutTheNextCall).
//
// Raft's RPCs keep hashicorp's msgpack encoding: BenchmarkAppendEntriesDecode
// and BenchmarkAppendEntriesEncode set it against a fixed binary frame of
// the same request, and at 256 writers a frame would save ~2 % of the
// cluster's CPU per write, too little for a transport of our own with its
// own heartbeats, pipelining, snapshots and rolling-upgrade negotiation
// (docs/performance.md, seventh round).
package transport
