package trust_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// benchCall is a unary call as gRPC hands it to the authorizer: an admin's
// verified certificate and the metadata a Go client sends.
func benchCall(tb testing.TB) (*trust.Authorizer, context.Context) {
	t, ok := tb.(*testing.T)
	if !ok {
		t = &testing.T{}
	}
	root := newRoot(t, "c1")
	admin := parseCert(t, adminCreds(t, root).CertPEM)
	a := &trust.Authorizer{Policy: trust.DefaultPolicy(), ClusterID: "c1",
		Current: func(_ context.Context, id trust.Identity) (trust.Role, error) { return id.Role, nil }}
	ctx := metadata.NewIncomingContext(peerCtx(admin), metadata.Pairs(
		":authority", "127.0.0.1:7946", "content-type", "application/grpc", "user-agent", "grpc-go/1.85.0", "grpc-accept-encoding", "gzip"))
	return a, ctx
}

func authorizeOnce(a *trust.Authorizer, ctx context.Context) error {
	_, err := a.Unary()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: shoalv1.Control_UpdateService_FullMethodName},
		func(ctx context.Context, _ any) (any, error) {
			if _, ok := trust.IdentityFrom(ctx); !ok {
				panic("no identity")
			}
			return nil, nil
		})
	return err
}

// BenchmarkAuthorizeUnary: the authorizer's work on one UpdateService call
// by an admin certificate (the store check itself stubbed out).
func BenchmarkAuthorizeUnary(b *testing.B) {
	a, ctx := benchCall(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := authorizeOnce(a, ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAuthorizeCallAllocations: the authorizer's own allocations on an
// authorized call are the identity's context and its serial (10 before:
// a copy of all the metadata looking for a token, the context in two
// objects, the serial's conversion buffer).
func TestAuthorizeCallAllocations(t *testing.T) {
	a, ctx := benchCall(t)
	if n := testing.AllocsPerRun(200, func() {
		if err := authorizeOnce(a, ctx); err != nil {
			t.Fatal(err)
		}
	}); n > 2 {
		t.Errorf("%v allocations per call, want at most 2", n)
	}
}

// BenchmarkPolicyLookup: a method matched by its service's prefix (every
// Control call).
func BenchmarkPolicyLookup(b *testing.B) {
	p := trust.DefaultPolicy()
	for b.Loop() {
		if _, ok := p.Lookup(shoalv1.Control_UpdateService_FullMethodName); !ok {
			b.Fatal("not found")
		}
	}
}
