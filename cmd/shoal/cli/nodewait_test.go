package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// nodeDataDir is a data dir whose node.json names node id.
func nodeDataDir(t *testing.T, id string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "node.json"), []byte(`{"node_id":"`+id+`","role":"manager"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startingNode is a node admitted just now whose agent has not connected.
func startingNode(id, name string, version uint64) *shoalv1.Node {
	return &shoalv1.Node{Meta: &shoalv1.Meta{Id: id, Version: version}, Spec: &shoalv1.NodeSpec{Name: name},
		Status: &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_UNKNOWN, LastHeartbeat: timestamppb.Now()}}
}

// TestNodeLsWaitsForLocalNode: `node ls` on the data dir of a node that
// has just started (listed UNKNOWN: its agent's session not open yet)
// follows that node's changes and shows it Ready once its agent connected,
// rather than the Unknown the list had a moment before. Another node not
// connected yet is shown as Starting, and not waited for.
func TestNodeLsWaitsForLocalNode(t *testing.T) {
	c := newCLICluster(t)
	c.mgr.nodes = []*shoalv1.Node{startingNode("n1", "m1", 5), startingNode("n2", "w1", 6)}
	var from atomic.Uint64
	c.mgr.watch = func(req *shoalv1.WatchRequest, st grpc.ServerStreamingServer[shoalv1.WatchEvent]) error {
		from.Store(req.GetFromIndex())
		ready := startingNode("n1", "m1", 7)
		ready.Status.State = shoalv1.NodeState_NODE_STATE_READY
		for _, n := range []*shoalv1.Node{startingNode("n2", "w1", 6), ready} {
			if err := st.Send(&shoalv1.WatchEvent{Index: n.GetMeta().GetVersion(), Action: shoalv1.WatchAction_WATCH_ACTION_UPDATE,
				Object: &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Node{Node: n}}}); err != nil {
				return err
			}
		}
		<-st.Context().Done()
		return nil
	}
	code, out, errOut := c.run("--data-dir", nodeDataDir(t, "n1"), "node", "ls")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 3 || !strings.Contains(lines[1], "m1") || !strings.Contains(lines[1], "Ready") ||
		!strings.Contains(lines[2], "w1") || !strings.Contains(lines[2], "Starting") {
		t.Fatalf("node ls:\n%s\nwant m1 Ready (its agent connected) and w1 Starting", out)
	}
	if from.Load() != 6 {
		t.Fatalf("watched from index %d, want 6 (after the listed version 5)", from.Load())
	}
}

// TestNodeLsNoWaitForOthers: `node ls` on a data dir whose node is listed
// as connected (or whose data dir holds no node) does not watch at all.
func TestNodeLsNoWaitForOthers(t *testing.T) {
	c := newCLICluster(t)
	ready := startingNode("n1", "m1", 5)
	ready.Status.State = shoalv1.NodeState_NODE_STATE_READY
	c.mgr.nodes = []*shoalv1.Node{ready, startingNode("n2", "w1", 6)}
	var watched atomic.Bool
	c.mgr.watch = func(*shoalv1.WatchRequest, grpc.ServerStreamingServer[shoalv1.WatchEvent]) error {
		watched.Store(true)
		return nil
	}
	for _, dir := range []string{nodeDataDir(t, "n1"), t.TempDir()} {
		if code, out, errOut := c.run("--data-dir", dir, "node", "ls"); code != 0 || !strings.Contains(out, "Starting") {
			t.Fatalf("exit %d: %s%s", code, out, errOut)
		}
	}
	if watched.Load() {
		t.Fatal("node ls watched although its own node was not starting")
	}
}

// TestAwaitStartingBounded: a local node whose agent does not connect is
// waited for only up to the bound, then shown as listed.
func TestAwaitStartingBounded(t *testing.T) {
	c := newCLICluster(t) // its watch sends nothing
	cl, err := client.Dial(context.Background(), client.Config{Hosts: []string{c.addr}, CertDir: c.certDir})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes := []*shoalv1.Node{startingNode("n1", "m1", 5)}
	got := awaitStarting(ctx, cl.Control, nodes, "n1", 200*time.Millisecond)
	if ctx.Err() != nil || len(got) != 1 || got[0] != nodes[0] {
		t.Fatalf("got %v (ctx %v), want the listed node after the bound", got, ctx.Err())
	}
}

// TestAwaitStartingNodeRemoved: the local node removed while `node ls`
// waits for it (its watch's DELETE) ends the wait at once, and the node
// is not shown; the wait's bound here is far beyond the call's deadline
// given, so returning before that deadline shows it did not wait it out.
func TestAwaitStartingNodeRemoved(t *testing.T) {
	c := newCLICluster(t)
	c.mgr.watch = func(_ *shoalv1.WatchRequest, st grpc.ServerStreamingServer[shoalv1.WatchEvent]) error {
		if err := st.Send(&shoalv1.WatchEvent{Index: 9, Action: shoalv1.WatchAction_WATCH_ACTION_DELETE,
			Object: &shoalv1.StoreObject{Object: &shoalv1.StoreObject_Node{Node: startingNode("n1", "m1", 9)}}}); err != nil {
			return err
		}
		<-st.Context().Done()
		return nil
	}
	cl, err := client.Dial(context.Background(), client.Config{Hosts: []string{c.addr}, CertDir: c.certDir})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes := []*shoalv1.Node{startingNode("n0", "m0", 4), startingNode("n1", "m1", 5), startingNode("n2", "w1", 6)}
	got := awaitStarting(ctx, cl.Control, nodes, "n1", time.Hour)
	if ctx.Err() != nil || len(got) != 2 || got[0] != nodes[0] || got[1] != nodes[2] {
		t.Fatalf("got %v (ctx %v), want n0 and n2 once n1 was removed", got, ctx.Err())
	}
	if len(nodes) != 3 || nodes[1].GetMeta().GetId() != "n1" || nodes[2].GetMeta().GetId() != "n2" {
		t.Fatalf("the listed nodes were changed in place: %v", nodes)
	}
}
