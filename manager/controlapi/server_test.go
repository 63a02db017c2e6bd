package controlapi

import (
	"context"
	"github.com/shoal-dev/shoal/errdefs"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// newServer is a control API over a real one-node raft store (in-memory
// log) holding a cluster object.
func newServer(t testing.TB) (*Server, *raftstore.Store) {
	t.Helper()
	_, trans := raft.NewInmemTransport("solo:4242")
	st, err := raftstore.Open(raftstore.Config{
		NodeID: "solo", InMemory: true, Transport: trans, Bootstrap: true,
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !st.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("the store never led")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "c1"}, Name: "test"})
	}); err != nil {
		t.Fatal(err)
	}
	return New(st, slog.New(slog.NewTextHandler(io.Discard, nil))), st
}

func addNode(t testing.TB, st *raftstore.Store, id string, role shoalv1.NodeRole, state shoalv1.NodeState) {
	t.Helper()
	if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
		return tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: id}, Role: role,
			Spec:   &shoalv1.NodeSpec{Name: id, DesiredRole: role},
			Status: &shoalv1.NodeStatus{State: state}})
	}); err != nil {
		t.Fatal(err)
	}
}

// wantCode checks err as a caller sees it: through ToGRPC, as the server's
// interceptor applies it at the edge.
func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	err = errdefs.ToGRPC(err)
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msgPart) {
		t.Fatalf("got %v, want %s containing %q", err, code, msgPart)
	}
}

// TestRemoveNode: a manager must be demoted first, a READY node needs
// force, and a removed node's id is remembered in the cluster object
// (its certificate is refused as removed from then on).
func TestRemoveNode(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	addNode(t, st, "mgr", shoalv1.NodeRole_NODE_ROLE_MANAGER, shoalv1.NodeState_NODE_STATE_READY)
	addNode(t, st, "wrk", shoalv1.NodeRole_NODE_ROLE_WORKER, shoalv1.NodeState_NODE_STATE_READY)
	addNode(t, st, "dead", shoalv1.NodeRole_NODE_ROLE_WORKER, shoalv1.NodeState_NODE_STATE_DOWN)

	_, err := s.RemoveNode(ctx, &shoalv1.RemoveNodeRequest{Ref: "mgr", Force: true})
	wantCode(t, err, codes.FailedPrecondition, "demote it first")
	_, err = s.RemoveNode(ctx, &shoalv1.RemoveNodeRequest{Ref: "wrk"})
	wantCode(t, err, codes.FailedPrecondition, "--force")
	_, err = s.RemoveNode(ctx, &shoalv1.RemoveNodeRequest{Ref: "nosuch"})
	wantCode(t, err, codes.NotFound, "nosuch")

	if _, err := s.RemoveNode(ctx, &shoalv1.RemoveNodeRequest{Ref: "dead"}); err != nil {
		t.Fatalf("removing a DOWN worker: %v", err)
	}
	if _, err := s.RemoveNode(ctx, &shoalv1.RemoveNodeRequest{Ref: "wrk", Force: true}); err != nil {
		t.Fatalf("removing a READY worker with force: %v", err)
	}
	view := st.View()
	for _, id := range []string{"dead", "wrk"} {
		if _, ok := raftstore.Get[*shoalv1.Node](view, id); ok {
			t.Errorf("node %s still stored", id)
		}
	}
	if _, ok := raftstore.Get[*shoalv1.Node](view, "mgr"); !ok {
		t.Error("the refused removal of mgr deleted it")
	}
	c := raftstore.List[*shoalv1.Cluster](view)[0]
	if got := c.GetRemovedNodes(); !slices.Equal(got, []string{"dead", "wrk"}) {
		t.Errorf("cluster.removed_nodes = %v, want [dead wrk]", got)
	}
}
