package controlapi

import (
	"bytes"
	"context"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestRotateGossipKey: each rotation prepends a new 32-byte key and keeps
// at most two (the previous stays accepted); the keys never leave the
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
		want := min(i+1, MaxGossipKeys)
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
	if k := keys(); len(k) != 2 || !bytes.Equal(k[0], prev[0]) {
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
