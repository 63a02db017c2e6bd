package errdefs

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// classes lists every class with its constructor and code.
var classes = []struct {
	class error
	make  func(format string, args ...any) error
	code  codes.Code
	is    func(error) bool
}{
	{ErrInvalidArgument, InvalidArgumentf, codes.InvalidArgument, IsInvalidArgument},
	{ErrNotFound, NotFoundf, codes.NotFound, IsNotFound},
	{ErrAlreadyExists, AlreadyExistsf, codes.AlreadyExists, IsAlreadyExists},
	{ErrFailedPrecondition, FailedPreconditionf, codes.FailedPrecondition, IsFailedPrecondition},
	{ErrConflict, Conflictf, codes.Aborted, IsConflict},
	{ErrUnavailable, Unavailablef, codes.Unavailable, IsUnavailable},
	{ErrPermissionDenied, PermissionDeniedf, codes.PermissionDenied, IsPermissionDenied},
	{ErrUnauthenticated, Unauthenticatedf, codes.Unauthenticated, IsUnauthenticated},
	{ErrOutOfRange, OutOfRangef, codes.OutOfRange, IsOutOfRange},
	{ErrResourceExhausted, ResourceExhaustedf, codes.ResourceExhausted, IsResourceExhausted},
	{ErrInternal, Internalf, codes.Internal, IsInternal},
}

func TestRoundTripEveryClass(t *testing.T) {
	for _, c := range classes {
		t.Run(c.class.Error(), func(t *testing.T) {
			local := c.make("service %q: %s", "web", "what went wrong")
			if !errors.Is(local, c.class) || !c.is(local) {
				t.Fatalf("%v is not of its class", local)
			}
			if got, want := local.Error(), `service "web": what went wrong`; got != want {
				t.Fatalf("text %q, want %q (a class adds no text)", got, want)
			}
			// Go → gRPC.
			wire := ToGRPC(local)
			st, ok := status.FromError(wire)
			if !ok || st.Code() != c.code || st.Message() != local.Error() {
				t.Fatalf("ToGRPC = %v (%v), want code %v message %q", st, ok, c.code, local.Error())
			}
			// gRPC → Go.
			back := FromGRPC(wire)
			if !errors.Is(back, c.class) || !c.is(back) || !c.is(wire) {
				t.Fatalf("FromGRPC(%v) is not of class %v", wire, c.class)
			}
			if back.Error() != wire.Error() || status.Code(back) != c.code || status.Convert(back).Message() != local.Error() {
				t.Fatalf("FromGRPC changed the status: %v", back)
			}
			for _, other := range classes {
				if other.class != c.class && (errors.Is(back, other.class) || errors.Is(local, other.class)) {
					t.Fatalf("%v is also of class %v", back, other.class)
				}
			}
			// And back again: a received error crosses ToGRPC unchanged.
			again, _ := status.FromError(ToGRPC(back))
			if again.Code() != c.code || again.Message() != local.Error() {
				t.Fatalf("ToGRPC(FromGRPC) = %v", again)
			}
			// From the code side: a status made elsewhere has the class too.
			if !c.is(status.Error(c.code, "x")) {
				t.Fatalf("status with code %v is not of class %v", c.code, c.class)
			}
		})
	}
}

func TestContextErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
		is   func(error) bool
	}{
		{context.Canceled, codes.Canceled, IsCanceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded, IsDeadlineExceeded},
		{fmt.Errorf("waiting: %w", context.DeadlineExceeded), codes.DeadlineExceeded, IsDeadlineExceeded},
	} {
		wire := ToGRPC(tc.err)
		if st, _ := status.FromError(wire); st.Code() != tc.code || st.Message() != tc.err.Error() {
			t.Errorf("ToGRPC(%v) = %v", tc.err, st)
		}
		if back := FromGRPC(wire); !tc.is(back) || !tc.is(wire) {
			t.Errorf("FromGRPC(%v) lost the class", wire)
		}
	}
}

