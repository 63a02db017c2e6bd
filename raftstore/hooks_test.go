package raftstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// OnCommit hears of each Update on the leader; OnApply of each entry
// applied, on every member.
func TestMetricsHooks(t *testing.T) {
	var commits, applies [2]atomic.Int64
	c := newCluster(t, 2, clusterOpts{tweak: func(cfg *Config) {
		i := 0
		if cfg.NodeID != testNodePrefix+"0" {
			i = 1
		}
		cfg.OnCommit = func(d time.Duration) {
			if d > 0 {
				commits[i].Add(1)
			}
		}
		cfg.OnApply = func(time.Duration) { applies[i].Add(1) }
	}})
	leader := c.nodes[0].store
	beforeC, beforeA := commits[0].Load(), applies[1].Load()
	for range 3 {
		if _, err := leader.Update(context.Background(), func(tx WriteTx) error {
			return tx.Create(&shoalv1.Service{Meta: &shoalv1.Meta{}, Spec: &shoalv1.ServiceSpec{Name: NewID()}})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if n := commits[0].Load() - beforeC; n != 3 {
		t.Fatalf("leader OnCommit calls: %d, want 3", n)
	}
	if n := commits[1].Load(); n != 0 {
		t.Fatalf("follower OnCommit calls: %d, want 0", n)
	}
	c.eventually("the follower applied the 3 entries", func() error {
		if n := applies[1].Load() - beforeA; n < 3 {
			return fmt.Errorf("follower OnApply calls: %d", n)
		}
		return nil
	})
}
