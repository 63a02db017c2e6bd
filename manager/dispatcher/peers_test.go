package dispatcher

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

func peerNode(id string, manager bool, state shoalv1.NodeState) *shoalv1.Node {
	role := shoalv1.NodeRole_NODE_ROLE_WORKER
	if manager {
		role = shoalv1.NodeRole_NODE_ROLE_MANAGER
	}
	return &shoalv1.Node{Meta: &shoalv1.Meta{Id: id}, Role: role,
		Status: &shoalv1.NodeStatus{State: state, GossipAddr: id + ":7946"}}
}

// TestGossipPeers: managers first, READY nodes only, the asking node left
// out, at most maxGossipPeers; and the candidates are listed once per
// peersTTL, not for every session (a node that became READY meanwhile is
// listed only after the TTL).
func TestGossipPeers(t *testing.T) {
	s := openStore(t)
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		if err := tx.Create(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "cluster"}, GossipKeys: [][]byte{bytes.Repeat([]byte{7}, 32)}}); err != nil {
			return err
		}
		for i := range 8 {
			if err := tx.Create(peerNode(fmt.Sprintf("w%d", i), false, shoalv1.NodeState_NODE_STATE_READY)); err != nil {
				return err
			}
		}
		if err := tx.Create(peerNode("down", false, shoalv1.NodeState_NODE_STATE_DOWN)); err != nil {
			return err
		}
		return tx.Create(peerNode("zm", true, shoalv1.NodeState_NODE_STATE_READY))
	}); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	c := &peerCache{now: func() time.Time { return now }}
	peers := func(nodeID string) []string {
		view := s.View()
		return gossipMessage(view, nodeID, c.get(view)).GetGossip().GetPeers()
	}
	if got, want := peers("w9x"), []string(nil); !slices.Equal(got, want) {
		t.Fatalf("unknown node got peers %v", got)
	}
	if got, want := peers("w0"), []string{"zm:7946", "w1:7946", "w2:7946", "w3:7946", "w4:7946"}; !slices.Equal(got, want) {
		t.Fatalf("w0's peers %v, want %v (manager first, itself left out, 5 at most)", got, want)
	}
	if got, want := peers("zm"), []string{"w0:7946", "w1:7946", "w2:7946", "w3:7946", "w4:7946"}; !slices.Equal(got, want) {
		t.Fatalf("zm's peers %v, want %v", got, want)
	}
	// A second manager: not seen within the TTL, seen after it.
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		return tx.Create(peerNode("am", true, shoalv1.NodeState_NODE_STATE_READY))
	}); err != nil {
		t.Fatal(err)
	}
	if got := peers("w0"); slices.Contains(got, "am:7946") {
		t.Fatalf("peers listed again within the TTL: %v", got)
	}
	now = now.Add(peersTTL)
	if got, want := peers("w0"), []string{"am:7946", "zm:7946", "w1:7946", "w2:7946", "w3:7946"}; !slices.Equal(got, want) {
		t.Fatalf("after the TTL w0's peers %v, want %v", got, want)
	}
}
