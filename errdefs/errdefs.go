package errdefs

import (
	"context"
	"errors"
	"fmt"
)

// The classes. Each maps to one gRPC code (see ToGRPC); their text is only
// what errors.Is prints for a bare sentinel.
var (
	ErrInvalidArgument    = errors.New("invalid argument")    // codes.InvalidArgument
	ErrNotFound           = errors.New("not found")           // codes.NotFound
	ErrAlreadyExists      = errors.New("already exists")      // codes.AlreadyExists
	ErrFailedPrecondition = errors.New("failed precondition") // codes.FailedPrecondition
	ErrConflict           = errors.New("conflict")            // codes.Aborted: a stale version; read again and retry
	ErrUnavailable        = errors.New("unavailable")         // codes.Unavailable: retry later or elsewhere
	ErrPermissionDenied   = errors.New("permission denied")   // codes.PermissionDenied
	ErrUnauthenticated    = errors.New("unauthenticated")     // codes.Unauthenticated
	ErrOutOfRange         = errors.New("out of range")        // codes.OutOfRange
	ErrResourceExhausted  = errors.New("resource exhausted")  // codes.ResourceExhausted
	ErrInternal           = errors.New("internal")            // codes.Internal, also what an unclassified error becomes; any other class in the chain wins over it
)

// Cancellation and deadlines are the context package's own errors
// (context.Canceled, context.DeadlineExceeded); they map to codes.Canceled
// and codes.DeadlineExceeded.

// Protocol states: sentinels for facts a caller acts on. Each is also of a
// class, and travels as an ErrorInfo detail (see doc.go).
var (
	// ErrNotLeader: this manager is not the raft leader. Create it with
	// NotLeader(addr) so the leader's address travels with it.
	ErrNotLeader error = &sentinel{msg: "not the leader", class: ErrUnavailable}
	// ErrNodeRemoved: the node was removed from the cluster (shoal node rm);
	// its certificate is no longer accepted and it should stop.
	ErrNodeRemoved error = &sentinel{msg: "node removed from the cluster", class: ErrPermissionDenied}
	// ErrNoQuorum: no manager leads and none was elected within the
	// answering manager's wait (fewer than half of the managers are up or
	// reachable). Retrying at once does not help; a client gives up and
	// says so instead of retrying until its deadline.
	ErrNoQuorum error = &sentinel{msg: "no raft leader", class: ErrUnavailable}
	// ErrNotReady: the answering manager is still starting (it holds no
	// cluster state yet: its raft has no leader, or it has not caught up
	// with one). It may be ready in a moment or never (no quorum); a
	// client waits for it only briefly, then says so, rather than
	// retrying until its deadline.
	ErrNotReady error = &sentinel{msg: "manager not ready", class: ErrUnavailable}
)

// sentinel is a protocol-state sentinel that is also of a class.
type sentinel struct {
	msg   string
	class error
}

func (s *sentinel) Error() string { return s.msg }
func (s *sentinel) Unwrap() error { return s.class }

// classified is an error with classes attached; its text is err's.
type classified struct {
	err     error
	classes []error
}

func (e *classified) Error() string { return e.err.Error() }

func (e *classified) Unwrap() []error {
	return append([]error{e.err}, e.classes...)
}

func classify(err error, classes ...error) error {
	if err == nil {
		return nil
	}
	return &classified{err: err, classes: classes}
}

// Constructors: X(err) classifies err keeping its text and chain;
// Xf(format, ...) is X(fmt.Errorf(format, ...)).

func InvalidArgument(err error) error    { return classify(err, ErrInvalidArgument) }
func NotFound(err error) error           { return classify(err, ErrNotFound) }
func AlreadyExists(err error) error      { return classify(err, ErrAlreadyExists) }
func FailedPrecondition(err error) error { return classify(err, ErrFailedPrecondition) }
func Conflict(err error) error           { return classify(err, ErrConflict) }
func Unavailable(err error) error        { return classify(err, ErrUnavailable) }
func PermissionDenied(err error) error   { return classify(err, ErrPermissionDenied) }
func Unauthenticated(err error) error    { return classify(err, ErrUnauthenticated) }
func OutOfRange(err error) error         { return classify(err, ErrOutOfRange) }
func ResourceExhausted(err error) error  { return classify(err, ErrResourceExhausted) }
func Internal(err error) error           { return classify(err, ErrInternal) }

