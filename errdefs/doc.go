// Package errdefs is Shoal's one error vocabulary: a few error classes,
// the one mapping between them and gRPC status codes (both directions),
// and the structured details for the facts a caller acts on.
//
// # Classes
//
// A class says what a caller can do about an error: fix the request
// (ErrInvalidArgument), look elsewhere (ErrNotFound), read again and retry
// (ErrConflict), retry later or elsewhere (ErrUnavailable), give up
// (ErrPermissionDenied) and so on. A handler classifies an error where it
// knows what went wrong, with a constructor:
//
//	return errdefs.InvalidArgumentf("spec.replicas: must be at most %d", max)
//	return errdefs.NotFound(err) // keeps err's text and chain
//
// Constructors rather than "%w" with the sentinel, because the class is
// about the error, not part of its text: the message the caller reads is
// exactly what the handler wrote (no "invalid argument: " prefix that the
// edge would have to trim again), and wrapping an error keeps its chain
// for errors.Is/As. The sentinels (ErrNotFound, ...) are what callers test
// with errors.Is or the IsX helpers.
//
// Packages that may not import Shoal packages (raftstore) classify their
// own sentinels with a marker method instead, as containerd does: an error
// with a method NotFound() is of class ErrNotFound, and so on (see
// classOf).
//
// # The gRPC edge
//
// Handlers return plain Go errors. UnaryServerInterceptor and
// StreamServerInterceptor, first in every server's chain, turn them into a
// status with ToGRPC; that is the only place classes become codes. Clients
// turn a status back into a classified error with FromGRPC (the IsX
// helpers do it for them), so errors.Is(err, errdefs.ErrNotFound) works
// on both sides of a call. An error that already is a status (one a
// manager forwarded from the leader, say) crosses ToGRPC unchanged, with
// its details.
//
// # Protocol states
//
// Facts a caller acts on travel as structured details
// (google.rpc.ErrorInfo, domain "shoal.dev"), never in text to be parsed:
//
//   - NotLeader(addr): the dispatcher is not the leader; the leader's
//     address rides along (reason NOT_LEADER, metadata "leader"), read it
//     with LeaderAddr. The error is ErrNotLeader and ErrUnavailable.
//   - ErrNodeRemoved (NodeRemovedf): the calling node was removed from the
//     cluster and should stop, not retry (reason NODE_REMOVED). It is also
//     ErrPermissionDenied.
//   - ErrNoQuorum (NoQuorumf): no leader was elected within the answering
//     manager's wait; clients stop retrying and tell the operator (reason
//     NO_QUORUM). It is also ErrUnavailable.
//   - ErrNotReady (NotReadyf): the answering manager is still starting (it
//     holds no cluster state yet); clients wait for it only briefly, then
//     say so (reason NOT_READY). It is also ErrUnavailable.
package errdefs
