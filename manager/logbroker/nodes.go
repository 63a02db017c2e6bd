package logbroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/logstream"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// warner takes warnings for the caller (logstream.Warnings, or a filter of
// it that drops repeats).
type warner interface{ Add(msg string) }

// streamNode streams the logs of tasks (all on node) into out until the
// node's stream ends, fails or ctx ends. Failures become warnings naming
// the node; nothing here returns an error, so one node cannot end the
// others' streams. It returns the time of the last line passed on and
// whether the stream ended cleanly (the agent finished: not a failure).
func (b *Broker) streamNode(ctx context.Context, node *shoalv1.Node, tasks []*shoalv1.Task, opts *shoalv1.LogsOptions,
	quiet map[string]bool, out chan<- *shoalv1.LogMessage, w warner) (last time.Time, clean bool) {
	nodeID := node.GetMeta().GetId()
	label := NodeLabel(node, nodeID)
	addr := node.GetStatus().GetAgentAddr()
	log := b.log.With("node_id", nodeID, "agent_addr", addr)
	lost := fmt.Sprintf("logs of %s unavailable", CountTasks(len(tasks)))
	byID := make(map[string]*shoalv1.Task, len(tasks))
	ids := make([]string, 0, len(tasks))
	for _, t := range tasks {
		byID[t.GetMeta().GetId()] = t
		ids = append(ids, t.GetMeta().GetId())
	}

	conn, err := b.dial(addr, nodeID)
	if err != nil {
		log.Warn("dialling an agent for logs", "err", err)
		w.Add(fmt.Sprintf("%s cannot be dialled at %s (%v): %s", label, addr, err, lost))
		return last, false
	}
	defer conn.Close()

	// The reach deadline covers dial, TLS and the agent's headers, which
	// it sends before reading any log; after that a quiet stream is just
	// a quiet log.
	nctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timedOut atomic.Bool
	timer := time.AfterFunc(b.cfg.ReachTimeout, func() {
		timedOut.Store(true)
		cancel()
	})
	stream, err := shoalv1.NewAgentAPIClient(conn).TaskLogs(nctx, &shoalv1.TaskLogsRequest{TaskIds: ids, Options: opts})
	if err == nil {
		_, err = stream.Header()
	}
	timer.Stop()
	switch {
	case ctx.Err() != nil:
		return last, false // the caller left
	case timedOut.Load():
		log.Warn("agent did not answer for logs", "timeout", b.cfg.ReachTimeout)
		w.Add(fmt.Sprintf("%s did not answer within %s: %s", label, b.cfg.ReachTimeout, lost))
		return last, false
	case err != nil:
		log.Warn("agent log stream failed", "err", err)
		w.Add(fmt.Sprintf("%s, agent API at %s: %s: %s", label, addr, status.Convert(err).Message(), lost))
		return last, false
	}

	received := 0
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return last, true
		}
		if err != nil {
			if ctx.Err() != nil {
				return last, false
			}
			log.Warn("agent log stream broke", "err", err, "lines", received)
			if received == 0 {
				w.Add(fmt.Sprintf("%s, agent API at %s: %s: %s", label, addr, status.Convert(err).Message(), lost))
			} else {
				w.Add(fmt.Sprintf("the log stream from %s broke (%s): logs of its %s may be incomplete",
					label, status.Convert(err).Message(), CountTasks(len(tasks))))
			}
			return last, false
		}
		for _, msg := range resp.GetWarnings() {
			if !isQuiet(msg, nodeID, ids, quiet) {
				w.Add(msg)
			}
		}
		for _, m := range resp.GetMessages() {
			fillLabels(m, byID[m.GetTaskId()], nodeID)
			select {
			case out <- m:
				received++
				if ts := m.GetTime().AsTime(); ts.After(last) {
					last = ts
				}
			case <-ctx.Done():
				return last, false
			}
		}
	}
}

// isQuiet says whether msg is the agent's "task unknown" warning for a
// task whose absence is expected.
func isQuiet(msg, nodeID string, ids []string, quiet map[string]bool) bool {
	for _, id := range ids {
		if quiet[id] && msg == logstream.UnknownTaskWarning(id, nodeID) {
			return true
		}
	}
	return false
}

// fillLabels fills in what the agent could not know about a line's task (it
// only knows tasks it still holds) from the store's copy.
func fillLabels(m *shoalv1.LogMessage, t *shoalv1.Task, nodeID string) {
	if t == nil {
		return
	}
	if m.ServiceId == "" {
		m.ServiceId = t.GetServiceId()
	}
	if m.ServiceName == "" {
		m.ServiceName = t.GetServiceName()
	}
	if m.Slot == 0 {
		m.Slot = t.GetSlot()
	}
	if m.NodeId == "" {
		m.NodeId = nodeID
	}
}