func TestWrappedErrors(t *testing.T) {
	cause := errors.New("x509: malformed certificate")
	err := fmt.Errorf("renewing: %w", InvalidArgument(fmt.Errorf("csr_pem: %w", cause)))
	if !errors.Is(err, cause) || !IsInvalidArgument(err) {
		t.Fatalf("classifying lost the chain: %v", err)
	}
	st, _ := status.FromError(ToGRPC(err))
	if st.Code() != codes.InvalidArgument || st.Message() != "renewing: csr_pem: x509: malformed certificate" {
		t.Fatalf("ToGRPC = %v", st)
	}
	// A received status wrapped by the receiver keeps its code and details.
	fwd := fmt.Errorf("forwarding: %w", FromGRPC(ToGRPC(NotLeader("10.0.0.1:4242"))))
	st, _ = status.FromError(ToGRPC(fwd))
	if st.Code() != codes.Unavailable || len(st.Details()) != 1 {
		t.Fatalf("wrapped status lost its code or details: %v", st.Proto())
	}
	if addr, ok := LeaderAddr(fwd); !ok || addr != "10.0.0.1:4242" {
		t.Fatalf("LeaderAddr(wrapped) = %q, %v", addr, ok)
	}
	// The first class in the table wins when an error has several.
	both := InvalidArgument(NotFoundf("x"))
	if st, _ := status.FromError(ToGRPC(both)); st.Code() != codes.InvalidArgument {
		t.Fatalf("invalid+not found = %v", st.Code())
	}
	if st, _ := status.FromError(ToGRPC(fmt.Errorf("writing: %w", syscall.ENOSPC))); st.Code() != codes.ResourceExhausted {
		t.Fatalf("ENOSPC = %v", st.Code())
	}
}

func TestUnclassifiedAndUnknown(t *testing.T) {
	if ToGRPC(nil) != nil || FromGRPC(nil) != nil {
		t.Fatal("nil must stay nil")
	}
	plain := errors.New("boom")
	if st, _ := status.FromError(ToGRPC(plain)); st.Code() != codes.Internal || st.Message() != "boom" {
		t.Fatalf("unclassified = %v", st)
	}
	if FromGRPC(plain) != plain {
		t.Fatal("FromGRPC must leave local errors alone")
	}
	for _, code := range []codes.Code{codes.Unknown, codes.Unimplemented, codes.DataLoss, codes.Code(99)} {
		back := FromGRPC(status.Error(code, "odd"))
		if status.Code(back) != code || back.Error() != status.Error(code, "odd").Error() {
			t.Errorf("code %v: FromGRPC = %v", code, back)
		}
		for _, c := range classes {
			if c.is(back) {
				t.Errorf("code %v is of class %v", code, c.class)
			}
		}
		if IsCanceled(back) || IsDeadlineExceeded(back) || IsNotLeader(back) || IsNodeRemoved(back) {
			t.Errorf("code %v has a protocol state", code)
		}
	}
}

func TestNotLeaderDetails(t *testing.T) {
	local := NotLeader("10.0.0.2:4242")
	if !errors.Is(local, ErrNotLeader) || !IsUnavailable(local) {
		t.Fatalf("NotLeader is not ErrNotLeader/unavailable")
	}
	wire := ToGRPC(local)
	st, _ := status.FromError(wire)
	if st.Code() != codes.Unavailable || st.Message() != "this manager is not the leader; leader=10.0.0.2:4242" {
		t.Fatalf("ToGRPC = %v", st)
	}
	info, ok := st.Details()[0].(*errdetails.ErrorInfo)
	if !ok || info.GetReason() != ReasonNotLeader || info.GetDomain() != Domain || info.GetMetadata()[MetaLeader] != "10.0.0.2:4242" {
		t.Fatalf("details = %v", st.Details())
	}
	// The address comes from the details, not the text.
	p := st.Proto()
	p.Message = "no address in here"
	rewritten := status.FromProto(p).Err()
	if addr, ok := LeaderAddr(rewritten); !ok || addr != "10.0.0.2:4242" {
		t.Fatalf("LeaderAddr = %q, %v", addr, ok)
	}
	if !IsNotLeader(rewritten) || !IsUnavailable(rewritten) {
		t.Fatal("received NotLeader lost its state")
	}
	if _, ok := LeaderAddr(status.Error(codes.Unavailable, "this manager is not the leader; leader=10.0.0.3:4242")); ok {
		t.Fatal("LeaderAddr must not parse text")
	}
	if _, ok := LeaderAddr(NotLeader("")); ok {
		t.Fatal("no leader known: no address")
	}
}

