package trust

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// mkToken makes a token and the stored entry for it.
func mkToken(t *testing.T, name, role string) (string, *shoalv1.ApiToken) {
	t.Helper()
	id, err := NewTokenID()
	if err != nil {
		t.Fatal(err)
	}
	tok, hash, err := NewAPIToken(id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, TokenPrefix+id+"_") || strings.Contains(string(hash), tok) {
		t.Fatalf("token %q for id %q", tok, id)
	}
	return tok, &shoalv1.ApiToken{Id: id, Name: name, Role: role, SecretHash: hash}
}

// TestVerifyAPIToken: a good token acts with its role; a wrong secret, a
// revoked, expired, unknown or malformed token is Unauthenticated with a
// message saying why and never the secret.
func TestVerifyAPIToken(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	good, goodT := mkToken(t, "dash", "viewer")
	rev, revT := mkToken(t, "old", "admin")
	revT.Revoked = true
	exp, expT := mkToken(t, "tmp", "operator")
	expT.ExpiresAt = timestamppb.New(now.Add(-time.Second))
	live, liveT := mkToken(t, "ci", "operator")
	liveT.ExpiresAt = timestamppb.New(now.Add(time.Hour))
	other, _ := mkToken(t, "elsewhere", "admin")
	tokens := []*shoalv1.ApiToken{goodT, revT, expT, liveT}
	id, secret, _ := ParseAPIToken(good)
	wrong := TokenPrefix + id + "_" + strings.Repeat("A", len(secret))

	id1, err := VerifyAPIToken(tokens, "c1", good, now)
	if err != nil || id1.Role != RoleViewerToken || id1.NodeID != "dash" || id1.Serial != goodT.GetId() || id1.ClusterID != "c1" {
		t.Fatalf("good token: %+v, %v", id1, err)
	}
	if id2, err := VerifyAPIToken(tokens, "c1", live, now); err != nil || TokenRoleOf(id2) != TokenOperator {
		t.Fatalf("live token: %+v, %v", id2, err)
	}
	for _, tc := range []struct{ name, tok, msg string }{
		{"wrong secret", wrong, "wrong secret"},
		{"revoked", rev, "has been revoked"},
		{"expired", exp, "expired at"},
		{"unknown", other, "is not known"},
		{"no prefix", "abc", "malformed"},
		{"no secret", TokenPrefix + "abc_", "malformed"},
		{"short secret", TokenPrefix + id + "_xyz", "wrong length"},
		// The id left out: the secret's part before its own '_' must not
		// be echoed as an id (nor a megabyte of anything).
		{"no id", TokenPrefix + "SeCrEtPaRt_" + secret[11:], "malformed"},
		{"huge id", TokenPrefix + strings.Repeat("f", 1<<20) + "_" + secret, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyAPIToken(tokens, "c1", tc.tok, now)
			if !errdefs.IsUnauthenticated(err) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %.200v, want Unauthenticated with %q", err, tc.msg)
			}
			if _, sec, perr := ParseAPIToken(tc.tok); perr == nil && strings.Contains(err.Error(), sec) {
				t.Fatalf("error %q repeats the secret", err)
			}
			if strings.Contains(err.Error(), "SeCrEtPaRt") || len(err.Error()) > 200 {
				t.Fatalf("error %.200q repeats what is not a token id", err)
			}
		})
	}
}

// TestTokenPolicyCoversEveryMethod: every method of Control, Logs and Ops
// has a row, with the role the API promises; a new method without a row
// fails here.
func TestTokenPolicyCoversEveryMethod(t *testing.T) {
	want := map[string]TokenRole{
		"GetCluster": TokenViewer, "ListNodes": TokenViewer, "GetNode": TokenViewer,
		"GetService": TokenViewer, "ListServices": TokenViewer, "GetNetwork": TokenViewer,
		"ListNetworks": TokenViewer, "ListTasks": TokenViewer, "GetTask": TokenViewer,
		"Watch": TokenViewer, "ServiceLogs": TokenViewer, "TaskStats": TokenViewer,
		"UpdateNode": TokenOperator, "CreateService": TokenOperator, "UpdateService": TokenOperator,
		"PatchService":  TokenOperator,
		"RemoveService": TokenOperator, "RollbackService": TokenOperator, "RebalanceService": TokenOperator,
		"CreateNetwork": TokenOperator, "RemoveNetwork": TokenOperator, "PruneNetworks": TokenOperator,
		"RotateJoinToken": TokenAdmin, "UpdateCluster": TokenAdmin, "CreateAdminCertificate": TokenAdmin,
		"ListAdminCertificates": TokenAdmin, "RevokeAdminCertificate": TokenAdmin, "CreateToken": TokenAdmin,
		"ListTokens": TokenAdmin, "RevokeToken": TokenAdmin, "RemoveNode": TokenAdmin, "TaskExec": TokenAdmin,
	}
	pol := TokenPolicy()
	seen := 0
	for _, sd := range []grpc.ServiceDesc{shoalv1.Control_ServiceDesc, shoalv1.Logs_ServiceDesc, shoalv1.Ops_ServiceDesc} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, s := range sd.Streams {
			names = append(names, s.StreamName)
		}
		for _, n := range names {
			full := "/" + sd.ServiceName + "/" + n
			got, ok := pol[full]
			if !ok {
				t.Errorf("%s has no row in TokenPolicy: decide which token role may call it", full)
				continue
			}
			seen++
			if w, ok := want[n]; !ok {
				t.Errorf("%s: add the expected role to this test", full)
			} else if got != w {
				t.Errorf("%s: token role %s, want %s", full, got, w)
			}
		}
	}
	if seen != len(pol) {
		t.Errorf("TokenPolicy has %d rows, %d of them methods of Control, Logs and Ops", len(pol), seen)
	}
}

