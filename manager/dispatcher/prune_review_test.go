package dispatcher

import (
	"context"
	"fmt"
	"testing"

	"github.com/shoal-dev/shoal/raftstore"
)

// TestRemovedNodeForgotten: once a node is removed from the cluster the
// leader's liveness state forgets it (its last heartbeat and the period
// it was told), so node churn does not grow them for ever.
func TestRemovedNodeForgotten(t *testing.T) {
	c := startLive(t, nil, "a", "b")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c.open(t, ctx, "a")
	has := func(id string) (bool, bool) {
		c.d.mu.Lock()
		defer c.d.mu.Unlock()
		_, seen := c.d.lastSeen[id]
		_, told := c.d.told[id]
		return seen, told
	}
	if seen, told := has("a"); !seen || !told {
		t.Fatalf("node a with an open session: seen %v, told %v", seen, told)
	}
	if _, err := c.store.Update(ctx, func(tx raftstore.WriteTx) error {
		return tx.Delete(raftstore.KindNode, "a", 0)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node a forgotten", func() error {
		if seen, told := has("a"); seen || told {
			return fmt.Errorf("removed node a: seen %v, told %v", seen, told)
		}
		return nil
	})
	if seen, _ := has("b"); !seen {
		t.Error("node b, still in the cluster, forgotten")
	}
}
