package scheduler

import (
	"cmp"
	"container/heap"
	"fmt"
	"slices"
	"strconv"
	"strings"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// Assignment places a pending task on a node.
type Assignment struct {
	TaskID, NodeID string
}

// Failure says why a pending task could not be placed.
type Failure struct {
	TaskID, Reason string
}

// cause is why a node cannot take a task. The order of the constants is the
// order in which causes are checked and listed in a Failure's reason.
type cause uint8

const (
	fits cause = iota
	causeNotReady
	causePaused
	causeDrained
	causeConstraints
	causeMaxReplicas
	causeMemory
	causeCPU
	numCauses
)

var causeText = [numCauses]string{
	causeNotReady:    "not ready",
	causePaused:      "paused",
	causeDrained:     "drained",
	causeConstraints: "constraints not satisfied",
	causeMaxReplicas: "max replicas per node reached",
	causeMemory:      "insufficient memory",
	causeCPU:         "insufficient cpu",
}

// nodeInfo is a node and its accounting during one Schedule call.
type nodeInfo struct {
	node *shoalv1.Node
	id   string
	// static is the part of eligibility that does not depend on the task:
	// readiness and availability (fits, causeNotReady, causePaused or
	// causeDrained).
	static cause
	// capCPU and capMem are the node's capacity; 0 means unknown (unlimited).
	capCPU, capMem   int64
	usedCPU, usedMem int64
	// tasks counts every task on the node, existing and assigned in the
	// batch (the current service's count is state.svcCount).
	tasks int
}

// placement is what a group of pending tasks asks of a node.
type placement struct {
	constraints []Constraint
	parseErr    error
	cpu, mem    int64
	maxPerNode  int64
}

// state is one Schedule call's working set.
type state struct {
	nodes []nodeInfo // sorted by id
	byID  map[string]int
	// bySvc lists, per service id, the node index of each existing task.
	bySvc map[string][]int
	// svcCount is the current service's task count per node index; it is
	// filled when a service starts and reset when it ends.
	svcCount []int
}

// Schedule places pending tasks. nodes are the cluster's nodes; existing
// are the tasks already on nodes (ASSIGNED up to, not including, COMPLETE;
// others are ignored), which count towards resources and spread; pending
// are the tasks to place (tasks with node_id set may only go to that node).
// Results come in pending's sorted order: by service id, slot, task id. See
// the package documentation for the rules.
func Schedule(nodes []*shoalv1.Node, existing []*shoalv1.Task, pending []*shoalv1.Task) ([]Assignment, []Failure) {
	s := newState(nodes, existing)

	order := make([]*shoalv1.Task, 0, len(pending))
	for _, t := range pending {
		if t != nil {
			order = append(order, t)
		}
	}
	slices.SortFunc(order, func(a, b *shoalv1.Task) int {
		return cmp.Or(
			cmp.Compare(a.GetServiceId(), b.GetServiceId()),
			cmp.Compare(a.GetSlot(), b.GetSlot()),
			cmp.Compare(a.GetMeta().GetId(), b.GetMeta().GetId()),
		)
	})

	// results[i] is the node index order[i] went to, or -1 with reasons[i].
	results := make([]int, len(order))
	for i := range results {
		results[i] = -1
	}
	reasons := make([]string, len(order))
	for start := 0; start < len(order); {
		end := start + 1
		for end < len(order) && order[end].GetServiceId() == order[start].GetServiceId() {
			end++
		}
		s.scheduleService(order[start:end], results[start:end], reasons[start:end])
		start = end
	}

	var assigned []Assignment
	var failed []Failure
	for i, t := range order {
		if results[i] >= 0 {
			assigned = append(assigned, Assignment{TaskID: t.GetMeta().GetId(), NodeID: s.nodes[results[i]].id})
		} else {
			failed = append(failed, Failure{TaskID: t.GetMeta().GetId(), Reason: reasons[i]})
		}
	}
	return assigned, failed
}

func newState(nodes []*shoalv1.Node, existing []*shoalv1.Task) *state {
	s := &state{byID: make(map[string]int, len(nodes)), bySvc: map[string][]int{}}
	sorted := make([]*shoalv1.Node, 0, len(nodes))
	for _, n := range nodes {
		if n != nil {
			sorted = append(sorted, n)
		}
	}
	slices.SortStableFunc(sorted, func(a, b *shoalv1.Node) int {
		return cmp.Compare(a.GetMeta().GetId(), b.GetMeta().GetId())
	})
	s.nodes = make([]nodeInfo, 0, len(sorted))
	for _, n := range sorted {
		id := n.GetMeta().GetId()
		if _, dup := s.byID[id]; dup {
			continue
		}
		s.byID[id] = len(s.nodes)
		res := n.GetDescription().GetResources()
		s.nodes = append(s.nodes, nodeInfo{
			node: n, id: id, static: staticCause(n),
			capCPU: res.GetNanoCpus(), capMem: res.GetMemoryBytes(),
		})
	}
	s.svcCount = make([]int, len(s.nodes))
	for _, t := range existing {
		st := t.GetStatus().GetState()
		if st < shoalv1.TaskState_TASK_STATE_ASSIGNED || st >= shoalv1.TaskState_TASK_STATE_COMPLETE {
			continue
		}
		i, ok := s.byID[t.GetNodeId()]
		if !ok {
			continue
		}
		r := t.GetSpec().GetResources().GetReservations()
		n := &s.nodes[i]
		n.tasks++
		n.usedCPU += r.GetNanoCpus()
		n.usedMem += r.GetMemoryBytes()
		s.bySvc[t.GetServiceId()] = append(s.bySvc[t.GetServiceId()], i)
	}
	return s
}

// staticCause checks readiness and availability.
func staticCause(n *shoalv1.Node) cause {
	if n.GetStatus().GetState() != shoalv1.NodeState_NODE_STATE_READY {
		return causeNotReady
	}
	switch n.GetSpec().GetAvailability() {
	case shoalv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE:
		return fits
	case shoalv1.NodeAvailability_NODE_AVAILABILITY_PAUSE:
		return causePaused
	}
	return causeDrained
}

// scheduleService places the pending tasks of one service (sorted by slot,
// id) and writes each one's node index (or -1 and a reason) into results.
func (s *state) scheduleService(tasks []*shoalv1.Task, results []int, reasons []string) {
	svc := tasks[0].GetServiceId()
	for _, i := range s.bySvc[svc] {
		s.svcCount[i]++
	}
	defer func() {
		for _, i := range s.bySvc[svc] {
			s.svcCount[i] = 0
		}
	}()

	// Group by placement, in order of first appearance: usually a service's
	// pending tasks share one spec, but during an update old and new may
	// ask for different things.
	type group struct {
		p       placement
		members []int // indexes into tasks
	}
	var groups []*group
	byKey := make(map[string]*group, 1)
	var last *group
	var lastTask *shoalv1.Task
	for i, t := range tasks {
		g := last
		if g == nil || !samePlacement(t, lastTask) {
			key := placementKey(t)
			if g = byKey[key]; g == nil {
				g = &group{p: placementOf(t)}
				byKey[key] = g
				groups = append(groups, g)
			}
		}
		g.members = append(g.members, i)
		last, lastTask = g, t
	}
	for _, g := range groups {
		s.scheduleGroup(&g.p, tasks, g.members, results, reasons)
	}
}

// samePlacement is the fast path of placementKey equality: consecutive
// tasks of a service nearly always ask the same.
func samePlacement(a, b *shoalv1.Task) bool {
	pa, pb := a.GetSpec().GetPlacement(), b.GetSpec().GetPlacement()
	ra, rb := a.GetSpec().GetResources().GetReservations(), b.GetSpec().GetResources().GetReservations()
	return ra.GetNanoCpus() == rb.GetNanoCpus() && ra.GetMemoryBytes() == rb.GetMemoryBytes() &&
		pa.GetMaxReplicasPerNode() == pb.GetMaxReplicasPerNode() &&
		slices.Equal(pa.GetConstraints(), pb.GetConstraints())
}

// placementKey identifies what a task asks of a node, so that tasks asking
// the same are evaluated together.
func placementKey(t *shoalv1.Task) string {
	spec := t.GetSpec()
	r := spec.GetResources().GetReservations()
	var b strings.Builder
	b.WriteString(strconv.FormatInt(r.GetNanoCpus(), 10))
	b.WriteByte('/')
	b.WriteString(strconv.FormatInt(r.GetMemoryBytes(), 10))
	b.WriteByte('/')
	b.WriteString(strconv.FormatInt(spec.GetPlacement().GetMaxReplicasPerNode(), 10))
	for _, c := range spec.GetPlacement().GetConstraints() {
		b.WriteByte(0)
		b.WriteString(c)
	}
	return b.String()
}

func placementOf(t *shoalv1.Task) placement {
	spec := t.GetSpec()
	cs, err := ParseConstraints(spec.GetPlacement().GetConstraints())
	r := spec.GetResources().GetReservations()
	return placement{
		constraints: cs, parseErr: err,
		cpu: r.GetNanoCpus(), mem: r.GetMemoryBytes(),
		maxPerNode: spec.GetPlacement().GetMaxReplicasPerNode(),
	}
}

// scheduleGroup places tasks that ask the same of a node.
func (s *state) scheduleGroup(p *placement, tasks []*shoalv1.Task, members []int, results []int, reasons []string) {
	if p.parseErr != nil {
		for _, m := range members {
			results[m], reasons[m] = -1, "invalid placement: "+p.parseErr.Error()
		}
		return
	}
	// Tasks bound to a node (global services) first: they have no choice,
	// and placing them before the heap is built keeps its keys current.
	var free []int
	for _, m := range members {
		nodeID := tasks[m].GetNodeId()
		if nodeID == "" {
			free = append(free, m)
			continue
		}
		i, ok := s.byID[nodeID]
		if !ok {
			results[m], reasons[m] = -1, fmt.Sprintf("node %q not found", nodeID)
			continue
		}
		c := s.nodes[i].static
		if c == fits && !matchAll(p.constraints, s.nodes[i].node) {
			c = causeConstraints
		}
		if c == fits {
			c = s.dynamicCause(i, p)
		}
		if c != fits {
			results[m], reasons[m] = -1, fmt.Sprintf("node %q is not suitable: %s", nodeID, causeText[c])
			continue
		}
		s.assign(i, p)
		results[m] = i
	}
	if len(free) == 0 {
		return
	}

	var counts [numCauses]int
	h := &nodeHeap{s: s, items: make([]int, 0, len(s.nodes))}
	for i := range s.nodes {
		c := s.nodes[i].static
		if c == fits && !matchAll(p.constraints, s.nodes[i].node) {
			c = causeConstraints
		}
		if c != fits {
			counts[c]++
			continue
		}
		h.items = append(h.items, i)
	}
	heap.Init(h)

	reason := "" // computed once the heap runs dry
	for _, m := range free {
		placed := false
		for !placed && len(h.items) > 0 {
			i := h.items[0]
			if c := s.dynamicCause(i, p); c != fits {
				// Usage only grows within a batch and every task of the
				// group asks the same, so the node is out for good.
				counts[c]++
				heap.Pop(h)
				continue
			}
			s.assign(i, p)
			heap.Fix(h, 0)
			results[m], placed = i, true
		}
		if !placed {
			if reason == "" {
				reason = failureReason(len(s.nodes), counts)
			}
			results[m], reasons[m] = -1, reason
		}
	}
}

// dynamicCause checks what changes as tasks are placed: max replicas per
// node and reservations.
func (s *state) dynamicCause(i int, p *placement) cause {
	n := &s.nodes[i]
	if p.maxPerNode > 0 && int64(s.svcCount[i]) >= p.maxPerNode {
		return causeMaxReplicas
	}
	if p.mem > 0 && n.capMem > 0 && p.mem > n.capMem-n.usedMem {
		return causeMemory
	}
	if p.cpu > 0 && n.capCPU > 0 && p.cpu > n.capCPU-n.usedCPU {
		return causeCPU
	}
	return fits
}

func (s *state) assign(i int, p *placement) {
	n := &s.nodes[i]
	n.tasks++
	n.usedCPU += p.cpu
	n.usedMem += p.mem
	s.svcCount[i]++
}

// failureReason counts the nodes by cause:
// "no suitable node (5 nodes: 2 not ready, 1 drained, 2 insufficient memory)".
func failureReason(total int, counts [numCauses]int) string {
	var b strings.Builder
	b.WriteString("no suitable node (")
	b.WriteString(strconv.Itoa(total))
	if total == 1 {
		b.WriteString(" node")
	} else {
		b.WriteString(" nodes")
	}
	sep := ": "
	for c := causeNotReady; c < numCauses; c++ {
		if counts[c] == 0 {
			continue
		}
		b.WriteString(sep)
		b.WriteString(strconv.Itoa(counts[c]))
		b.WriteByte(' ')
		b.WriteString(causeText[c])
		sep = ", "
	}
	b.WriteByte(')')
	return b.String()
}

// nodeHeap orders candidate node indexes by (tasks of the service, tasks
// overall, node id); nodes are sorted by id, so the index breaks ties.
type nodeHeap struct {
	s     *state
	items []int
}

func (h *nodeHeap) Len() int { return len(h.items) }

func (h *nodeHeap) Less(a, b int) bool {
	i, j := h.items[a], h.items[b]
	if ci, cj := h.s.svcCount[i], h.s.svcCount[j]; ci != cj {
		return ci < cj
	}
	if ti, tj := h.s.nodes[i].tasks, h.s.nodes[j].tasks; ti != tj {
		return ti < tj
	}
	return i < j
}

func (h *nodeHeap) Swap(a, b int) { h.items[a], h.items[b] = h.items[b], h.items[a] }

func (h *nodeHeap) Push(x any) { h.items = append(h.items, x.(int)) }

func (h *nodeHeap) Pop() any {
	last := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return last
}