func TestNodeRemovedDetails(t *testing.T) {
	local := NodeRemovedf("node %q has been removed from the cluster", "n1")
	if !IsNodeRemoved(local) || !IsPermissionDenied(local) || !errors.Is(fmt.Errorf("x: %w", ErrNodeRemoved), ErrPermissionDenied) {
		t.Fatal("NodeRemovedf is not removed/permission denied")
	}
	wire := ToGRPC(local)
	st, _ := status.FromError(wire)
	if st.Code() != codes.PermissionDenied || st.Message() != `node "n1" has been removed from the cluster` || len(st.Details()) != 1 {
		t.Fatalf("ToGRPC = %v", st.Proto())
	}
	if !IsNodeRemoved(wire) || !IsNodeRemoved(FromGRPC(wire)) {
		t.Fatal("received removal lost its state")
	}
	if IsNodeRemoved(status.Error(codes.PermissionDenied, `node "n1" has been removed from the cluster`)) {
		t.Fatal("IsNodeRemoved must not look at text")
	}
	if IsNodeRemoved(ToGRPC(PermissionDeniedf("role worker may not call X"))) {
		t.Fatal("an ordinary refusal is not a removal")
	}
}

// A manager's "not ready" (still starting) crosses gRPC as a detail: an
// Unavailable with it is ErrNotReady on the client, one without it (an
// election in progress) is not, whatever its text.
func TestNotReadyDetails(t *testing.T) {
	local := NotReadyf("this manager holds no cluster state yet")
	if !IsNotReady(local) || !IsUnavailable(local) {
		t.Fatal("NotReadyf is not not-ready/unavailable")
	}
	wire := ToGRPC(local)
	st, _ := status.FromError(wire)
	if st.Code() != codes.Unavailable || st.Message() != "this manager holds no cluster state yet" || len(st.Details()) != 1 {
		t.Fatalf("ToGRPC = %v", st.Proto())
	}
	if !IsNotReady(wire) || !IsNotReady(FromGRPC(wire)) || !IsUnavailable(wire) {
		t.Fatal("received not-ready lost its state")
	}
	if IsNotReady(status.Error(codes.Unavailable, "manager not ready")) || IsNotReady(ToGRPC(Unavailablef("electing"))) {
		t.Fatal("an ordinary unavailable is not not-ready")
	}
}

// marked is an error classified the raftstore way, by a marker method.
type marked struct{}

func (marked) Error() string { return "version conflict" }
func (marked) Conflict()     {}

func TestMarkerMethods(t *testing.T) {
	err := fmt.Errorf("service %q: %w", "web", marked{})
	if !IsConflict(err) || IsNotFound(err) {
		t.Fatal("marker not recognised")
	}
	st, _ := status.FromError(ToGRPC(err))
	if st.Code() != codes.Aborted || st.Message() != `service "web": version conflict` {
		t.Fatalf("ToGRPC = %v", st)
	}
}

func TestInterceptors(t *testing.T) {
	unary := UnaryServerInterceptor()
	_, err := unary(context.Background(), nil, nil, func(context.Context, any) (any, error) {
		return nil, NotFoundf("task %q", "t1")
	})
	if st, _ := status.FromError(err); st.Code() != codes.NotFound || st.Message() != `task "t1"` {
		t.Fatalf("unary = %v", err)
	}
	if _, err := unary(context.Background(), nil, nil, func(context.Context, any) (any, error) { return "ok", nil }); err != nil {
		t.Fatalf("unary nil = %v", err)
	}
	stream := StreamServerInterceptor()
	err = stream(nil, nil, nil, func(any, grpc.ServerStream) error { return NodeRemovedf("gone") })
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || !IsNodeRemoved(err) {
		t.Fatalf("stream = %v", err)
	}
}
