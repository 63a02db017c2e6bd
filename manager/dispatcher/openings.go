package dispatcher

import (
	"context"
	"errors"
	"fmt"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// maxOpeningBatch bounds the session openings written in one raft entry
// (a node object is ~1 KB with its description).
const maxOpeningBatch = 512

// openRequest is a session opening waiting for its node to be written
// READY (with the hello's addresses and description).
type openRequest struct {
	// ctx is the session's: an opening whose session has ended (replaced
	// by the node's next one, or given up) is not written.
	ctx    context.Context
	nodeID string
	hello  *shoalv1.AgentHello
	done   chan error // buffered: the writer never waits on a session
}

// ended says whether the opening's session has ended.
func (r openRequest) ended() bool { return r.ctx != nil && r.ctx.Err() != nil }

// openNode writes nodeID READY for a session opening, through the
// openings writer: sessions that open together share one raft entry.
func (d *Dispatcher) openNode(ctx context.Context, opens chan<- openRequest, nodeID string, hello *shoalv1.AgentHello) error {
	req := openRequest{ctx: ctx, nodeID: nodeID, hello: hello, done: make(chan error, 1)}
	select {
	case opens <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeOpenings writes the nodes of opening sessions READY, every opening
// waiting when a write starts in the same raft entry (up to
// maxOpeningBatch): while 5,000 nodes connected, each opening was a raft
// entry of its own, and the openings queued behind each other's commits.
// The batch is whatever arrived during the previous commit, so it grows
// with the rate of openings and a lone opening is written at once.
func (d *Dispatcher) writeOpenings(ctx context.Context, opens <-chan openRequest) error {
	batch := make([]openRequest, 0, maxOpeningBatch)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case req := <-opens:
			batch = append(batch[:0], req)
		}
	gather:
		for len(batch) < maxOpeningBatch {
			select {
			case req := <-opens:
				batch = append(batch, req)
			default:
				break gather
			}
		}
		d.writeOpeningBatch(ctx, batch)
		clear(batch)
	}
}

// writeOpeningBatch writes batch in one entry and answers each opening: a
// node not in the store gets ErrNotFound (the others are written
// regardless), a failed write its error for all. A version conflict (a
// node changed between the read and the commit) is retried as
// setNodeState retries it. An opening whose session has ended is answered
// with its context's error and not written: a node's sessions may reach
// the writer in another order than they opened (the later one cancels the
// earlier), and the earlier's hello, last in the batch, was written over
// the live session's.
func (d *Dispatcher) writeOpeningBatch(ctx context.Context, batch []openRequest) {
	last := make(map[string]int, len(batch)) // node id → its last live request
	for i, req := range batch {
		if !req.ended() {
			last[req.nodeID] = i
		}
	}
	if len(last) == 0 {
		for _, req := range batch {
			req.done <- req.ctx.Err()
		}
		return
	}
	var missing map[int]bool
	var err error
	for attempt := 0; ; attempt++ {
		missing = map[int]bool{}
		_, err = d.cfg.Store.Update(ctx, func(tx raftstore.WriteTx) error {
			clear(missing)
			for i, req := range batch {
				if j, live := last[req.nodeID]; !live || j != i {
					continue // ended, or the same node again later in the batch (a reconnection): its newer hello is written
				}
				n, ok := raftstore.Get[*shoalv1.Node](tx, req.nodeID)
				if !ok {
					missing[i] = true
					continue
				}
				if err := tx.Update(withState(n, shoalv1.NodeState_NODE_STATE_READY, "", req.hello)); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil || !errors.Is(err, raftstore.ErrVersionConflict) || attempt >= 5 {
			break
		}
	}
	for i, req := range batch {
		j, live := last[req.nodeID]
		switch {
		case !live:
			req.done <- req.ctx.Err() // ended before the write: nothing written for it
		case j != i && req.ended():
			req.done <- req.ctx.Err()
		case missing[j] && err == nil:
			req.done <- fmt.Errorf("node %q: %w", req.nodeID, raftstore.ErrNotFound)
		default:
			req.done <- err
		}
	}
}