// TestAuthorizerTokens: a call with a bearer token is decided by the
// token's role and TokenPolicy, before and without any certificate; a
// method without a row (Dispatcher) is refused to every token; no Tokens
// function refuses tokens.
func TestAuthorizerTokens(t *testing.T) {
	viewer, vT := mkToken(t, "dash", "viewer")
	operator, oT := mkToken(t, "ci", "operator")
	admin, aT := mkToken(t, "root", "admin")
	tokens := []*shoalv1.ApiToken{vT, oT, aT}
	a := &Authorizer{Policy: DefaultPolicy(), ClusterID: "c1",
		Tokens: func(_ context.Context, tok string) (Identity, error) {
			return VerifyAPIToken(tokens, "c1", tok, time.Now())
		}}
	call := func(a *Authorizer, tok, method string) (Identity, error) {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
		var got Identity
		_, err := a.Unary()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method}, func(ctx context.Context, _ any) (any, error) {
			got, _ = IdentityFrom(ctx)
			return nil, nil
		})
		return got, err
	}
	for _, tc := range []struct {
		name, tok, method string
		ok                bool
	}{
		{"viewer lists", viewer, shoalv1.Control_ListServices_FullMethodName, true},
		{"viewer watches", viewer, shoalv1.Control_Watch_FullMethodName, true},
		{"viewer creates", viewer, shoalv1.Control_CreateService_FullMethodName, false},
		{"operator creates", operator, shoalv1.Control_CreateService_FullMethodName, true},
		{"operator drains", operator, shoalv1.Control_UpdateNode_FullMethodName, true},
		{"operator removes node", operator, shoalv1.Control_RemoveNode_FullMethodName, false},
		{"operator makes tokens", operator, shoalv1.Control_CreateToken_FullMethodName, false},
		{"operator execs", operator, shoalv1.Ops_TaskExec_FullMethodName, false},
		{"admin makes tokens", admin, shoalv1.Control_CreateToken_FullMethodName, true},
		{"admin execs", admin, shoalv1.Ops_TaskExec_FullMethodName, true},
		{"admin opens a session", admin, shoalv1.Dispatcher_Session_FullMethodName, false},
		{"admin raft membership", admin, shoalv1.RaftMembership_JoinRaft_FullMethodName, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := call(a, tc.tok, tc.method)
			if tc.ok != (err == nil) {
				t.Fatalf("err %v, want ok=%v", err, tc.ok)
			}
			if err == nil && TokenRoleOf(id) == 0 {
				t.Fatalf("handler saw identity %+v", id)
			}
			if err != nil && !errdefs.IsPermissionDenied(err) {
				t.Fatalf("refused with %v, want PermissionDenied", err)
			}
		})
	}
	if _, err := call(a, "shoal_nope_x", shoalv1.Control_ListServices_FullMethodName); !errdefs.IsUnauthenticated(err) {
		t.Fatalf("bad token: %v", err)
	}
	closed := &Authorizer{Policy: DefaultPolicy()}
	if _, err := call(closed, viewer, shoalv1.Control_ListServices_FullMethodName); !errdefs.IsUnauthenticated(err) {
		t.Fatalf("tokens with no Tokens check: %v", err)
	}
}

// TestTokenStreamsBounded: one token holds at most MaxTokenStreams
// streams open at once (another token, and the same one once a stream
// ends, may open more).
func TestTokenStreamsBounded(t *testing.T) {
	viewer, vT := mkToken(t, "dash", "viewer")
	other, oT := mkToken(t, "ci", "viewer")
	tokens := []*shoalv1.ApiToken{vT, oT}
	a := &Authorizer{Policy: DefaultPolicy(), ClusterID: "c1", MaxTokenStreams: 2,
		Tokens: func(_ context.Context, tok string) (Identity, error) {
			return VerifyAPIToken(tokens, "c1", tok, time.Now())
		}}
	release := make(chan struct{})
	started := make(chan struct{}, 8)
	open := func(tok string) chan error {
		done := make(chan error, 1)
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
		go func() {
			done <- a.Stream()(nil, &tokenStream{ctx: ctx}, &grpc.StreamServerInfo{FullMethod: shoalv1.Control_Watch_FullMethodName},
				func(any, grpc.ServerStream) error { started <- struct{}{}; <-release; return nil })
		}()
		return done
	}
	first, second := open(viewer), open(viewer)
	<-started
	<-started
	var once sync.Once
	stop := func() { once.Do(func() { close(release) }) }
	defer stop()
	select {
	case err := <-open(viewer):
		if !errdefs.IsResourceExhausted(err) {
			t.Fatalf("third stream of one token: %v", err)
		}
	case <-started:
		t.Fatal("one token opened a third stream")
	}
	third := open(other)
	<-started
	stop()
	for _, d := range []chan error{first, second, third} {
		if err := <-d; err != nil {
			t.Fatal(err)
		}
	}
	again := open(viewer)
	<-started
	if err := <-again; err != nil {
		t.Fatalf("a stream after the others ended: %v", err)
	}
}

// tokenStream is a server stream with a given context.
type tokenStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *tokenStream) Context() context.Context { return s.ctx }
