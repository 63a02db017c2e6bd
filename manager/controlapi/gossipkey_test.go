package controlapi

import (
	"bytes"
	"context"
	"testing"

	"github.com/shoal-dev/shoal/manager/gossipkeys"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestRotateGossipKey: each rotation prepends a new 32-byte key and keeps
// the older ones (up to gossipkeys.MaxKeys, until the leader's Dropper
// drops them after a grace period); the keys never leave the
// managers through GetCluster or UpdateCluster.
func TestRotateGossipKey(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	keys := func() [][]byte {
		c, _ := raftstore.ClusterOf(st.View())
		return c.GetGossipKeys()
	}
	var prev [][]byte
	for i := 0; i < 3; i++ {
		resp, err := s.UpdateCluster(ctx, &shoalv1.UpdateClusterRequest{IgnoreVersion: true, Settings: &shoalv1.ClusterSettings{}, RotateGossipKey: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetCluster().GetGossipKeys()) != 0 {
			t.Fatal("UpdateCluster returned gossip keys")
		}
		k := keys()
		want := min(i+1, gossipkeys.MaxKeys)
		if len(k) != want || len(k[0]) != 32 {
			t.Fatalf("rotation %d: %d keys (first %d bytes), want %d of 32", i, len(k), len(k[0]), want)
		}
		if len(prev) > 0 && (!bytes.Equal(k[1], prev[0]) || bytes.Equal(k[0], prev[0])) {
			t.Fatalf("rotation %d: new key not prepended before the previous one", i)
		}
		prev = k
	}
	// A settings update without the flag keeps the keys.
	if _, err := s.UpdateCluster(ctx, &shoalv1.UpdateClusterRequest{IgnoreVersion: true, Settings: &shoalv1.ClusterSettings{}}); err != nil {
		t.Fatal(err)
	}
	if k := keys(); len(k) != len(prev) || !bytes.Equal(k[0], prev[0]) {
		t.Fatal("an update without --rotate-gossip-key changed the keys")
	}
	got, err := s.GetCluster(ctx, &shoalv1.GetClusterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.GetCluster().GetGossipKeys()) != 0 {
		t.Fatal("GetCluster returned gossip keys")
	}
}

// TestRemoveNodeRotatesGossipKey: removing a node rotates the gossip key
// in the same raft entry as the removal (the node is gone and a new key
// is first, the old one still accepted until the Dropper drops it); a
// refused removal rotates nothing.
func TestRemoveNodeRotatesGossipKey(t *testing.T) {
	s, st := newServer(t)
	ctx := context.Background()
	if _, err := s.UpdateCluster(ctx, &shoalv1.UpdateClusterRequest{IgnoreVersion: true, Settings: &shoalv1.ClusterSettings{}, RotateGossipKey: true}); err != nil {
		t.Fatal(err)
	}
	addNode(t, st, "wrk", shoalv1.NodeRole_NODE_ROLE_WORKER, shoalv1.NodeState_NODE_STATE_READY)
	before, _ := raftstore.ClusterOf(st.View())
	if _, err := s.RemoveNode(ctx, &shoalv1.RemoveNodeRequest{Ref: "wrk"}); err == nil {
		t.Fatal("removing a READY node without force succeeded")
	}
	if c, _ := raftstore.ClusterOf(st.View()); len(c.GetGossipKeys()) != 1 {
		t.Fatal("a refused removal rotated the gossip key")
	}
	idx := st.View().Index()
	if _, err := s.RemoveNode(ctx, &shoalv1.RemoveNodeRequest{Ref: "wrk", Force: true}); err != nil {
		t.Fatal(err)
	}
	view := st.View()
	if view.Index() != idx+1 {
		t.Fatalf("removal took %d raft entries, want 1", view.Index()-idx)
	}
	c, _ := raftstore.ClusterOf(view)
	k := c.GetGossipKeys()
	if len(k) != 2 || bytes.Equal(k[0], before.GetGossipKeys()[0]) || !bytes.Equal(k[1], before.GetGossipKeys()[0]) {
		t.Fatalf("after removal: %d keys; want a new key first and the removed node's key second", len(k))
	}
}
