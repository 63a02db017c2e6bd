package trust

import (
	"context"
	"math/big"
	"math/rand"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

// TestSerialTextIsText: serialText is big.Int.Text(16) for every serial,
// leading zero bytes and nibbles included, and the ones it leaves to Text
// (zero, negative, over 20 bytes).
func TestSerialTextIsText(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	cases := []*big.Int{big.NewInt(0), big.NewInt(1), big.NewInt(0xa), big.NewInt(0x10), big.NewInt(-5),
		new(big.Int).Lsh(big.NewInt(1), 159), new(big.Int).Lsh(big.NewInt(1), 160), new(big.Int).Lsh(big.NewInt(3), 200)}
	for range 2000 {
		b := make([]byte, 1+rng.Intn(20))
		rng.Read(b)
		b[0] &= byte(rng.Intn(256)) // leading zero bits and nibbles
		cases = append(cases, new(big.Int).SetBytes(b))
	}
	for _, n := range cases {
		if got, want := serialText(n), n.Text(16); got != want {
			t.Fatalf("serialText(%s) = %q, want %q", n, got, want)
		}
	}
}

// TestBearerTokenReadsOneKey: the token is found among a call's other
// metadata whatever the scheme's case, and looking for it copies nothing
// (FromIncomingContext copied all of the call's metadata on every call).
func TestBearerTokenReadsOneKey(t *testing.T) {
	base := []string{":authority", "m1:7946", "content-type", "application/grpc", "user-agent", "grpc-go", "grpc-accept-encoding", "gzip"}
	for _, tc := range []struct {
		auth []string
		tok  string
		ok   bool
	}{
		{nil, "", false},
		{[]string{"Bearer abc"}, "abc", true},
		{[]string{"bearer  abc "}, "abc", true},
		{[]string{"Basic x", "BEARER t2"}, "t2", true},
		{[]string{"Basic x"}, "", false},
	} {
		kv := append([]string{}, base...)
		for _, v := range tc.auth {
			kv = append(kv, "authorization", v)
		}
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))
		if tok, ok := bearerToken(ctx); tok != tc.tok || ok != tc.ok {
			t.Errorf("%v: %q %v, want %q %v", tc.auth, tok, ok, tc.tok, tc.ok)
		}
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(base...))
	if n := testing.AllocsPerRun(100, func() { bearerToken(ctx) }); n != 0 {
		t.Errorf("%v allocations looking for a token that is not there, want 0", n)
	}
}

var sink context.Context

// TestWithIdentityOneObject: the identity is found through the contexts
// gRPC and handlers wrap around it, the others' values still are, and
// setting it takes one allocation.
func TestWithIdentityOneObject(t *testing.T) {
	type otherKey struct{}
	id := Identity{NodeID: "m1", ClusterID: "c", Role: RoleManager, Serial: "ab"}
	base := context.WithValue(context.Background(), otherKey{}, "v")
	ctx := WithIdentity(base, id)
	ctx, cancel := context.WithCancelCause(ctx)
	ctx = context.WithValue(ctx, otherKey{}, "w")
	if got, ok := IdentityFrom(ctx); !ok || got != id {
		t.Fatalf("IdentityFrom = %v %v", got, ok)
	}
	if got, ok := IdentityFrom(context.WithoutCancel(ctx)); !ok || got != id {
		t.Fatalf("through WithoutCancel: %v %v", got, ok)
	}
	if v := WithIdentity(base, id).Value(otherKey{}); v != "v" {
		t.Errorf("other values: %v", v)
	}
	if _, ok := IdentityFrom(base); ok {
		t.Error("an identity where none was set")
	}
	cancel(context.DeadlineExceeded)
	if context.Cause(ctx) != context.DeadlineExceeded {
		t.Error("cancellation through the identity context lost its cause")
	}
	if !strings.Contains(WithIdentity(base, id).(interface{ String() string }).String(), "m1") {
		t.Error("String does not name the identity")
	}
	if n := testing.AllocsPerRun(100, func() { sink = WithIdentity(base, id) }); n != 1 {
		t.Errorf("WithIdentity: %v allocations, want 1", n)
	}
	// Cancellation of the parent still reaches a child of the identity
	// context (context's propagation through a foreign type).
	parent, stop := context.WithCancel(context.Background())
	child, cancelChild := context.WithCancel(WithIdentity(parent, id))
	defer cancelChild()
	stop()
	<-child.Done()
}

// TestPolicyLookupIsLongestPrefix: Lookup's walk over fullMethod's own
// prefixes answers as the walk over every key did (exact key, else the
// longest key ending in "/" that prefixes the method), on random policies.
func TestPolicyLookupIsLongestPrefix(t *testing.T) {
	byWalk := func(p Policy, m string) ([]Role, bool, bool) {
		if r, ok := p[m]; ok {
			return r, r == nil, true
		}
		best, key := -1, ""
		for k := range p {
			if strings.HasSuffix(k, "/") && strings.HasPrefix(m, k) && len(k) > best {
				best, key = len(k), k
			}
		}
		if best < 0 {
			return nil, true, false
		}
		return p[key], p[key] == nil, true
	}
	parts := []string{"", "/", "a", "b", "a/", "/a", "/a/", "/a/b", "/a/b/", "/b/", "ab", "/ab/"}
	rng := rand.New(rand.NewSource(1))
	roles := [][]Role{nil, {RoleAdmin}, {RoleManager}, {RoleWorker, RoleManager}}
	for range 3000 {
		p := Policy{}
		for range rng.Intn(6) {
			p[parts[rng.Intn(len(parts))]+parts[rng.Intn(len(parts))]] = roles[rng.Intn(len(roles))]
		}
		m := parts[rng.Intn(len(parts))] + parts[rng.Intn(len(parts))] + parts[rng.Intn(len(parts))]
		got, ok := p.Lookup(m)
		want, wantNil, wantOK := byWalk(p, m)
		if ok != wantOK || (got == nil) != wantNil || len(got) != len(want) || (len(got) > 0 && got[0] != want[0]) {
			t.Fatalf("policy %v, Lookup(%q) = %v %v, want %v %v", p, m, got, ok, want, wantOK)
		}
	}
	p := DefaultPolicy()
	if n := testing.AllocsPerRun(100, func() { p.Lookup("/shoal.v1.Control/UpdateService") }); n != 0 {
		t.Errorf("Lookup: %v allocations", n)
	}
}
