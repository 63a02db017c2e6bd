package cli

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/errdefs"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// received is a status as it arrives off the wire, message as sent.
func received(code codes.Code, msg string) error {
	return status.FromProto(&spb.Status{Code: int32(code), Message: msg}).Err()
}

func TestErrorMessage(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{errors.New("plain"), "plain"},
		{received(codes.InvalidArgument, "spec.name: must not be empty"), "spec.name: must not be empty"},
		{received(codes.PermissionDenied, "role worker may not call X"), "permission denied: role worker may not call X"},
		{received(codes.PermissionDenied, "permission denied: already"), "permission denied: already"},
		{received(codes.Unavailable, "no manager reachable"), "unavailable: no manager reachable"},
		{received(codes.Unauthenticated, "no client certificate"), "not authenticated: no client certificate"},
	}
	for _, c := range cases {
		if got := errorMessage(c.err); got != c.want {
			t.Errorf("errorMessage(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestRetryConflict(t *testing.T) {
	calls := 0
	err := retryConflict(func() error {
		calls++
		if calls < 3 {
			return errdefs.ToGRPC(errdefs.Conflictf("version 3 is stale (current 4)"))
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("conflicts then success: err=%v after %d calls", err, calls)
	}
	calls = 0
	err = retryConflict(func() error { calls++; return errdefs.ToGRPC(errdefs.Conflictf("stale")) })
	if status.Code(err) != codes.Aborted || calls != conflictAttempts {
		t.Fatalf("endless conflict: err=%v after %d calls, want ABORTED after %d", err, calls, conflictAttempts)
	}
	calls = 0
	err = retryConflict(func() error { calls++; return errdefs.ToGRPC(errdefs.InvalidArgumentf("spec.name: bad")) })
	if status.Code(err) != codes.InvalidArgument || calls != 1 {
		t.Fatalf("other errors are not retried: err=%v after %d calls", err, calls)
	}
}

// TestNoManagerFailsFast: with nothing listening at the manager address, a
// call and a waiting command fail after --ready-wait (not --timeout, 10
// minutes here: returning at all shows they did not wait it out), saying
// that nothing listens there rather than gRPC's transport error.
func TestNoManagerFailsFast(t *testing.T) {
	c := newCLICluster(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	for _, args := range [][]string{
		{"node", "ls"},
		{"service", "create", "--name", "web", "--no-resolve-image", "demo:1"},
	} {
		var out, errOut bytes.Buffer
		code := Main(context.Background(), append([]string{"--host", dead, "--cert-dir", c.certDir, "--timeout", "10m", "--ready-wait", "300ms"}, args...), &out, &errOut)
		if code == 0 || !strings.Contains(errOut.String(), "no manager listens at "+dead+" (connection refused)") {
			t.Errorf("%v: exit %d\nstderr: %s", args, code, errOut.String())
		}
	}
}
