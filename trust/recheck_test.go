package trust_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/trust"
)

// batchStore is a node table the batched recheck reads: every OngoingView
// is one "read", and the checks made through it are counted per read.
type batchStore struct {
	mu      sync.Mutex // guards nodes, removed, checks
	nodes   map[string]*shoalv1.Node
	removed map[string]bool
	checks  []int // checks made through each view, in order
}

func (b *batchStore) set(id string, n *shoalv1.Node, removed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nodes[id], b.removed[id] = n, removed
}

// view is OngoingView: one copy of the table, and the check over it.
func (b *batchStore) view() func(trust.Identity) (trust.Role, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	nodes, removed := make(map[string]*shoalv1.Node, len(b.nodes)), make(map[string]bool, len(b.removed))
	for k, v := range b.nodes {
		nodes[k] = v
	}
	for k, v := range b.removed {
		removed[k] = v
	}
	b.checks = append(b.checks, 0)
	i := len(b.checks) - 1
	check := trust.StoreCheckOngoing(func(id string) (*shoalv1.Node, bool) { return nodes[id], removed[id] },
		func() ([]*shoalv1.AdminCertificate, bool) { return nil, true })
	return func(id trust.Identity) (trust.Role, error) {
		b.mu.Lock()
		b.checks[i]++
		b.mu.Unlock()
		return check(id)
	}
}

// maxChecks is the most checks any one view served, and the views taken.
func (b *batchStore) maxChecks() (most, views int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.checks {
		most = max(most, c)
	}
	return most, len(b.checks)
}

// recheckLoops counts the authorizer's recheck goroutines.
func recheckLoops() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "trust.(*rechecker).loop")
}

// TestAuthorizerBatchedRecheck: with OngoingView, every open stream is
// rechecked through one read of the store per period (one view serves all
// of them), and the trust rules hold as with one check per stream: a
// removed node's stream and a demoted manager's watch end, the others go
// on. The one recheck goroutine ends with the last stream and starts again
// with the next.
func TestAuthorizerBatchedRecheck(t *testing.T) {
	root := newRoot(t, "c1")
	const mgr, wrk = shoalv1.NodeRole_NODE_ROLE_MANAGER, shoalv1.NodeRole_NODE_ROLE_WORKER
	store := &batchStore{nodes: map[string]*shoalv1.Node{}, removed: map[string]bool{}}
	const n = 12
	ids := make([]string, n)
	serials := make([]string, n)
	ctxs := make([]context.Context, n)
	for i := range n {
		ids[i] = fmt.Sprintf("m%d", i)
		cert := parseCert(t, nodeCreds(t, root, ids[i], trust.RoleManager).CertPEM)
		serials[i] = trust.SerialOf(cert)
		ctxs[i] = peerCtx(cert)
		store.set(ids[i], storeNode(ids[i], mgr, mgr, serials[i], ""), false)
	}
	full := trust.StoreCheck(func(id string) (*shoalv1.Node, bool) {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.nodes[id], store.removed[id]
	}, func() ([]*shoalv1.AdminCertificate, bool) { return nil, true })
	a := &trust.Authorizer{Policy: trust.DefaultPolicy(), Recheck: 5 * time.Millisecond,
		Current: func(_ context.Context, id trust.Identity) (trust.Role, error) { return full(id) },
		Ongoing: func(context.Context, trust.Identity) (trust.Role, error) {
			t.Error("Ongoing asked per stream although OngoingView is set")
			return "", nil
		},
		OngoingView: store.view}

	type result struct {
		i   int
		err error
	}
	done := make(chan result, n)
	stop := make([]chan struct{}, n)
	open := func(i int) {
		stop[i] = make(chan struct{})
		handler := func(_ any, ss grpc.ServerStream) error {
			select {
			case <-ss.Context().Done():
				return ss.Context().Err()
			case <-stop[i]:
				return nil
			}
		}
		go func() {
			done <- result{i, a.Stream()(nil, &ctxStream{ctx: ctxs[i]}, &grpc.StreamServerInfo{FullMethod: shoalv1.Control_Watch_FullMethodName}, handler)}
		}()
	}
	for i := range n {
		open(i)
	}
	deadline := time.After(20 * time.Second)
	// One view serves every stream: n checks through a single read.
	for most, _ := store.maxChecks(); most < n; most, _ = store.maxChecks() {
		select {
		case r := <-done:
			t.Fatalf("stream %d ended while every node is current: %v", r.i, r.err)
		case <-deadline:
			most, views := store.maxChecks()
			t.Fatalf("no view served all %d streams (at most %d checks in one of %d views)", n, most, views)
		case <-time.After(time.Millisecond): // poll the counters
		}
	}

	// Remove m3 and demote m5 (a watch needs a manager): their streams end.
	store.set(ids[3], nil, true)
	store.set(ids[5], storeNode(ids[5], mgr, wrk, serials[5], ""), false)
	for ended := map[int]bool{}; len(ended) < 2; {
		select {
		case r := <-done:
			switch r.i {
			case 3:
				if !errdefs.IsNodeRemoved(r.err) {
					t.Fatalf("removed node's stream ended with %v, want node removed", r.err)
				}
			case 5:
				checkStatus(t, r.err, codes.PermissionDenied, "")
			default:
				t.Fatalf("stream %d of a current node ended: %v", r.i, r.err)
			}
			ended[r.i] = true
		case <-deadline:
			t.Fatal("the removed or demoted node's stream was not ended")
		}
	}

	// The others close themselves; the recheck goroutine then ends.
	for i := range n {
		if i != 3 && i != 5 {
			close(stop[i])
		}
	}
	for range n - 2 {
		if r := <-done; r.err != nil {
			t.Fatalf("stream %d: %v", r.i, r.err)
		}
	}
	for recheckLoops() > 0 {
		select {
		case <-deadline:
			t.Fatal("the recheck goroutine outlived every stream")
		case <-time.After(time.Millisecond):
		}
	}

	// A stream opened afterwards is rechecked again (the loop restarts).
	_, before := store.maxChecks()
	open(0)
	for _, views := store.maxChecks(); views < before+2; _, views = store.maxChecks() {
		select {
		case r := <-done:
			t.Fatalf("stream of a current node ended: %v", r.err)
		case <-deadline:
			t.Fatal("no recheck after the loop had ended")
		case <-time.After(time.Millisecond): // poll the counter
		}
	}
	store.set(ids[0], nil, true)
	select {
	case r := <-done:
		if !errdefs.IsNodeRemoved(r.err) {
			t.Fatalf("stream of a removed node ended with %v", r.err)
		}
	case <-deadline:
		t.Fatal("a stream opened after the loop ended was not rechecked")
	}
}

