package cli

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestErrorMessage(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{errors.New("plain"), "plain"},
		{status.Error(codes.InvalidArgument, "spec.name: must not be empty"), "spec.name: must not be empty"},
		{status.Error(codes.PermissionDenied, "role worker may not call X"), "permission denied: role worker may not call X"},
		{status.Error(codes.PermissionDenied, "permission denied: already"), "permission denied: already"},
		{status.Error(codes.Unavailable, "no manager reachable"), "unavailable: no manager reachable"},
		{status.Error(codes.Unauthenticated, "no client certificate"), "not authenticated: no client certificate"},
	}
	for _, c := range cases {
		if got := errorMessage(c.err); got != c.want {
			t.Errorf("errorMessage(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
