package dispatcher

import (
	"context"
	"errors"
	"log/slog"

	"github.com/shoal-dev/shoal/errdefs"
	"github.com/shoal-dev/shoal/raftstore"
)

// received ends a session whose receiver ended with err: a goodbye is
// acted on (a restarting node keeps its tasks through its restart grace),
// anything else ends the session with err. The session loop calls it
// between the batches of a burst too, not only once its queue is empty: a
// node's queue kept full by a steady stream of events (an overlay
// network's tasks go to every session) otherwise held the goodbye until
// the agent stopped waiting for it, and the node, not marked as
// restarting, was judged down and its tasks replaced.
func (d *Dispatcher) received(runCtx context.Context, log *slog.Logger, nodeID string, sess *session, err error) error {
	if bye := (*goodbyeError)(nil); errors.As(err, &bye) {
		return d.goodbye(runCtx, log, nodeID, sess, bye.msg)
	}
	log.Info("session ended", "reason", errString(err))
	return err
}

// closed is why a session whose context ended ends: leadership lost (the
// agent is told the leader, if known, and goes straight to it), or its
// heartbeats missed or a newer session of the node.
func (d *Dispatcher) closed(runCtx context.Context) error {
	if runCtx.Err() != nil {
		return d.leaderUnavailable()
	}
	return errdefs.Unavailablef("session closed (heartbeat missed or replaced)")
}

// subEnded is why a session whose subscription ended ends. The
// subscription also ends with the session's context, and the loop may see
// that first (it was busy with a burst, or both were ready at its select):
// then the context's reason is the session's, not a resync. Otherwise the
// node fell a whole ring behind or the store was restored from a
// snapshot: the agent reconnects and gets a fresh full set.
func (d *Dispatcher) subEnded(ctx, runCtx context.Context, sub raftstore.Subscription) error {
	if ctx.Err() != nil {
		return d.closed(runCtx)
	}
	return errdefs.Unavailablef("session resync needed: %v", sub.Err())
}
