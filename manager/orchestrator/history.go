package orchestrator

import (
	"slices"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
	"github.com/shoal-dev/shoal/raftstore"
)

// histRule is what one pass needs to reap ended tasks: the cluster's
// task_history_limit and the nodes (for Reapable). It travels with the
// pass's budget; a nil rule (the exported rule functions) means the
// default limit and no node known, so no ORPHANED task is reaped.
type histRule struct {
	limit int
	nodes map[string]*shoalv1.Node
}

// histRuleOf reads the pass's history rule from the store.
func histRuleOf(r raftstore.Reader, nodes []*shoalv1.Node) *histRule {
	h := &histRule{limit: HistoryLimit, nodes: nodeStates(nodes)}
	if c, ok := raftstore.ClusterOf(r); ok && c.GetSettings().GetTaskHistoryLimit() > 0 {
		h.limit = int(c.GetSettings().GetTaskHistoryLimit())
	}
	return h
}

func (h *histRule) keep() int {
	if h == nil || h.limit <= 0 {
		return HistoryLimit
	}
	return h.limit
}

func (h *histRule) reapable(t *shoalv1.Task) bool {
	var nodes map[string]*shoalv1.Node
	if h != nil {
		nodes = h.nodes
	}
	return Reapable(t, nodes)
}

// Reapable says whether an ended task beyond its slot's history may be
// deleted from the store without pulling anything from under a node (the
// rule is in the package documentation, "History"): an end reported by
// its agent, or one no agent ever held, may go; an ORPHANED task only once
// its node is removed from the cluster or READY again. nodes are by id; a
// nil map knows no node, so it keeps every ORPHANED task.
func Reapable(t *shoalv1.Task, nodes map[string]*shoalv1.Node) bool {
	if !isTerminal(t) {
		return false
	}
	if t.GetStatus().GetState() != stateOrphaned {
		return true
	}
	if nodes == nil {
		return false
	}
	n, ok := nodes[t.GetNodeId()]
	return !ok || n.GetStatus().GetState() == shoalv1.NodeState_NODE_STATE_READY
}

// reapHistory returns clones of the ended tasks of one slot (or node) to
// delete: all but the keep() newest by the time they ended, except tasks
// in protect (a job's completions of its current run) and those Reapable
// refuses. The newest are counted among the kept whether or not they are
// reapable, so a slot never keeps more than the limit plus what must wait.
func (h *histRule) reapHistory(tasks []*shoalv1.Task, protect func(*shoalv1.Task) bool) []*shoalv1.Task {
	var ended []*shoalv1.Task
	for _, t := range tasks {
		if isTerminal(t) {
			ended = append(ended, t)
		}
	}
	limit := h.keep()
	if len(ended) <= limit {
		return nil
	}
	slices.SortFunc(ended, compareEnded)
	var out []*shoalv1.Task
	for _, t := range ended[limit:] {
		if (protect == nil || !protect(t)) && h.reapable(t) {
			out = append(out, cloneTask(t))
		}
	}
	return out
}
