package dispatcher

import (
	"sync"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// outbox holds what a session's receiver has for its agent (a heartbeat
// acknowledgement, a new manager list) until the session loop, the
// goroutine that sends everything else, sends it. The receiver never
// sends: a Send waits while the agent does not read (gRPC's write quota,
// the stream's flow-control window), and a receiver waiting there (or on
// the stream's lock, held by the session loop's blocked Send) stopped
// reading the agent's heartbeats, which its agent sends from a goroutine
// of their own: the node was judged DOWN while it heartbeated, and its
// tasks were replaced (a rolling update's benchmark lost all 5 nodes to an
// agent handler stalled for 28 s). With the outbox the receiver keeps
// reading, and noting the node seen, whatever the send side does.
//
// One slot each, coalescing, so a stalled agent costs the session no
// growing queue: an acknowledgement naming a period replaces the pending
// one, but a plain one never replaces one naming a period (the agent
// would never learn it: the receiver sends a period once, ackFor); the
// newest manager list replaces an older one. The agent takes any message
// as a sign of life and the newest period and list as current (agent's
// session), so one of each, sent late, tells it all it missed.
type outbox struct {
	mu       sync.Mutex
	ack      *shoalv1.SessionMessage // pending acknowledgement; nil: none
	managers *shoalv1.SessionMessage // pending manager list; nil: none
	ready    chan struct{}           // a token after a put: something may be pending
}

func newOutbox() *outbox { return &outbox{ready: make(chan struct{}, 1)} }

// put leaves an acknowledgement and a manager list (nil: none) for the
// session loop, together: what one message of the agent brought goes out
// before what the next brings.
func (o *outbox) put(ack, managers *shoalv1.SessionMessage) {
	if ack == nil && managers == nil {
		return
	}
	o.mu.Lock()
	if ack != nil && (o.ack == nil || ack.GetHeartbeatAck().GetHeartbeatPeriodMs() > 0) {
		o.ack = ack
	}
	if managers != nil {
		o.managers = managers
	}
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) signal() {
	select {
	case o.ready <- struct{}{}:
	default: // already signalled; the session loop takes all that is pending
	}
}

// take empties the outbox.
func (o *outbox) take() (ack, managers *shoalv1.SessionMessage) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ack, managers = o.ack, o.managers
	o.ack, o.managers = nil, nil
	return ack, managers
}

// flush sends what is pending, the acknowledgement before the list (the
// order the receiver sent them in before). Only the session loop calls
// it.
func (o *outbox) flush(stream shoalv1.Dispatcher_SessionServer) error {
	ack, managers := o.take()
	if ack != nil {
		if err := stream.Send(ack); err != nil {
			return err
		}
	}
	if managers != nil {
		return stream.Send(managers)
	}
	return nil
}
