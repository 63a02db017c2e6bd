package client

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// IsUnimplemented reports whether err says the manager does not know the
// method called (a manager of an earlier release: PatchService), so the
// caller falls back to the methods that release has.
func IsUnimplemented(err error) bool {
	return err != nil && status.Code(err) == codes.Unimplemented
}
