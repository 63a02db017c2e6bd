package errdefs

import (
	"context"
	"errors"
	"strings"
	"syscall"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo domain of Shoal's details.
const Domain = "shoal.dev"

// ErrorInfo reasons and metadata keys.
const (
	ReasonNotLeader   = "NOT_LEADER"
	ReasonNodeRemoved = "NODE_REMOVED"
	ReasonNoQuorum    = "NO_QUORUM"
	ReasonNotReady    = "NOT_READY"
	MetaLeader        = "leader"
)

// mapping is the one table between classes and codes, in the order classes
// are tried: an error of several classes gets the first one's code.
var mapping = []struct {
	class  error
	marker func(error) bool
	code   codes.Code
}{
	{ErrInvalidArgument, is[invalidArgumentMarker], codes.InvalidArgument},
	{ErrFailedPrecondition, is[failedPreconditionMarker], codes.FailedPrecondition},
	{ErrNotFound, is[notFoundMarker], codes.NotFound},
	{ErrAlreadyExists, is[alreadyExistsMarker], codes.AlreadyExists},
	{ErrConflict, is[conflictMarker], codes.Aborted},
	{ErrPermissionDenied, is[permissionDeniedMarker], codes.PermissionDenied},
	{ErrUnauthenticated, is[unauthenticatedMarker], codes.Unauthenticated},
	{ErrUnavailable, is[unavailableMarker], codes.Unavailable},
	{ErrOutOfRange, is[outOfRangeMarker], codes.OutOfRange},
	{ErrResourceExhausted, is[resourceExhaustedMarker], codes.ResourceExhausted},
	// A full disk is a resource exhausted wherever it happens.
	{syscall.ENOSPC, nil, codes.ResourceExhausted},
	{context.DeadlineExceeded, nil, codes.DeadlineExceeded},
	{context.Canceled, nil, codes.Canceled},
	{ErrInternal, nil, codes.Internal},
}

// Marker interfaces: a package that may not import errdefs (raftstore)
// gives its errors a class with one of these methods, as containerd does.
type (
	invalidArgumentMarker interface {
		error
		InvalidArgument()
	}
	failedPreconditionMarker interface {
		error
		FailedPrecondition()
	}
	notFoundMarker interface {
		error
		NotFound()
	}
	alreadyExistsMarker interface {
		error
		AlreadyExists()
	}
	conflictMarker interface {
		error
		Conflict()
	}
	permissionDeniedMarker interface {
		error
		PermissionDenied()
	}
	unauthenticatedMarker interface {
		error
		Unauthenticated()
	}
	unavailableMarker interface {
		error
		Unavailable()
	}
	outOfRangeMarker interface {
		error
		OutOfRange()
	}
	resourceExhaustedMarker interface {
		error
		ResourceExhausted()
	}
)

// is reports whether an error in err's chain has marker method M.
func is[M error](err error) bool {
	_, ok := errors.AsType[M](err)
	return ok
}

// code returns the code of err's class; codes.Internal if it has none.
func code(err error) codes.Code {
	for _, m := range mapping {
		if errors.Is(err, m.class) || (m.marker != nil && m.marker(err)) {
			return m.code
		}
	}
	return codes.Internal
}

// ToGRPC turns err into a gRPC status error: the code of its class, its
// text as the message, and ErrorInfo details for protocol states. An error
// that already carries a status (received from another server, perhaps
// wrapped) keeps it. nil stays nil.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[grpcStatus](err); ok {
		st, _ := status.FromError(err)
		return st.Err()
	}
	c := code(err)
	msg := err.Error()
	// The class is in the code; the message keeps only what went wrong
	// (errors made with "%w: ..." and a sentinel named like their class,
	// such as image.ErrInvalidArgument, start with that name).
	for _, m := range mapping {
		if m.code == c && m.marker != nil {
			msg = strings.TrimPrefix(msg, m.class.Error()+": ")
		}
	}
	st := status.New(c, msg)
	var info *errdetails.ErrorInfo
	var nl *NotLeaderError
	switch {
	case errors.As(err, &nl):
		info = &errdetails.ErrorInfo{Reason: ReasonNotLeader, Domain: Domain, Metadata: map[string]string{MetaLeader: nl.Leader}}
	case errors.Is(err, ErrNodeRemoved):
		info = &errdetails.ErrorInfo{Reason: ReasonNodeRemoved, Domain: Domain}
	case errors.Is(err, ErrNoQuorum):
		info = &errdetails.ErrorInfo{Reason: ReasonNoQuorum, Domain: Domain}
	case errors.Is(err, ErrNotReady):
		info = &errdetails.ErrorInfo{Reason: ReasonNotReady, Domain: Domain}
	}
	if info != nil {
		if withInfo, derr := st.WithDetails(info); derr == nil {
			st = withInfo
		}
	}
	return st.Err()
}

// remote is an error received over gRPC: its text and status are the
// received ones (status.Code and status.Convert still see them), and it is
// of the class of its code and of the protocol states in its details.
type remote struct {
	err     error // the status error as received
	st      *status.Status
	classes []error
}

func (e *remote) Error() string              { return e.err.Error() }
func (e *remote) GRPCStatus() *status.Status { return e.st }
func (e *remote) Unwrap() []error            { return append([]error{e.err}, e.classes...) }

// FromGRPC turns a status error received from a server into a classified
// error (see remote); other errors, nil included, are returned as they are.
// Unknown codes (Unknown, Unimplemented, DataLoss, ...) give no class.
func FromGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*remote](err); ok {
		return err
	}
	if _, ok := errors.AsType[grpcStatus](err); !ok {
		return err
	}
	st, _ := status.FromError(err)
	r := &remote{err: err, st: st}
	for _, m := range mapping {
		if m.code == st.Code() {
			r.classes = append(r.classes, m.class)
			break
		}
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != Domain {
			continue
		}
		switch info.GetReason() {
		case ReasonNotLeader:
			r.classes = append(r.classes, &NotLeaderError{Leader: info.GetMetadata()[MetaLeader]})
		case ReasonNodeRemoved:
			r.classes = append(r.classes, ErrNodeRemoved)
		case ReasonNoQuorum:
			r.classes = append(r.classes, ErrNoQuorum)
		case ReasonNotReady:
			r.classes = append(r.classes, ErrNotReady)
		}
	}
	return r
}

// UnaryServerInterceptor applies ToGRPC to every handler's error. Put it
// first in the chain so the errors of later interceptors cross it too.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		return resp, ToGRPC(err)
	}
}

// StreamServerInterceptor applies ToGRPC to every stream handler's error.
// Put it first in the chain.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return ToGRPC(h(srv, ss))
	}
}

// grpcStatus is an error carrying a gRPC status.
type grpcStatus interface {
	error
	GRPCStatus() *status.Status
}
