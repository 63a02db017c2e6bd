package controlapi

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/raftstore"
)

// errInvalid marks a request that failed validation.
var errInvalid = errors.New("invalid argument")

// errPrecondition marks a request the current state does not allow.
var errPrecondition = errors.New("failed precondition")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errInvalid}, args...)...)
}

func preconditionf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errPrecondition}, args...)...)
}

// toStatus maps an internal error to a gRPC status; it is the only place
// where error classes become codes.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, errInvalid), errors.Is(err, raftstore.ErrAmbiguous), errors.Is(err, raftstore.ErrEntryTooLarge):
		code = codes.InvalidArgument
	case errors.Is(err, errPrecondition):
		code = codes.FailedPrecondition
	case errors.Is(err, raftstore.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, raftstore.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, raftstore.ErrVersionConflict):
		code = codes.Aborted
	case errors.Is(err, raftstore.ErrNotLeader), errors.Is(err, raftstore.ErrClosed):
		code = codes.Unavailable
	case errors.Is(err, raftstore.ErrCompacted):
		code = codes.OutOfRange
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	msg := err.Error()
	// The class is in the code; the message keeps only what went wrong.
	msg = strings.TrimPrefix(msg, errInvalid.Error()+": ")
	msg = strings.TrimPrefix(msg, errPrecondition.Error()+": ")
	return status.Error(code, msg)
}
