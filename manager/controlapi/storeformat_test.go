package controlapi

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// Promoting a node whose description does not say it reads the raft store
// format the managers write (raftstore.StoreFormat) is refused with the
// field and reason, and changes nothing; once it reports it, it is promoted.
func TestPromoteNeedsStoreFormat(t *testing.T) {
	s, st := newServer(t)
	addNode(t, st, "w1", shoalv1.NodeRole_NODE_ROLE_WORKER, shoalv1.NodeState_NODE_STATE_READY)
	promote := func() error {
		n, _ := raftstore.Get[*shoalv1.Node](st.View(), "w1")
		spec := proto.Clone(n.GetSpec()).(*shoalv1.NodeSpec)
		spec.DesiredRole = shoalv1.NodeRole_NODE_ROLE_MANAGER
		_, err := s.UpdateNode(context.Background(), &shoalv1.UpdateNodeRequest{NodeId: "w1", Version: n.GetMeta().GetVersion(), Spec: spec})
		return err
	}
	setFormat := func(f uint32) {
		t.Helper()
		if _, err := st.Update(context.Background(), func(tx raftstore.WriteTx) error {
			n, _ := raftstore.Get[*shoalv1.Node](tx, "w1")
			n = proto.Clone(n).(*shoalv1.Node)
			n.Description = &shoalv1.NodeDescription{Hostname: "w1", StoreFormat: f}
			return tx.Update(n)
		}); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, promote(), codes.FailedPrecondition, "spec.desired_role") // no description yet
	setFormat(raftstore.StoreFormat - 1)
	wantCode(t, promote(), codes.FailedPrecondition, "raft store format")
	if n, _ := raftstore.Get[*shoalv1.Node](st.View(), "w1"); n.GetSpec().GetDesiredRole() != shoalv1.NodeRole_NODE_ROLE_WORKER {
		t.Fatalf("a refused promotion changed the node: %v", n.GetSpec())
	}
	setFormat(raftstore.StoreFormat)
	if err := promote(); err != nil {
		t.Fatalf("promoting a node of this release: %v", err)
	}
}
