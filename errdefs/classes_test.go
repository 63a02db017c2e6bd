package errdefs_test

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/agent/image"
	"github.com/shoal-dev/shoal/errdefs"
	"github.com/shoal-dev/shoal/raftstore"
	"github.com/shoal-dev/shoal/trust"
)

// TestDomainErrors pins the codes the servers answered with before there
// was one mapping (controlapi's, agentapi's and logbroker's toStatus, the
// authorizer's and nodeca's statuses), and the messages: a class named at
// the start of a message ("invalid argument: ...") is in the code, not the
// text.
func TestDomainErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{fmt.Errorf("service %q: %w", "web", raftstore.ErrNotFound), codes.NotFound, `service "web": not found`},
		{fmt.Errorf("service %q: %w", "web", raftstore.ErrExists), codes.AlreadyExists, `service "web": already exists`},
		{fmt.Errorf("service %q: version 3 is stale (current 4): %w", "web", raftstore.ErrVersionConflict), codes.Aborted, `service "web": version 3 is stale (current 4): version conflict`},
		{raftstore.ErrNotLeader, codes.Unavailable, "not the raft leader"},
		{raftstore.ErrClosed, codes.Unavailable, "store closed"},
		{raftstore.ErrCompacted, codes.OutOfRange, "watch index no longer retained"},
		{fmt.Errorf("%w: 9 MiB", raftstore.ErrEntryTooLarge), codes.InvalidArgument, "raft entry too large: 9 MiB"},
		{fmt.Errorf("%w: %q matches 2 tasks", raftstore.ErrAmbiguous, "t"), codes.InvalidArgument, `ambiguous reference: "t" matches 2 tasks`},
		{raftstore.ErrSlowConsumer, codes.Internal, "watch consumer fell too far behind"},
		{fmt.Errorf("%w: reference %q: bad", image.ErrInvalidArgument, "x"), codes.InvalidArgument, `reference "x": bad`},
		{fmt.Errorf("image %q: %w", "x", image.ErrNotFound), codes.NotFound, `image "x": not found`},
		{fmt.Errorf("%w: not a tar archive", image.ErrBadArchive), codes.InvalidArgument, "bad image archive: not a tar archive"},
		{fmt.Errorf("%w: %q matches 2 images", image.ErrAmbiguous, "x"), codes.InvalidArgument, `ambiguous reference: "x" matches 2 images`},
		{fmt.Errorf("image upload: %w", syscall.ENOSPC), codes.ResourceExhausted, "image upload: no space left on device"},
		{fmt.Errorf("node %q: %w", "n1", trust.ErrNodeRemoved), codes.PermissionDenied, `node "n1": node removed from the cluster`},
		{fmt.Errorf("%w: x", trust.ErrNotCurrent), codes.Internal, "certificate no longer accepted: x"},
		{context.Canceled, codes.Canceled, "context canceled"},
	} {
		st, _ := status.FromError(errdefs.ToGRPC(tc.err))
		if st.Code() != tc.code || st.Message() != tc.msg {
			t.Errorf("ToGRPC(%v) = %v %q, want %v %q", tc.err, st.Code(), st.Message(), tc.code, tc.msg)
		}
	}
	// The store's sentinels keep their identity.
	if !errors.Is(fmt.Errorf("x: %w", raftstore.ErrNotFound), raftstore.ErrNotFound) || errors.Is(raftstore.ErrNotLeader, raftstore.ErrClosed) {
		t.Fatal("raftstore sentinels lost their identity")
	}
	if !errdefs.IsNotFound(fmt.Errorf("x: %w", raftstore.ErrNotFound)) || !errdefs.IsConflict(raftstore.ErrVersionConflict) {
		t.Fatal("marker classes not seen by IsX")
	}
}

// TestTrustErrNodeRemovedIsTheProtocolState: the authorizer's refusal of a removed node
// is what the agent's errdefs.IsNodeRemoved sees, once over the wire.
func TestTrustErrNodeRemovedIsTheProtocolState(t *testing.T) {
	if trust.ErrNodeRemoved != errdefs.ErrNodeRemoved {
		t.Fatal("trust.ErrNodeRemoved is not errdefs.ErrNodeRemoved")
	}
	wire := errdefs.ToGRPC(fmt.Errorf("asking: %w", trust.ErrNodeRemoved))
	if !errdefs.IsNodeRemoved(wire) {
		t.Fatal("a wrapped removal lost its detail")
	}
}
