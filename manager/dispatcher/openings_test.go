package dispatcher

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// TestSessionOpeningsShareAnEntry: the openings waiting when the writer
// starts a write are written READY in one raft entry (one version for all
// their nodes); an unknown node is answered ErrNotFound without failing
// the others, and a node opening twice gets its later hello.
func TestSessionOpeningsShareAnEntry(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	names := []string{"a", "b", "c"}
	if _, err := s.Update(ctx, func(tx raftstore.WriteTx) error {
		for _, id := range names {
			if err := tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: id}, Status: &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_DOWN}}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	d := New(Config{Store: s, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	opens := make(chan openRequest, maxOpeningBatch)
	reqs := []openRequest{
		{nodeID: "a", hello: &shoalv1.AgentHello{Addr: "a:1"}},
		{nodeID: "b", hello: &shoalv1.AgentHello{Addr: "b:1"}},
		{nodeID: "ghost", hello: &shoalv1.AgentHello{Addr: "ghost:1"}},
		{nodeID: "c", hello: &shoalv1.AgentHello{Addr: "c:1"}},
		{nodeID: "a", hello: &shoalv1.AgentHello{Addr: "a:2"}},
	}
	for i := range reqs {
		reqs[i].done = make(chan error, 1)
		opens <- reqs[i] // all waiting before the writer starts
	}
	wctx, wcancel := context.WithCancel(ctx)
	writerDone := make(chan error, 1)
	go func() { writerDone <- d.writeOpenings(wctx, opens) }()
	for _, r := range reqs {
		select {
		case err := <-r.done:
			switch {
			case r.nodeID == "ghost" && !errors.Is(err, raftstore.ErrNotFound):
				t.Fatalf("unknown node's opening: %v, want ErrNotFound", err)
			case r.nodeID != "ghost" && err != nil:
				t.Fatalf("opening of %s: %v", r.nodeID, err)
			}
		case <-ctx.Done():
			t.Fatalf("opening of %s not answered", r.nodeID)
		}
	}
	wcancel()
	if err := <-writerDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("writer: %v", err)
	}
	view := s.View()
	versions := map[uint64]bool{}
	for _, id := range names {
		n, _ := raftstore.Get[*shoalv1.Node](view, id)
		if n.GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_READY {
			t.Fatalf("node %s: %v, want READY", id, n.GetStatus().GetState())
		}
		versions[n.GetMeta().GetVersion()] = true
	}
	if len(versions) != 1 {
		t.Fatalf("the openings were written in %d entries (versions %v), want one", len(versions), versions)
	}
	if n, _ := raftstore.Get[*shoalv1.Node](view, "a"); n.GetStatus().GetAddr() != "a:2" {
		t.Fatalf("node a's address %q, want the later hello's a:2", n.GetStatus().GetAddr())
	}
}

// TestSessionOpeningOfEndedSessionNotWritten: an opening whose session has
// ended (replaced by the node's next session, which cancelled it) is not
// written, even when it reached the writer after the live one: the node
// gets the live session's hello, and the ended opening is answered with
// its context's error. A batch of ended openings writes nothing.
func TestSessionOpeningOfEndedSessionNotWritten(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := s.Update(ctx, func(tx raftstore.WriteTx) error {
		for _, id := range []string{"a", "b"} {
			if err := tx.Create(&shoalv1.Node{Meta: &shoalv1.Meta{Id: id}, Status: &shoalv1.NodeStatus{State: shoalv1.NodeState_NODE_STATE_DOWN}}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	d := New(Config{Store: s, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ended, end := context.WithCancel(ctx)
	end()
	req := func(rctx context.Context, node, addr string) openRequest {
		return openRequest{ctx: rctx, nodeID: node, hello: &shoalv1.AgentHello{Addr: addr}, done: make(chan error, 1)}
	}
	live, stale := req(ctx, "a", "a:new"), req(ended, "a", "a:old")
	d.writeOpeningBatch(ctx, []openRequest{live, stale})
	if err := <-live.done; err != nil {
		t.Fatalf("live session's opening: %v", err)
	}
	if err := <-stale.done; !errors.Is(err, context.Canceled) {
		t.Fatalf("ended session's opening: %v, want context.Canceled", err)
	}
	if n, _ := raftstore.Get[*shoalv1.Node](s.View(), "a"); n.GetStatus().GetAddr() != "a:new" {
		t.Fatalf("node a's address %q, want the live session's a:new", n.GetStatus().GetAddr())
	}

	before, _ := raftstore.Get[*shoalv1.Node](s.View(), "b")
	only := req(ended, "b", "b:1")
	d.writeOpeningBatch(ctx, []openRequest{only})
	if err := <-only.done; !errors.Is(err, context.Canceled) {
		t.Fatalf("ended session's opening: %v, want context.Canceled", err)
	}
	if n, _ := raftstore.Get[*shoalv1.Node](s.View(), "b"); n.GetMeta().GetVersion() != before.GetMeta().GetVersion() || n.GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_DOWN {
		t.Fatalf("node b written for an ended session: %v", n.GetStatus())
	}
}
