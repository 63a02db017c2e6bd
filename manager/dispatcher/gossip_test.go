package dispatcher

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// fakeGossip is the leader's gossip view, set by the test.
type fakeGossip struct {
	mu     sync.Mutex
	states map[string]string
}

func (f *fakeGossip) State(id string) (string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.states[id]
	if !ok {
		return "", ""
	}
	return s, id + ":7946"
}

func (f *fakeGossip) set(id, s string) {
	f.mu.Lock()
	f.states[id] = s
	f.mu.Unlock()
}

// openGossip starts a session whose hello carries a gossip address and
// returns the stream after the welcome.
func (c *liveCluster) openGossip(t *testing.T, ctx context.Context, id string) shoalv1.Dispatcher_SessionClient {
	t.Helper()
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := shoalv1.NewDispatcherClient(conn).Session(withNode(ctx, id))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&shoalv1.AgentMessage{Msg: &shoalv1.AgentMessage_Hello{Hello: &shoalv1.AgentHello{Addr: id + ":4242", GossipAddr: id + ":7946"}}}); err != nil {
		t.Fatal(err)
	}
	if first, err := stream.Recv(); err != nil || first.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", first, err)
	}
	return stream
}

// TestGossipOnSession: a node gets the cluster's gossip keys (newest
// first) and READY peers with a gossip address, itself excluded, right
// after the welcome; its hello's gossip address is recorded.
func TestGossipOnSession(t *testing.T) {
	keys := [][]byte{bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{1}, 32)}
	c := startLiveWith(t, func(cl *shoalv1.Cluster) { cl.GossipKeys = keys }, nil,
		&shoalv1.ClusterSettings{HeartbeatPeriodMs: 50, NodeDownAfterMissed: 4}, "a", "b")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c.openGossip(t, ctx, "a")
	n := c.waitState(t, "a", shoalv1.NodeState_NODE_STATE_READY)
	if n.GetStatus().GetGossipAddr() != "a:7946" {
		t.Fatalf("gossip addr %q not recorded from the hello", n.GetStatus().GetGossipAddr())
	}
	b := c.openGossip(t, ctx, "b")
	for {
		msg, err := b.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if g := msg.GetGossip(); g != nil {
			if len(g.GetKeys()) != 2 || !bytes.Equal(g.GetKeys()[0], keys[0]) {
				t.Fatalf("keys not sent newest first: %d keys", len(g.GetKeys()))
			}
			if !slices.Equal(g.GetPeers(), []string{"a:7946"}) {
				t.Fatalf("peers %v, want [a:7946]", g.GetPeers())
			}
			return
		}
	}
}

// TestGossipCorroboratesLiveness: with heartbeats stopped, a node gossip
// says dead is marked DOWN with gossip as the reason; one gossip still
// sees alive is first only unreachable (not DOWN, gossip state recorded)
// and DOWN only after UnreachableMult times the limit.
func TestGossipCorroboratesLiveness(t *testing.T) {
	g := &fakeGossip{states: map[string]string{}}
	c := startLiveWith(t, nil, func(cfg *Config) { cfg.Gossip = g },
		&shoalv1.ClusterSettings{HeartbeatPeriodMs: 100, NodeDownAfterMissed: 4}, "dead", "flaky")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	g.set("dead", "alive")
	g.set("flaky", "alive")
	deadCtx, kill := context.WithCancel(ctx)
	c.openGossip(t, deadCtx, "dead")
	flakyCtx, cut := context.WithCancel(ctx)
	c.openGossip(t, flakyCtx, "flaky")
	c.waitState(t, "dead", shoalv1.NodeState_NODE_STATE_READY)
	c.waitState(t, "flaky", shoalv1.NodeState_NODE_STATE_READY)
	eventually(t, "gossip state recorded", func() error {
		if s := c.node(t, "flaky").GetStatus().GetGossipState(); s != "alive" {
			return fmt.Errorf("gossip_state %q", s)
		}
		return nil
	})

	g.set("dead", "dead")
	kill()
	cut()
	n := c.waitState(t, "dead", shoalv1.NodeState_NODE_STATE_DOWN)
	if !strings.Contains(n.GetStatus().GetMessage(), "gossip says dead") {
		t.Fatalf("dead node's reason %q", n.GetStatus().GetMessage())
	}
	eventually(t, "flaky unreachable", func() error {
		st := c.node(t, "flaky").GetStatus()
		if !st.GetUnreachable() {
			return fmt.Errorf("not unreachable yet (%s)", st.GetState())
		}
		return nil
	})
	// Whenever it is seen unreachable it is not DOWN.
	if st := c.node(t, "flaky").GetStatus(); st.GetUnreachable() && st.GetState() == shoalv1.NodeState_NODE_STATE_DOWN {
		t.Fatal("unreachable and DOWN at once")
	}
	n = c.waitState(t, "flaky", shoalv1.NodeState_NODE_STATE_DOWN)
	if !strings.Contains(n.GetStatus().GetMessage(), "although gossip sees it alive") || n.GetStatus().GetUnreachable() {
		t.Fatalf("flaky node: reason %q unreachable %v", n.GetStatus().GetMessage(), n.GetStatus().GetUnreachable())
	}
}

// TestGossipMessageNotForRemovedNode: the gossip keys are never put in a
// message for a node the view no longer has or lists as removed. `node
// rm` deletes the node and rotates the key in one entry; a session whose
// batch of events ends before that entry (say with a settings change)
// reads the keys from the newest view, which may already hold the
// rotation: without this check the removed node got the very key that
// was rotated to shut it out.
func TestGossipMessageNotForRemovedNode(t *testing.T) {
	s := openStore(t)
	key := bytes.Repeat([]byte{7}, 32)
	if _, err := s.Update(context.Background(), func(tx raftstore.WriteTx) error {
		if err := tx.Create(&shoalv1.Cluster{Meta: &shoalv1.Meta{Id: "cluster"}, GossipKeys: [][]byte{key}, RemovedNodes: []string{"gone"}}); err != nil {
			return err
		}
		return tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: "live"}, Status: &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_READY}})
	}); err != nil {
		t.Fatal(err)
	}
	if g := gossipMessage(s.View(), "live", gossipPeers(s.View())); g == nil || len(g.GetGossip().GetKeys()) != 1 {
		t.Fatalf("a live node's gossip message: %v", g)
	}
	for _, id := range []string{"gone", "unknown"} {
		if g := gossipMessage(s.View(), id, gossipPeers(s.View())); g != nil {
			t.Errorf("node %q (removed or not in the view) was sent %d gossip keys", id, len(g.GetGossip().GetKeys()))
		}
	}
}