func InvalidArgumentf(format string, args ...any) error {
	return InvalidArgument(fmt.Errorf(format, args...))
}
func NotFoundf(format string, args ...any) error { return NotFound(fmt.Errorf(format, args...)) }
func AlreadyExistsf(format string, args ...any) error {
	return AlreadyExists(fmt.Errorf(format, args...))
}
func FailedPreconditionf(format string, args ...any) error {
	return FailedPrecondition(fmt.Errorf(format, args...))
}
func Conflictf(format string, args ...any) error    { return Conflict(fmt.Errorf(format, args...)) }
func Unavailablef(format string, args ...any) error { return Unavailable(fmt.Errorf(format, args...)) }
func PermissionDeniedf(format string, args ...any) error {
	return PermissionDenied(fmt.Errorf(format, args...))
}
func Unauthenticatedf(format string, args ...any) error {
	return Unauthenticated(fmt.Errorf(format, args...))
}
func OutOfRangef(format string, args ...any) error { return OutOfRange(fmt.Errorf(format, args...)) }
func ResourceExhaustedf(format string, args ...any) error {
	return ResourceExhausted(fmt.Errorf(format, args...))
}
func Internalf(format string, args ...any) error { return Internal(fmt.Errorf(format, args...)) }

// NodeRemovedf is the refusal of a removed node: ErrNodeRemoved (and so
// ErrPermissionDenied) with the given text.
func NodeRemovedf(format string, args ...any) error {
	return classify(fmt.Errorf(format, args...), ErrNodeRemoved)
}

// NoQuorumf is the answer of a manager that found no leader within its wait:
// ErrNoQuorum (and so ErrUnavailable) with the given text.
func NoQuorumf(format string, args ...any) error {
	return classify(fmt.Errorf(format, args...), ErrNoQuorum)
}

// NotReadyf is the answer of a manager that cannot serve yet (ErrNotReady,
// and so ErrUnavailable) with the given text.
func NotReadyf(format string, args ...any) error {
	return classify(fmt.Errorf(format, args...), ErrNotReady)
}

// NotLeaderError is ErrNotLeader with the leader's address, as far as the
// answering manager knows it ("" when there is no leader).
type NotLeaderError struct {
	Leader string
}

func (e *NotLeaderError) Error() string {
	return "this manager is not the leader; leader=" + e.Leader
}

func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// NotLeader returns the answer of a manager that is not the leader: the
// leader's address travels as a detail (read it with LeaderAddr).
func NotLeader(leader string) error { return &NotLeaderError{Leader: leader} }

// LeaderAddr returns the leader address carried by a NotLeader error, local
// or received over gRPC.
func LeaderAddr(err error) (string, bool) {
	var nl *NotLeaderError
	if errors.As(FromGRPC(err), &nl) && nl.Leader != "" {
		return nl.Leader, true
	}
	return "", false
}

// Is reports whether err, local or received over gRPC, is of class (or
// protocol state) target. The IsX helpers are Is with their class.
func Is(err, target error) bool {
	if errors.Is(FromGRPC(err), target) {
		return true
	}
	for _, m := range mapping {
		if m.class == target && m.marker != nil {
			return m.marker(err)
		}
	}
	return false
}

func IsInvalidArgument(err error) bool    { return Is(err, ErrInvalidArgument) }
func IsNotFound(err error) bool           { return Is(err, ErrNotFound) }
func IsAlreadyExists(err error) bool      { return Is(err, ErrAlreadyExists) }
func IsFailedPrecondition(err error) bool { return Is(err, ErrFailedPrecondition) }
func IsConflict(err error) bool           { return Is(err, ErrConflict) }
func IsUnavailable(err error) bool        { return Is(err, ErrUnavailable) }
func IsPermissionDenied(err error) bool   { return Is(err, ErrPermissionDenied) }
func IsUnauthenticated(err error) bool    { return Is(err, ErrUnauthenticated) }
func IsOutOfRange(err error) bool         { return Is(err, ErrOutOfRange) }
func IsResourceExhausted(err error) bool  { return Is(err, ErrResourceExhausted) }
func IsInternal(err error) bool           { return Is(err, ErrInternal) }
func IsCanceled(err error) bool           { return Is(err, context.Canceled) }
func IsDeadlineExceeded(err error) bool   { return Is(err, context.DeadlineExceeded) }
func IsNotLeader(err error) bool          { return Is(err, ErrNotLeader) }
func IsNodeRemoved(err error) bool        { return Is(err, ErrNodeRemoved) }
func IsNotReady(err error) bool           { return Is(err, ErrNotReady) }
