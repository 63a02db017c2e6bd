package agentapi

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/agent/logs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Batching of TaskLogs responses: a message goes out when it holds
// batchLines lines or when its first line has waited batchDelay, whichever
// comes first, so a busy log costs few messages and a quiet one is still
// seen at once.
const (
	batchLines = 256
	batchDelay = 50 * time.Millisecond
)

// TaskLogs streams the logs of the tasks asked for.
func (s *Server) TaskLogs(req *shoalv1.TaskLogsRequest, stream shoalv1.AgentAPI_TaskLogsServer) error {
	ctx := stream.Context()
	o, err := readOptions(req.GetOptions())
	if err != nil {
		return toStatus(err)
	}
	if len(req.GetTaskIds()) == 0 {
		return toStatus(fmt.Errorf("%w: task_ids: at least one task id is required", errInvalid))
	}
	held := map[string]*shoalv1.Task{}
	for _, t := range s.cfg.Tasks() {
		held[t.GetMeta().GetId()] = t
	}
	var warnings []string
	var srcs []logSource
	seen := map[string]bool{}
	for _, id := range req.GetTaskIds() {
		if seen[id] {
			continue
		}
		seen[id] = true
		if !validTaskID(id) {
			return toStatus(fmt.Errorf("%w: task id %q is not a task id", errInvalid, id))
		}
		path := s.cfg.LogPath(id)
		if path == "" {
			warnings = append(warnings, fmt.Sprintf("task %q is not on node %q (any more): its logs are not available", id, s.cfg.NodeID))
			continue
		}
		tmpl := &shoalv1.LogMessage{TaskId: id, NodeId: s.cfg.NodeID}
		if t := held[id]; t != nil {
			tmpl.ServiceId, tmpl.ServiceName, tmpl.Slot = t.GetServiceId(), t.GetServiceName(), t.GetSlot()
		}
		srcs = append(srcs, logSource{path: path, tmpl: tmpl})
	}
	s.log.Debug("task logs", "tasks", len(srcs), "follow", o.Follow, "unknown", len(warnings))
	if len(warnings) > 0 {
		if err := stream.Send(&shoalv1.LogsResponse{Warnings: warnings}); err != nil {
			return err
		}
	}
	if len(srcs) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &warner{nudge: make(chan struct{}, 1)}
	ins := make([]<-chan *shoalv1.LogMessage, len(srcs))
	var wg sync.WaitGroup
	for i, src := range srcs {
		ch := make(chan *shoalv1.LogMessage, 64)
		ins[i] = ch
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(ch)
			err := logs.Read(ctx, src.path, o, func(e logs.Entry) error {
				m := &shoalv1.LogMessage{TaskId: src.tmpl.TaskId, NodeId: src.tmpl.NodeId, ServiceId: src.tmpl.ServiceId,
					ServiceName: src.tmpl.ServiceName, Slot: src.tmpl.Slot, Time: timestamppb.New(e.Time), Stream: e.Stream, Data: e.Line}
				select {
				case ch <- m:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			if err != nil && ctx.Err() == nil {
				s.log.Warn("reading a task log", "task_id", src.tmpl.TaskId, "err", err)
				w.add(fmt.Sprintf("task %q on node %q: reading its log: %v", src.tmpl.TaskId, s.cfg.NodeID, err))
			}
		}()
	}
	defer func() {
		cancel()
		wg.Wait() // no reader outlives the call
	}()
	var merged <-chan *shoalv1.LogMessage
	if o.Follow {
		// Following, lines go out as they are written; a merge by time
		// would hold every task back until each one has a line.
		merged = fanIn(ctx, ins)
	} else {
		merged = mergeByTime(ctx, ins)
	}
	if err := sendBatches(ctx, merged, w, stream.Send); err != nil {
		if ctx.Err() != nil {
			return toStatus(context.Cause(ctx))
		}
		return err
	}
	return nil
}

// logSource is one task's log and the labels of its lines.
type logSource struct {
	path string
	tmpl *shoalv1.LogMessage
}

func readOptions(o *shoalv1.LogsOptions) (logs.Options, error) {
	out := logs.Options{Tail: logs.AllLines, Follow: o.GetFollow()}
	if o != nil && o.Tail != nil {
		if o.GetTail() < 0 {
			return out, fmt.Errorf("%w: options.tail: must not be negative (got %d)", errInvalid, o.GetTail())
		}
		out.Tail = int(min(o.GetTail(), int64(1<<31-1)))
	}
	if o.GetSince() != nil {
		if err := o.GetSince().CheckValid(); err != nil {
			return out, fmt.Errorf("%w: options.since: %v", errInvalid, err)
		}
		out.Since = o.GetSince().AsTime()
	}
	return out, nil
}

// warner collects warnings raised while streaming; the sender takes them
// with its next message.
type warner struct {
	mu    sync.Mutex // guards list
	list  []string
	nudge chan struct{} // has a value when list may be non-empty
}

func (w *warner) add(msg string) {
	w.mu.Lock()
	w.list = append(w.list, msg)
	w.mu.Unlock()
	select {
	case w.nudge <- struct{}{}:
	default:
	}
}

func (w *warner) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.list
	w.list = nil
	return out
}

// sendBatches sends what arrives on in, batched, with pending warnings,
// until in closes (then flushes and returns nil) or sending fails.
func sendBatches(ctx context.Context, in <-chan *shoalv1.LogMessage, w *warner, send func(*shoalv1.LogsResponse) error) error {
	var batch []*shoalv1.LogMessage
	timer := time.NewTimer(batchDelay)
	timer.Stop()
	flush := func() error {
		warnings := w.take()
		if len(batch) == 0 && len(warnings) == 0 {
			return nil
		}
		timer.Stop()
		err := send(&shoalv1.LogsResponse{Messages: batch, Warnings: warnings})
		batch = nil
		return err
	}
	for {
		select {
		case m, ok := <-in:
			if !ok {
				return flush()
			}
			if len(batch) == 0 {
				timer.Reset(batchDelay)
			}
			batch = append(batch, m)
			if len(batch) >= batchLines {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-timer.C:
			if err := flush(); err != nil {
				return err
			}
		case <-w.nudge:
			if err := flush(); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// fanIn forwards every input to one channel, closed when all inputs are.
func fanIn(ctx context.Context, ins []<-chan *shoalv1.LogMessage) <-chan *shoalv1.LogMessage {
	out := make(chan *shoalv1.LogMessage, 64)
	var wg sync.WaitGroup
	for _, in := range ins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range in {
				select {
				case out <- m:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}

// mergeByTime merges inputs that are each in time order into one stream
// in time order (ties: the earlier input first). It holds one message per
// input, so memory does not grow with the logs' size; a linear scan for
// the smallest head is cheap for the few tasks one node runs of a service.
func mergeByTime(ctx context.Context, ins []<-chan *shoalv1.LogMessage) <-chan *shoalv1.LogMessage {
	out := make(chan *shoalv1.LogMessage, 64)
	go func() {
		defer close(out)
		heads := make([]*shoalv1.LogMessage, len(ins))
		live := slices.Clone(ins)
		recv := func(i int) bool {
			select {
			case m, ok := <-live[i]:
				if !ok {
					live[i] = nil
				}
				heads[i] = m
				return true
			case <-ctx.Done():
				return false
			}
		}
		for i := range live {
			if !recv(i) {
				return
			}
		}
		for {
			best := -1
			for i, h := range heads {
				if h != nil && (best < 0 || h.GetTime().AsTime().Before(heads[best].GetTime().AsTime())) {
					best = i
				}
			}
			if best < 0 {
				return
			}
			select {
			case out <- heads[best]:
			case <-ctx.Done():
				return
			}
			heads[best] = nil
			if live[best] != nil && !recv(best) {
				return
			}
		}
	}()
	return out
}
