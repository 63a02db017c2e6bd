package controlapi

import (
	"context"
	"strings"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// ListTasks returns tasks filtered by service (id or name), node (id or
// name), desired-state, state and id prefix.
func (s *Server) ListTasks(ctx context.Context, req *shoalv1.ListTasksRequest) (*shoalv1.ListTasksResponse, error) {
	f := req.GetFilters()
	if err := checkFilters(f, "id", "service", "node", "desired-state", "state"); err != nil {
		return nil, err
	}
	r, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	var tasks []*shoalv1.Task
	switch {
	case f["service"] != "":
		svc, err := raftstore.ResolveRef[*shoalv1.Service](r, f["service"])
		if err != nil {
			return nil, err
		}
		tasks = raftstore.Find[*shoalv1.Task](r, raftstore.IndexServiceID, svc.GetMeta().GetId())
	case f["node"] != "":
		n, err := raftstore.ResolveRef[*shoalv1.Node](r, f["node"])
		if err != nil {
			return nil, err
		}
		tasks = raftstore.Find[*shoalv1.Task](r, raftstore.IndexNodeID, n.GetMeta().GetId())
	default:
		tasks = raftstore.List[*shoalv1.Task](r)
	}
	var nodeID string
	if f["node"] != "" && f["service"] != "" {
		n, err := raftstore.ResolveRef[*shoalv1.Node](r, f["node"])
		if err != nil {
			return nil, err
		}
		nodeID = n.GetMeta().GetId()
	}
	resp := &shoalv1.ListTasksResponse{}
	for _, t := range tasks {
		if nodeID != "" && t.GetNodeId() != nodeID {
			continue
		}
		if v := f["id"]; v != "" && !strings.HasPrefix(t.GetMeta().GetId(), v) {
			continue
		}
		if v := f["desired-state"]; v != "" && !enumIs(t.GetDesiredState().String(), v) {
			continue
		}
		if v := f["state"]; v != "" && !enumIs(t.GetStatus().GetState().String(), v) {
			continue
		}
		resp.Tasks = append(resp.Tasks, t)
	}
	if resp.Tasks, resp.NextPageToken, resp.Total, err = paginate(resp.Tasks, req.GetPage()); err != nil {
		return nil, err
	}
	if callerIsViewer(ctx) {
		for i, t := range resp.Tasks {
			resp.Tasks[i] = viewTask(true, t)
		}
	}
	return resp, nil
}

// GetTask resolves a task by id or unique id prefix.
func (s *Server) GetTask(ctx context.Context, req *shoalv1.GetTaskRequest) (*shoalv1.GetTaskResponse, error) {
	r, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	t, err := raftstore.ResolveRef[*shoalv1.Task](r, req.GetRef())
	if err != nil {
		return nil, err
	}
	return &shoalv1.GetTaskResponse{Task: viewTask(callerIsViewer(ctx), t)}, nil
}
