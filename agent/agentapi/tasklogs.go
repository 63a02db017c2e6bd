package agentapi

import (
	"context"
	"fmt"
	"sync"

	"github.com/shoal-dev/shoal/errdefs"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/agent/logs"
	"github.com/shoal-dev/shoal/logstream"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TaskLogs streams the logs of the tasks asked for.
func (s *Server) TaskLogs(req *shoalv1.TaskLogsRequest, stream shoalv1.AgentAPI_TaskLogsServer) error {
	ctx := stream.Context()
	o, err := readOptions(req.GetOptions())
	if err != nil {
		return err
	}
	if len(req.GetTaskIds()) == 0 {
		return errdefs.InvalidArgumentf("task_ids: at least one task id is required")
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
			return errdefs.InvalidArgumentf("task id %q is not a task id", id)
		}
		path := s.cfg.LogPath(id)
		if path == "" {
			warnings = append(warnings, logstream.UnknownTaskWarning(id, s.cfg.NodeID))
			continue
		}
		tmpl := &shoalv1.LogMessage{TaskId: id, NodeId: s.cfg.NodeID}
		if t := held[id]; t != nil {
			tmpl.ServiceId, tmpl.ServiceName, tmpl.Slot = t.GetServiceId(), t.GetServiceName(), t.GetSlot()
		}
		srcs = append(srcs, logSource{path: path, tmpl: tmpl})
	}
	s.log.Debug("task logs", "tasks", len(srcs), "follow", o.Follow, "unknown", len(warnings))
	// Headers go out at once, before any line: they tell the caller that
	// this node answers even when it has nothing to say yet (a follow of
	// quiet tasks), so a caller can tell a silent node from a slow log.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	if len(warnings) > 0 {
		if err := stream.Send(&shoalv1.LogsResponse{Warnings: warnings}); err != nil {
			return err
		}
	}
	if len(srcs) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	w := logstream.NewWarnings()
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
				w.Add(fmt.Sprintf("task %q on node %q: reading its log: %v", src.tmpl.TaskId, s.cfg.NodeID, err))
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
		merged = logstream.FanIn(ctx, ins)
	} else {
		merged = logstream.MergeByTime(ctx, ins)
	}
	if err := logstream.SendBatches(ctx, merged, w, stream.Send); err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
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
			return out, errdefs.InvalidArgumentf("options.tail: must not be negative (got %d)", o.GetTail())
		}
		out.Tail = int(min(o.GetTail(), int64(1<<31-1)))
	}
	if o.GetSince() != nil {
		if err := o.GetSince().CheckValid(); err != nil {
			return out, errdefs.InvalidArgumentf("options.since: %v", err)
		}
		out.Since = o.GetSince().AsTime()
	}
	return out, nil
}
