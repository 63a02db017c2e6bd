package agentapi

import (
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/errdefs"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// DefaultStatsInterval is how often Stats samples: CPU % is the use over
// one interval, as in docker stats.
const DefaultStatsInterval = time.Second

// Stats reports the resource use of the node's running tasks (those named,
// or all): one sample after one interval, or one per interval while the
// caller listens (stream). CPU % needs two readings, so the first reply
// comes one interval after the call. Tasks this node does not hold or that
// are not running are named in warnings, never fail the call.
func (s *Server) Stats(req *shoalv1.AgentStatsRequest, stream grpc.ServerStreamingServer[shoalv1.StatsResponse]) error {
	if s.cfg.Usage == nil {
		return errdefs.Unavailablef("node %s: task stats are not available on this node (no container runtime)", s.cfg.NodeID)
	}
	for i, id := range req.GetTaskIds() {
		if !validTaskID(id) {
			return errdefs.InvalidArgumentf("task_ids[%d]: %q is not a task id", i, id)
		}
	}
	interval := s.cfg.StatsInterval
	if interval <= 0 {
		interval = DefaultStatsInterval
	}
	// Headers at once: the manager relaying the call knows the node
	// answers without waiting for the first interval.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	ctx := stream.Context()
	prev := map[string]sample{}
	s.sampleStats(req.GetTaskIds(), prev, nil)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cur := map[string]sample{}
		resp := &shoalv1.StatsResponse{}
		resp.Warnings = s.sampleStats(req.GetTaskIds(), cur, func(st *shoalv1.TaskStats, now sample) {
			if p, ok := prev[st.GetTaskId()]; ok {
				st.CpuPercent = CPUPercent(p, now)
			}
			resp.Stats = append(resp.Stats, st)
		})
		if err := stream.Send(resp); err != nil {
			return err
		}
		if !req.GetStream() {
			return nil
		}
		prev = cur
	}
}

// sample is one reading of a task's CPU counter.
type sample struct {
	cpuNS uint64
	at    time.Time
}

// CPUPercent is the CPU use between two readings in percent of one CPU
// (200: two CPUs busy). A counter that went back (a restarted task under
// the same id) reads as 0.
func CPUPercent(prev, cur sample) float64 {
	dt := cur.at.Sub(prev.at)
	if dt <= 0 || cur.cpuNS < prev.cpuNS {
		return 0
	}
	return float64(cur.cpuNS-prev.cpuNS) / float64(dt.Nanoseconds()) * 100
}

// sampleStats reads every requested task once, records its CPU reading in
// into and hands each task's stats to emit (nil: only record). It returns
// the warnings for tasks that could not be read.
func (s *Server) sampleStats(ids []string, into map[string]sample, emit func(*shoalv1.TaskStats, sample)) []string {
	held := map[string]*shoalv1.Task{}
	var order []string
	for _, t := range s.cfg.Tasks() {
		held[t.GetMeta().GetId()] = t
		order = append(order, t.GetMeta().GetId())
	}
	all := len(ids) == 0
	if all {
		ids = order
		slices.Sort(ids)
	}
	var warnings []string
	for _, id := range ids {
		t, ok := held[id]
		if !ok {
			warnings = append(warnings, fmt.Sprintf("task %s is not on node %s", id, s.cfg.NodeID))
			continue
		}
		if t.GetStatus().GetState() != shoalv1.TaskState_TASK_STATE_RUNNING {
			if !all {
				warnings = append(warnings, fmt.Sprintf("task %s is not running (%s)", id, t.GetStatus().GetState()))
			}
			continue
		}
		u, err := s.cfg.Usage(id)
		now := time.Now()
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("task %s: %v", id, err))
			continue
		}
		smp := sample{cpuNS: u.GetCpuUsageNs(), at: now}
		into[id] = smp
		if emit != nil {
			emit(&shoalv1.TaskStats{TaskId: id, ServiceId: t.GetServiceId(), ServiceName: t.GetServiceName(), Slot: t.GetSlot(),
				NodeId: s.cfg.NodeID, Time: timestamppb.New(now), CpuUsageNs: u.GetCpuUsageNs(),
				MemoryBytes: u.GetMemoryBytes(), MemoryLimitBytes: u.GetMemoryLimitBytes(), Pids: u.GetPids(), PidsLimit: u.GetPidsLimit(),
				NetRxBytes: u.GetNetRxBytes(), NetTxBytes: u.GetNetTxBytes()}, smp)
		}
	}
	return warnings
}
