package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/shoal-dev/shoal/raftstore"
)

// TestDrainTakesAWholeBurst: drain takes a store subscription's events
// itself in batches of drainBatch; one entry of more than two batches
// reaches the queue whole with no later entry to wake it (a full batch is
// followed by another take, not a wait), the events replayed from before
// the drain started included, and the end is queued once the
// subscription is closed.
func TestDrainTakesAWholeBurst(t *testing.T) {
	s := openStore(t)
	sub, err := s.Watch(context.Background(), s.View().Index()+1, raftstore.KindNode)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	create(t, s, mkNode("early")) // replayed: published before drain runs
	const n = 2*drainBatch + 10
	var nodes []raftstore.Object
	for i := range n {
		nodes = append(nodes, mkNode(fmt.Sprintf("n%03d", i)))
	}
	create(t, s, nodes...)
	q := newEventQueue()
	go q.drain(sub)
	seen := map[string]bool{}
	eventually(t, "the burst queued", func() error {
		events, ended := q.take()
		if ended {
			return errors.New("ended")
		}
		for _, ev := range events {
			seen[ev.GetObject().GetNode().GetMeta().GetId()] = true
		}
		if len(seen) != n+1 {
			return fmt.Errorf("%d of %d nodes queued", len(seen), n+1)
		}
		return nil
	})
	if !seen["early"] {
		t.Fatal("the replayed event is missing")
	}
	sub.Close()
	eventually(t, "the end queued", func() error {
		if events, ended := q.take(); !ended || len(events) != 0 {
			return fmt.Errorf("ended %v with %d events", ended, len(events))
		}
		return nil
	})
}
