package dispatcher

import (
	"context"
	"errors"
	"log/slog"
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