// watchService starts streams for the service's tasks that reach a node
// after the call began, until ctx ends. streamed holds the tasks already
// streamed (or reported). A watch that ends because it fell behind or the
// store was restored resumes from a fresh view, which is scanned for tasks
// missed meanwhile.
func (b *Broker) watchService(ctx context.Context, from uint64, serviceID string, streamed map[string]bool,
	start func(string, []*shoalv1.Task, map[string]bool), w *logstream.Warnings) {
	consider := func(r raftstore.Reader, t *shoalv1.Task) {
		id := t.GetMeta().GetId()
		// ACCEPTED: the agent has the task (ASSIGNED may not have reached
		// it yet, and it would answer that it does not know the task).
		if streamed[id] || t.GetServiceId() != serviceID || t.GetNodeId() == "" ||
			t.GetStatus().GetState() < shoalv1.TaskState_TASK_STATE_ACCEPTED {
			return
		}
		streamed[id] = true
		b.log.Debug("following a new task", "task_id", id, "node_id", t.GetNodeId())
		// Quiet: a task that fails at once (a crash loop, a missing
		// image) can be gone from its node before it is asked for.
		start(t.GetNodeId(), []*shoalv1.Task{t}, map[string]bool{id: true})
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		sub, err := b.cfg.Store.Watch(ctx, from+1, raftstore.KindTask)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, raftstore.ErrCompacted) && attempt < 10 {
				from = b.rescan(consider, serviceID)
				continue
			}
			w.Add(fmt.Sprintf("tasks started from now on are not followed (watching the store failed: %v)", err))
			return
		}
		err = b.followEvents(ctx, sub, consider)
		sub.Close()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, raftstore.ErrSlowConsumer) || errors.Is(err, raftstore.ErrRestored) || errors.Is(err, raftstore.ErrCompacted) {
			from = b.rescan(consider, serviceID)
			continue
		}
		w.Add(fmt.Sprintf("tasks started from now on are not followed (the store's watch ended: %v)", err))
		return
	}
}

// rescan considers every task of the service in a fresh view and returns
// the view's index.
func (b *Broker) rescan(consider func(raftstore.Reader, *shoalv1.Task), serviceID string) uint64 {
	r := b.cfg.Store.View()
	for _, t := range raftstore.Find[*shoalv1.Task](r, raftstore.IndexServiceID, serviceID) {
		consider(r, t)
	}
	return r.Index()
}

// followEvents handles task events until the subscription or ctx ends.
func (b *Broker) followEvents(ctx context.Context, sub raftstore.Subscription, consider func(raftstore.Reader, *shoalv1.Task)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-sub.C():
			if !ok {
				return sub.Err()
			}
			if ev.GetAction() == shoalv1.WatchAction_WATCH_ACTION_DELETE {
				continue
			}
			t, ok := raftstore.Unwrap(ev.GetObject()).(*shoalv1.Task)
			if !ok {
				continue
			}
			// The node is looked up in the current view: it is at least
			// as new as the event.
			consider(b.cfg.Store.View(), t)
		}
	}
}

// followNode follows the logs of tasks on one node for as long as the
// caller listens: a node that is down (or not yet reachable) is named once
// and followed again when it is back; a stream that breaks is resumed after
// the last line passed on, with back-off. Repeated warnings about the same
// trouble are said once.
func (b *Broker) followNode(ctx context.Context, nodeID string, tasks []*shoalv1.Task, opts *shoalv1.LogsOptions,
	quiet map[string]bool, out chan<- *shoalv1.LogMessage, w *logstream.Warnings) {
	once := &onceWarner{w: w, seen: map[string]bool{}}
	cur := opts
	backoff := time.Second
	for ctx.Err() == nil {
		node, why := target(b.cfg.Store.View(), nodeID, len(tasks))
		if node == nil {
			once.Add(why + "; followed again when it is back")
			if !b.waitForNode(ctx, nodeID) {
				return
			}
			continue
		}
		last, clean := b.streamNode(ctx, node, tasks, cur, quiet, out, once)
		if clean || ctx.Err() != nil {
			return
		}
		if !last.IsZero() {
			// Resume after the last line passed on: no line twice.
			next := proto.Clone(opts).(*shoalv1.LogsOptions)
			next.Tail = nil
			next.Since = timestamppb.New(last.Add(time.Nanosecond))
			cur = next
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// waitForNode waits until the store shows the node ready with an agent
// address (true), or ctx ends (false). Node changes come from the store's
// watch; if the watch cannot be had, the node is looked at every 2 s.
func (b *Broker) waitForNode(ctx context.Context, nodeID string) bool {
	for ctx.Err() == nil {
		view := b.cfg.Store.View()
		if n, _ := target(view, nodeID, 0); n != nil && n.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_READY {
			return true
		}
		sub, err := b.cfg.Store.Watch(ctx, view.Index()+1, raftstore.KindNode)
		if err != nil {
			select {
			case <-time.After(2 * time.Second):
			case <-ctx.Done():
			}
			continue
		}
		b.waitNodeEvent(ctx, sub, nodeID)
		sub.Close()
	}
	return false
}

// waitNodeEvent returns at the first event about the node (or when the
// subscription or ctx ends); the caller then looks at the node again.
func (b *Broker) waitNodeEvent(ctx context.Context, sub raftstore.Subscription, nodeID string) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-sub.C():
			if !ok {
				return
			}
			if n, isNode := raftstore.Unwrap(ev.GetObject()).(*shoalv1.Node); isNode && n.GetMeta().GetId() == nodeID {
				return
			}
		}
	}
}

// onceWarner passes each distinct warning on once.
type onceWarner struct {
	w    *logstream.Warnings
	mu   sync.Mutex // guards seen
	seen map[string]bool
}

func (o *onceWarner) Add(msg string) {
	o.mu.Lock()
	dup := o.seen[msg]
	o.seen[msg] = true
	o.mu.Unlock()
	if !dup {
		o.w.Add(msg)
	}
}