// TestAuthorizerSlowOngoingHoldsOnlyItsStream: without OngoingView (a
// node's agent API, whose Ongoing asks a manager over the network), a
// caller whose check does not answer holds back only its own stream's
// rechecks: a removed node's stream still ends within periods, and the
// slow caller is not asked again while its check is out.
func TestAuthorizerSlowOngoingHoldsOnlyItsStream(t *testing.T) {
	root := newRoot(t, "c1")
	const mgr = shoalv1.NodeRole_NODE_ROLE_MANAGER
	store := &batchStore{nodes: map[string]*shoalv1.Node{}, removed: map[string]bool{}}
	ctxs := map[string]context.Context{}
	for _, id := range []string{"slow", "gone"} {
		cert := parseCert(t, nodeCreds(t, root, id, trust.RoleManager).CertPEM)
		ctxs[id] = peerCtx(cert)
		store.set(id, storeNode(id, mgr, mgr, trust.SerialOf(cert), ""), false)
	}
	full := trust.StoreCheck(func(id string) (*shoalv1.Node, bool) {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.nodes[id], store.removed[id]
	}, func() ([]*shoalv1.AdminCertificate, bool) { return nil, true })
	var mu sync.Mutex
	asking, mostAsking := 0, 0
	slowAsked := make(chan struct{}, 1)
	a := &trust.Authorizer{Policy: trust.DefaultPolicy(), Recheck: 5 * time.Millisecond,
		Current: func(_ context.Context, id trust.Identity) (trust.Role, error) { return full(id) },
		Ongoing: func(ctx context.Context, id trust.Identity) (trust.Role, error) {
			if id.NodeID != "slow" {
				return full(id)
			}
			mu.Lock()
			asking++
			mostAsking = max(mostAsking, asking)
			mu.Unlock()
			defer func() {
				mu.Lock()
				asking--
				mu.Unlock()
			}()
			select {
			case slowAsked <- struct{}{}:
			default:
			}
			<-ctx.Done() // no answer for as long as the stream lasts
			return "", errdefs.Unavailablef("no manager answered")
		}}
	type result struct {
		id  string
		err error
	}
	done := make(chan result, 2)
	stopSlow := make(chan struct{})
	for id, ctx := range ctxs {
		handler := func(_ any, ss grpc.ServerStream) error {
			select {
			case <-ss.Context().Done():
				return ss.Context().Err()
			case <-stopSlow:
				return nil
			}
		}
		go func() {
			done <- result{id, a.Stream()(nil, &ctxStream{ctx: ctx}, &grpc.StreamServerInfo{FullMethod: shoalv1.Control_Watch_FullMethodName}, handler)}
		}()
	}
	deadline := time.After(20 * time.Second)
	select {
	case <-slowAsked:
	case r := <-done:
		t.Fatalf("stream of %s ended while every node is current: %v", r.id, r.err)
	case <-deadline:
		t.Fatal("the slow caller's stream was never rechecked")
	}
	store.set("gone", nil, true)
	select {
	case r := <-done:
		if r.id != "gone" || !errdefs.IsNodeRemoved(r.err) {
			t.Fatalf("stream of %s ended with %v, want the removed node's, node removed", r.id, r.err)
		}
	case <-deadline:
		t.Fatal("the removed node's stream was not ended while another caller's check was out")
	}
	close(stopSlow)
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("slow caller's stream: %v", r.err)
		}
	case <-deadline:
		t.Fatal("the slow caller's stream did not end")
	}
	for recheckLoops() > 0 || func() bool { mu.Lock(); defer mu.Unlock(); return asking > 0 }() {
		select {
		case <-deadline:
			t.Fatal("a recheck outlived its stream")
		case <-time.After(time.Millisecond): // poll
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if mostAsking != 1 {
		t.Fatalf("%d checks of the slow caller out at once, want 1 (one at a time per stream)", mostAsking)
	}
}
