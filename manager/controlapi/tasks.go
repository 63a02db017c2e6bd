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
	rng, err := taskRange(r, f)
	if err != nil {
		return nil, err
	}
	resp := &shoalv1.ListTasksResponse{}
	if resp.Tasks, resp.NextPageToken, resp.Total, err = listPage(r, req.GetPage(), f, rng); err != nil {
		return nil, err
	}
	if callerIsViewer(ctx) {
		for i, t := range resp.Tasks {
			resp.Tasks[i] = viewTask(true, t)
		}
	}
	return resp, nil
}

// taskRange picks the narrowest index for a task list's filters: the
// service's tasks, else the node's, else one status state, else one desired
// state, else an id prefix. keep checks every filter, whichever index is
// picked.
func taskRange(r raftstore.Reader, f map[string]string) (listRange[*shoalv1.Task], error) {
	var serviceID, nodeID string
	if v := f["service"]; v != "" {
		svc, err := raftstore.ResolveRef[*shoalv1.Service](r, v)
		if err != nil {
			return listRange[*shoalv1.Task]{}, err
		}
		serviceID = svc.GetMeta().GetId()
	}
	if v := f["node"]; v != "" {
		n, err := raftstore.ResolveRef[*shoalv1.Node](r, v)
		if err != nil {
			return listRange[*shoalv1.Task]{}, err
		}
		nodeID = n.GetMeta().GetId()
	}
	idPrefix, desired, state := f["id"], f["desired-state"], f["state"]
	rng := listRange[*shoalv1.Task]{index: raftstore.IndexID, value: idPrefix}
	switch {
	case serviceID != "":
		rng.index, rng.value = raftstore.IndexServiceID, serviceID
	case nodeID != "":
		rng.index, rng.value = raftstore.IndexNodeID, nodeID
	case state != "" && oneTaskState(state) == shoalv1.TaskState_TASK_STATE_PENDING.String():
		// The state index holds PENDING tasks only (raftstore.IndexState);
		// any other state is found by its filter over the id range.
		rng.index, rng.value = raftstore.IndexState, oneTaskState(state)
	}
	// The state filters are matched against every TaskState once here, not
	// per task: keep runs for every task a walk visits (a whole table's
	// worth when the filters match nothing), and enumIs allocates.
	desiredIn, stateIn := taskStates(desired), taskStates(state)
	rng.keep = func(t *shoalv1.Task) bool {
		return (serviceID == "" || t.GetServiceId() == serviceID) &&
			(nodeID == "" || t.GetNodeId() == nodeID) &&
			strings.HasPrefix(t.GetMeta().GetId(), idPrefix) &&
			(desired == "" || desiredIn[t.GetDesiredState()]) &&
			(state == "" || stateIn[t.GetStatus().GetState()])
	}
	return rng, nil
}

// taskStates is the set of TaskStates a state filter value matches
// (enumIs).
func taskStates(v string) map[shoalv1.TaskState]bool {
	in := map[shoalv1.TaskState]bool{}
	if v == "" {
		return in
	}
	for n, name := range shoalv1.TaskState_name {
		if enumIs(name, v) {
			in[shoalv1.TaskState(n)] = true
		}
	}
	return in
}

// oneTaskState is the one TaskState name a state filter value matches
// (enumIs), or "" when it matches none or several: then no state index
// range holds exactly the matching tasks.
func oneTaskState(v string) string {
	found := ""
	for _, name := range shoalv1.TaskState_name {
		if enumIs(name, v) {
			if found != "" {
				return ""
			}
			found = name
		}
	}
	return found
}

// GetTask resolves a task by id or unique id prefix.
func (s *Server) GetTask(ctx context.Context, req *shoalv1.GetTaskRequest) (*shoalv1.GetTaskResponse, error) {
	r, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	t, err := raftstore.ResolveTask(r, req.GetRef())
	if err != nil {
		return nil, err
	}
	return &shoalv1.GetTaskResponse{Task: viewTask(callerIsViewer(ctx), t)}, nil
}
