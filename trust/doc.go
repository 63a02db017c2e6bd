// Package trust is the cluster's trust: the root certificate authority, node
// and admin certificates, join tokens and the join client, the identity a
// certificate carries, the TLS configurations and gRPC credentials made from
// a node's certificates, and the per-RPC authorizer with its policies (the
// managers' DefaultPolicy and the agents' AgentPolicy) that turns that
// identity into allow or deny. Managers, agents, the daemon, the client and
// the CLI all import it; it imports nothing of Shoal but proto/.
//
// Who a peer is lives only in its certificate, signed by the cluster CA:
//
//	CN = node id (or the admin's name), OU = role (manager|worker|admin), O = cluster id
//
// Manager certificates also carry the DNS name ManagerServerName, and every
// node dials managers verifying that name, so a worker's certificate can never
// pose as a manager. Join tokens (SHOAL-1-<sha256 of CA cert>-<secret>) pin
// the CA, so a joining node trusts nothing it has not checked against the
// token: FetchRootCA fetches the CA over an unverified connection, checks its
// digest, and only then dials again verifying the manager against it.
//
// Typical use on a node:
//
//	creds, _ := trust.LoadCreds(dataDir+"/certs", "node")
//	certs, _ := trust.NewCertStore(creds) // hot-swappable on promote/demote
//	srvTLS := certs.ServerTLSConfig()     // for the ALPN mux (manager/transport)
//	cliTLS := certs.ClientTLSConfig(trust.ManagerServerName, trust.ALPNGRPC)
//
// and on a manager's gRPC server:
//
//	authz := &trust.Authorizer{Policy: trust.DefaultPolicy(), ClusterID: id.ClusterID, Current: storeCheck}
//	grpc.NewServer(
//		grpc.ChainUnaryInterceptor(errdefs.UnaryServerInterceptor(), authz.Unary()),
//		grpc.ChainStreamInterceptor(errdefs.StreamServerInterceptor(), authz.Stream()))
//
// Refusals are errdefs classes (permission denied, unauthenticated,
// unavailable; a removed node's is errdefs.ErrNodeRemoved): errdefs'
// interceptor, first in the chain, turns them into statuses.
//
// A certificate is only as good as the store says: Current (StoreCheck,
// CurrentNodeRole, CheckAdmin) compares the certificate's serial and role with
// the node object (or the cluster's admin certificates) on every call; a node
// whose role change is pending acts as a worker. On a manager an admin's
// check is one map lookup (StoreCheckIndexed over an AdminIndex of the
// cluster's admin certificates, which manager/transport's CachedAdmins
// builds again whenever the cluster object may have changed, so a
// revocation is refused by the next call; expiry is compared per call).
// A stream in progress is
// asked about again every Recheck by one goroutine per Authorizer for all
// open streams (recheck.go); on a manager OngoingView makes that one store
// read a period for every session, not one per stream, and a demoted or
// removed caller's stream still ends within the period; without it (a
// node's agent API, whose Ongoing asks a manager) each stream's check runs
// in a goroutine of its own, one at a time per stream, so a caller whose
// check does not answer holds back no other stream's. Nodes renew at RenewAt (two
// thirds of the lifetime); an expired one proves possession of its old key
// (SignRenewalProof, VerifyRenewalProof).
//
// API bearer tokens ("shoal_<id>_<secret>", apitoken.go) are the other
// kind of caller, for programs and browsers: the authorizer takes a call's
// "authorization: Bearer" metadata before any certificate, verifies it
// with Authorizer.Tokens (VerifyAPIToken against the store's hashes, on
// every call and stream recheck) and decides by TokenPolicy, the least
// token role (viewer < operator < admin) of every Control, Logs and Ops
// method; the caller's identity then has a token role (RoleViewerToken,
// ...), which no certificate can carry. Calls of the HTTP gateway arrive
// on an in-process connection (InProcessInfo) and name the certificate
// the HTTPS server verified in metadata (MDClientCert), honoured on such
// connections only.
//
// Handlers read the caller with IdentityFrom(ctx). Private keys and token
// secrets are never logged or put into errors.
//
// # Per call
//
// The authorizer runs on every call, so its own work is kept small (an
// admin's call: 2 allocations, 10 before; BenchmarkAuthorizeUnary): the
// bearer token is read as the one "authorization" key, not from a copy of
// all the call's metadata; Policy.Lookup looks up the method's own
// prefixes instead of walking every key (35 against 256 ns); the
// identity's context is one object; the serial is formatted with one
// allocation. The rules are the same (TestPolicyLookupIsLongestPrefix,
// TestSerialTextIsText).
package trust
